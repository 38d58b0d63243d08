package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// netnsRun is where `ip netns add` keeps its namespace handles.
const netnsRun = "/var/run/netns"

// netnsEtc is where `ip netns exec` finds the per-namespace files it
// bind-mounts over /etc (resolv.conf).
const netnsEtc = "/etc/netns"

// Leftovers lists namespaces and /etc/netns directories whose names start
// with prefix and whose run has ended: what an earlier run left behind.
// Labs still running (another run on this machine) are not leftovers.
func Leftovers(prefix string) []string {
	left, _ := labNamespaces(prefix)
	return left
}

// Running lists the namespaces of labs that are still running: another test,
// demo or benchmark on this machine.
func Running(prefix string) []string {
	_, running := labNamespaces(prefix)
	return running
}

// labNamespaces splits the namespaces and /etc/netns directories whose names
// start with prefix into those of ended runs and those of running ones.
func labNamespaces(prefix string) (left, running []string) {
	var found, names []string
	for _, dir := range []string{netnsRun, netnsEtc} {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), prefix) {
				found = append(found, filepath.Join(dir, e.Name()))
				names = append(names, e.Name())
			}
		}
	}
	live := liveRuns(prefix, names)
	for i, f := range found {
		if live[runID(prefix, names[i])] {
			running = append(running, f)
		} else {
			left = append(left, f)
		}
	}
	return left, running
}

// deadLeftovers keeps the paths of runs no process runs in any more: a lab
// of another test running at the same time is not in the way.
func deadLeftovers(paths []string) []string {
	live := map[string]bool{} // run prefix "nl-<id>-"
	entries, _ := os.ReadDir(netnsRun)
	for _, e := range entries {
		run, ok := runOf(e.Name())
		if !ok || live[run] {
			continue
		}
		if out, err := exec.Command("ip", "netns", "pids", e.Name()).Output(); err == nil && strings.TrimSpace(string(out)) != "" {
			live[run] = true
		}
	}
	var dead []string
	for _, p := range paths {
		if run, ok := runOf(filepath.Base(p)); !ok || !live[run] {
			dead = append(dead, p)
		}
	}
	return dead
}

// runOf returns the "nl-<id>-" part of a lab's namespace name.
func runOf(name string) (string, bool) {
	rest, ok := strings.CutPrefix(name, Prefix)
	if !ok {
		return "", false
	}
	id, _, ok := strings.Cut(rest, "-")
	return Prefix + id + "-", ok
}

// runIDs returns the runs the paths (…/nl-<id>-…) belong to, each once.
func runIDs(prefix string, paths []string) []string {
	var ids []string
	for _, p := range paths {
		if id := runID(prefix, filepath.Base(p)); id != "" && !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	return ids
}

// Clean removes every namespace and /etc/netns directory whose name starts
// with prefix and whose run has ended, first stopping the processes still
// running in them (by PID, as `ip netns pids` lists them): SIGTERM, then
// SIGKILL after grace. Labs still running are left alone.
func Clean(prefix string, grace time.Duration, logf func(string, ...any)) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	left, running := labNamespaces(prefix)
	for _, id := range runIDs(prefix, running) {
		logf("leaving lab %s alone: it is still running", id)
	}
	var nss []string
	for _, p := range left {
		if filepath.Dir(p) == netnsRun {
			nss = append(nss, filepath.Base(p))
		}
	}
	var pids []int
	for _, ns := range nss {
		out, _ := run(ctx, "ip", "netns", "pids", ns)
		for _, f := range strings.Fields(out) {
			var pid int
			if _, err := fmt.Sscan(f, &pid); err == nil && pid > 1 && pid != os.Getpid() {
				pids = append(pids, pid)
			}
		}
	}
	for _, pid := range pids {
		logf("stopping leftover process %d", pid)
		syscall.Kill(pid, syscall.SIGTERM)
	}
	deadline := time.Now().Add(grace)
	for _, pid := range pids {
		for syscall.Kill(pid, 0) == nil && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if syscall.Kill(pid, 0) == nil {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	var errs []string
	for _, ns := range nss {
		logf("removing network namespace %s", ns)
		if _, err := run(ctx, "ip", "netns", "del", ns); err != nil {
			errs = append(errs, err.Error())
		}
	}
	for _, p := range left {
		if filepath.Dir(p) == netnsEtc {
			logf("removing %s", p)
			if err := os.RemoveAll(p); err != nil {
				errs = append(errs, err.Error())
			}
		}
	}
	for _, id := range runIDs(prefix, left) {
		os.Remove(filepath.Join(runLockDir, id+".lock"))
	}
	if len(errs) > 0 {
		return fmt.Errorf("clean %s*: %s", prefix, strings.Join(errs, "; "))
	}
	return nil
}
