package nodelocal

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// defaultStateDir is where instances on a node announce themselves; the
// DaemonSet mounts it from the host so a surge instance and the old one see
// each other.
const defaultStateDir = "/run/nodelocaldns"

// presence is this process's lock file in the state directory. The lock is
// held for the life of the process, so the kernel releases it when the
// process dies, however it dies: a crashed instance never looks alive.
type presence struct {
	dir  string
	ns   string // this instance's network namespace, part of every peer's file name
	path string
	f    *os.File
}

// netnsID names the network namespace of the calling thread. Peers are the
// instances in the same one: they share the interface and the rules. A
// second node cache in another namespace on the same host (a test, a lab
// node, a pod without hostNetwork) writes to the same directory but is not
// a peer and must not keep this one from tearing down.
func netnsID() string {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return "net0"
	}
	return fmt.Sprintf("net%d", st.Ino)
}

// announce creates and locks this process's file in dir. The name carries a
// random part: PIDs repeat across containers (each cache may be PID 1).
func announce(dir string) (*presence, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("state directory %s: %w", dir, err)
	}
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	ns := netnsID()
	path := filepath.Join(dir, fmt.Sprintf("instance-%s-%d-%s.lock", ns, os.Getpid(), hex.EncodeToString(b)))
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("state directory %s: %w", dir, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return &presence{dir: dir, ns: ns, path: path, f: f}, nil
}

// Others counts the other live instances on the node: in the same network
// namespace. Files of dead ones (their lock is free), whatever their
// namespace, are removed on the way.
func (p *presence) Others() (int, error) {
	entries, err := os.ReadDir(p.dir)
	if err != nil {
		return 0, fmt.Errorf("state directory %s: %w", p.dir, err)
	}
	alive := 0
	for _, e := range entries {
		name := e.Name()
		path := filepath.Join(p.dir, name)
		if path == p.path || !strings.HasPrefix(name, "instance-") || !strings.HasSuffix(name, ".lock") {
			continue
		}
		f, err := os.OpenFile(path, os.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			continue // removed meanwhile
		}
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		switch {
		case errors.Is(err, unix.EWOULDBLOCK):
			if strings.HasPrefix(name, "instance-"+p.ns+"-") {
				alive++
			}
		case err == nil:
			os.Remove(path) // a dead instance's file
		}
		f.Close()
	}
	return alive, nil
}

// Leave removes this process's file and releases its lock.
func (p *presence) Leave() {
	os.Remove(p.path)
	p.f.Close()
}
