package nodelocal

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestPresence: a live instance is seen, a dead one is not and its file goes.
func TestPresence(t *testing.T) {
	dir := t.TempDir()
	a, err := announce(dir)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := a.others(); err != nil || n != 0 {
		t.Fatalf("Alone: others = %d, %v", n, err)
	}

	// Another process holding a lock file, as a surge instance would.
	peer := filepath.Join(dir, "instance-1-peer.lock")
	cmd := exec.Command("flock", "-x", peer, "sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Skipf("Skipping: flock(1) not available: %v", err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := a.others()
		if err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("A live peer holding its lock is not seen")
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Killed: the kernel drops its lock; it no longer counts and its file is cleaned.
	cmd.Process.Kill()
	cmd.Wait()
	if n, err := a.others(); err != nil || n != 0 {
		t.Errorf("After the peer died: others = %d, %v", n, err)
	}
	if _, err := os.Stat(peer); !os.IsNotExist(err) {
		t.Errorf("Dead peer's file left: %v", err)
	}

	a.leave()
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("leave left %d files", len(entries))
	}
}
