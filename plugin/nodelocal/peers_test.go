package nodelocal

import (
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/nodelocaldns/nodelocaldns/plugin/nodelocal/netif"
	"github.com/nodelocaldns/nodelocaldns/plugin/nodelocal/rules"
)

// TestPresence: a live instance is seen, a dead one is not and its file goes.
func TestPresence(t *testing.T) {
	dir := t.TempDir()
	a, err := announce(dir)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := a.Others(); err != nil || len(n) != 0 {
		t.Fatalf("Alone: others = %d, %v", len(n), err)
	}

	// Another process holding a lock file, as a surge instance would: this
	// test binary, re-run as TestHelperPeer.
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperPeer$")
	cmd.Env = append(os.Environ(), "NODELOCAL_PEER_DIR="+dir)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	deadline := time.Now().Add(20 * time.Second) // a test binary under -race on a loaded machine starts slowly
	for {
		n, err := a.Others()
		if err != nil {
			t.Fatal(err)
		}
		if len(n) == 1 {
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
	if n, err := a.Others(); err != nil || len(n) != 0 {
		t.Errorf("After the peer died: others = %d, %v", len(n), err)
	}
	if files, _ := filepath.Glob(filepath.Join(dir, "instance-*.lock")); len(files) != 1 {
		t.Errorf("Dead peer's file left: %v", files)
	}

	// A live instance in another network namespace (another lab node, a
	// test) shares the directory but not the interface: not a peer.
	if os.Geteuid() != 0 {
		t.Log("Not root: the peer in another network namespace is not checked")
	} else {
		otherNamespacePeer(t, a, dir)
	}

	if peers, err := a.Leave(); err != nil || len(peers) != 0 {
		t.Errorf("Leave saw %d others (%v), want 0", len(peers), err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("leave left %d files", len(entries))
	}
}

func otherNamespacePeer(t *testing.T, a *presence, dir string) {
	t.Helper()
	other := exec.Command("unshare", "--net", os.Args[0], "-test.run=^TestHelperPeer$")
	other.Env = append(os.Environ(), "NODELOCAL_PEER_DIR="+dir)
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { other.Process.Kill(); other.Wait() }()
	deadline := time.Now().Add(20 * time.Second) // a test binary under -race on a loaded machine starts slowly
	for {
		files, _ := filepath.Glob(filepath.Join(dir, "instance-*.lock"))
		if len(files) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("The instance in another namespace did not announce itself: %v", files)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n, err := a.Others(); err != nil || len(n) != 0 {
		t.Errorf("With a live instance in another network namespace: others = %d, %v; want 0", len(n), err)
	}
	other.Process.Kill()
	other.Wait()
	if n, err := a.Others(); err != nil || len(n) != 0 {
		t.Errorf("After the other namespace's instance died: others = %d, %v", len(n), err)
	}
}

// TestHelperPeer is not a test: TestPresence runs it in a child process that
// announces itself and waits to be killed.
func TestHelperPeer(t *testing.T) {
	dir := os.Getenv("NODELOCAL_PEER_DIR")
	if dir == "" {
		t.Skip("Helper process for TestPresence")
	}
	if _, err := announce(dir); err != nil {
		t.Fatal(err)
	}
	time.Sleep(30 * time.Second)
}

// TestPresenceNeeds: a peer's published needs are read by the others while
// it lives; once it died without leaving (its lock dropped, its files
// still there), they come back once from Departed and its files go.
func TestPresenceNeeds(t *testing.T) {
	dir := t.TempDir()
	a, err := announce(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Leave()
	b, err := announce(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := hostSpec{link: netif.Spec{Name: "nodelocaldns", Addrs: []netip.Addr{netip.MustParseAddr("198.18.0.11")}}, rules: rules.Spec{Mode: rules.ModeIptables, DNSPorts: []int{53}}}
	if err := b.Publish(want); err != nil {
		t.Fatal(err)
	}
	peers, err := a.Others()
	if err != nil || len(peers) != 1 || peers[0] == nil || !sameSpec(*peers[0], want) {
		t.Fatalf("Others = %v, %v; want the peer's needs %+v", peers, err, want)
	}
	b.f.Close() // killed: the kernel drops the lock, nothing else runs
	if peers, err := a.Others(); err != nil || len(peers) != 0 {
		t.Errorf("After the peer died: others = %d, %v", len(peers), err)
	}
	gone := a.Departed()
	if len(gone) != 1 || !sameSpec(*gone[0], want) {
		t.Errorf("Departed = %v, want the dead peer's needs once", gone)
	}
	if again := a.Departed(); len(again) != 0 {
		t.Errorf("Departed again = %v, want nothing", again)
	}
	if files, _ := filepath.Glob(filepath.Join(dir, "instance-*")); len(files) != 1 {
		t.Errorf("Files left: %v, want only this instance's lock", files)
	}
}
