package lab

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// runLockDir holds one file per lab run, locked by the process that runs
// the lab for as long as it lives: the kernel drops the lock when that
// process dies, however it dies. Other runs on the machine (two labs at once
// are fine) tell a live lab from a leftover by it.
const runLockDir = "/run/nodelab"

type runLock struct{ f *os.File }

func lockRun(id string) (*runLock, error) {
	if err := os.MkdirAll(runLockDir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(runLockDir, id+".lock"), os.O_CREATE|os.O_RDWR|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, err
	}
	return &runLock{f: f}, nil
}

func (r *runLock) release() {
	if r == nil || r.f == nil {
		return
	}
	os.Remove(r.f.Name())
	r.f.Close()
	r.f = nil
}

// runID is the run a lab name (nl-<id>-node) belongs to.
func runID(prefix, name string) string {
	id, _, _ := strings.Cut(strings.TrimPrefix(name, prefix), "-")
	return id
}

// runAlive reports whether the lab run id is still running: its lock is
// held, or, for a run that has no lock file (labs of older builds), a
// process still runs in one of its namespaces.
func runAlive(prefix, id string) bool {
	f, err := os.OpenFile(filepath.Join(runLockDir, id+".lock"), os.O_RDWR|unix.O_CLOEXEC, 0)
	if err == nil {
		defer f.Close()
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			unix.Flock(int(f.Fd()), unix.LOCK_UN)
		}
		return errors.Is(err, unix.EWOULDBLOCK)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	entries, _ := os.ReadDir(netnsRun)
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), prefix+id+"-") {
			continue
		}
		if out, err := run(ctx, "ip", "netns", "pids", e.Name()); err == nil && strings.TrimSpace(out) != "" {
			return true
		}
	}
	return false
}

// liveRuns returns the runs among the names (nl-<id>-…) that are alive.
func liveRuns(prefix string, names []string) map[string]bool {
	live := map[string]bool{}
	seen := map[string]bool{}
	for _, n := range names {
		id := runID(prefix, n)
		if id == "" || seen[id] {
			continue
		}
		seen[id] = true
		if runAlive(prefix, id) {
			live[id] = true
		}
	}
	return live
}
