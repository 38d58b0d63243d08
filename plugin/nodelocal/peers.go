package nodelocal

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/nodelocaldns/nodelocaldns/plugin/nodelocal/netif"
	"github.com/nodelocaldns/nodelocaldns/plugin/nodelocal/rules"
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

	departed []*hostSpec // needs of dead instances found by others, until Departed
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
	// Checked at setup too; again now that it exists.
	if err := checkStateDir(dir); err != nil {
		return nil, err
	}
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	ns := netnsID()
	path := filepath.Join(dir, fmt.Sprintf("instance-%s-%d-%s.lock", ns, os.Getpid(), hex.EncodeToString(b)))
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDWR|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o644)
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

// needsRecord is an instance's needs as its file in the state directory
// holds them, beside its lock file.
type needsRecord struct {
	Link  netif.Spec `json:"link"`
	Rules rules.Spec `json:"rules"`
}

// needsPath is the file beside a lock file that holds the instance's needs.
func needsPath(lockPath string) string { return strings.TrimSuffix(lockPath, ".lock") + ".json" }

// Publish records what this instance needs on the node, for its peers. The
// file is replaced whole (written aside, then renamed), so a peer never
// reads half of it.
func (p *presence) Publish(hs hostSpec) error {
	data, err := json.Marshal(needsRecord{Link: hs.link, Rules: hs.rules})
	if err != nil {
		return err
	}
	path := needsPath(p.path)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("record needs in %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("record needs in %s: %w", path, err)
	}
	return nil
}

// Others returns what each other live instance on the node (in the same
// network namespace) needs; nil for one whose needs are unknown (none
// published yet, or an older version). Files of dead ones (their lock is
// free), whatever their namespace, are removed on the way.
func (p *presence) Others() ([]*hostSpec, error) { return p.others(p.path) }

// nodeLockName is the file in the state directory whose flock the
// instances on the node take to change it.
const nodeLockName = "node.lock"

// Lock takes the node lock. It waits for a peer that holds it (one change
// of the node, seconds at most; a dead holder's lock is released by the
// kernel).
func (p *presence) Lock() (func(), error) {
	path := filepath.Join(p.dir, nodeLockName)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o644)
	if err != nil {
		return nil, fmt.Errorf("node lock %s: %w", path, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("node lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}

// Departed returns the needs of the dead instances Others found since the
// last call.
func (p *presence) Departed() []*hostSpec {
	d := p.departed
	p.departed = nil
	return d
}

// Leave removes this process's files and releases its lock, then returns
// what the instances still live need. Leaving before looking means that of
// two instances leaving at once, at least one sees the other gone: the
// last one out always knows it is.
func (p *presence) Leave() ([]*hostSpec, error) {
	os.Remove(needsPath(p.path))
	os.Remove(p.path)
	p.f.Close()
	return p.others("")
}

func (p *presence) others(self string) ([]*hostSpec, error) {
	entries, err := os.ReadDir(p.dir)
	if err != nil {
		return nil, fmt.Errorf("state directory %s: %w", p.dir, err)
	}
	var alive []*hostSpec
	for _, e := range entries {
		name := e.Name()
		path := filepath.Join(p.dir, name)
		if path == self || !strings.HasPrefix(name, "instance-") || !strings.HasSuffix(name, ".lock") {
			continue
		}
		f, err := os.OpenFile(path, os.O_RDWR|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
		if err != nil {
			continue // removed meanwhile
		}
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		switch {
		case errors.Is(err, unix.EWOULDBLOCK):
			if strings.HasPrefix(name, "instance-"+p.ns+"-") {
				alive = append(alive, readNeeds(needsPath(path)))
			}
		case err == nil:
			// A dead instance's files. What it needed may still be on
			// the node: the live ones remove what none of them needs.
			if strings.HasPrefix(name, "instance-"+p.ns+"-") {
				if hs := readNeeds(needsPath(path)); hs != nil {
					p.departed = append(p.departed, hs)
				}
			}
			os.Remove(needsPath(path))
			os.Remove(path)
		}
		f.Close()
	}
	return alive, nil
}

// readNeeds reads an instance's needs; nil when they cannot be read.
func readNeeds(path string) *hostSpec {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var r needsRecord
	if err := json.Unmarshal(data, &r); err != nil {
		return nil
	}
	return &hostSpec{link: r.Link, rules: r.Rules}
}
