package lab

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestClean leaves a dead run behind (its lock file held by nobody, a
// namespace with a process in it, its /etc/netns directory) beside a live one (its lock held): Clean stops
// the process and removes the dead run's namespace and directory, and
// leaves the live run alone. The prefix is the test's own, so no lab of
// another run on this machine is touched.
func TestClean(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("Skipping: needs root (makes network namespaces)")
	}
	const prefix = "nlcleantest-"
	newID := func() string {
		b := make([]byte, 3)
		rand.Read(b)
		return hex.EncodeToString(b)
	}
	gone, alive := newID(), newID()
	dead, live := prefix+gone+"-node", prefix+alive+"-node"
	// The dead run's lock file is there, held by nobody: its process died.
	deadLock := filepath.Join(runLockDir, gone+".lock")
	if err := os.MkdirAll(runLockDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(deadLock, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(deadLock) })
	for _, ns := range []string{dead, live} {
		if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
			t.Fatalf("Add netns %s: %v %s", ns, err, out)
		}
		if err := os.MkdirAll(filepath.Join(netnsEtc, ns), 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			exec.Command("ip", "netns", "del", ns).Run()
			os.RemoveAll(filepath.Join(netnsEtc, ns))
		})
	}
	lock, err := lockRun(alive)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.release()
	sleeper := exec.Command("ip", "netns", "exec", dead, "sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { sleeper.Wait(); close(exited) }()
	defer sleeper.Process.Kill()

	if left := Leftovers(prefix); len(left) != 2 {
		t.Errorf("Leftovers: %v, want the dead run's namespace and /etc/netns directory", left)
	}
	if err := Clean(prefix, 5*time.Second, t.Logf); err != nil {
		t.Fatalf("Clean: %v", err)
	}
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		t.Errorf("The process in the dead run's namespace still runs after Clean")
	}
	for _, p := range []string{filepath.Join(netnsRun, dead), filepath.Join(netnsEtc, dead), deadLock} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s is still there after Clean", p)
		}
	}
	for _, p := range []string{filepath.Join(netnsRun, live), filepath.Join(netnsEtc, live)} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("Clean removed %s of a live run: %v", p, err)
		}
	}
	if running := Running(prefix); len(running) != 2 {
		t.Errorf("Running after Clean: %v, want the live run's namespace and directory", running)
	}
}
