// Package lab builds a Kubernetes node in network namespaces on one machine,
// to show and test the node DNS cache end to end:
//
//	pod1 (198.18.1.2, nameserver 198.18.0.10, ndots:5)  ─veth─┐
//	pod2 (198.18.3.2, nameserver 169.254.20.10)         ─veth─┤ node
//	                      kube-proxy iptables rules, the cache  │ (ip_forward=1)
//	dns1 (198.18.2.2 + stub 198.18.2.53) ─┐                     │
//	dns2 (198.18.2.3)                     ├─ bridge 198.18.2.1 ─┘
//	net  (198.18.2.100, "the internet")  ─┘
//
// The DNS pods run bin/coredns on loopback behind cmd/dnsdelay, which adds
// the cross-node delay and the capacity limit this kernel cannot add with
// netem. kube-dns (198.18.0.10) and kube-dns-upstream (198.18.0.11) are
// kube-proxy-style DNAT Services to both. The node cache is bin/coredns with
// the project's Corefile, started inside the node namespace the way the
// DaemonSet starts it.
//
// Every name starts with nl-<runid>-; a lab refuses to start while anything
// named nl-* is left over, and Close removes all it made.
//
// It is the library of cmd/nodelab (the demo, rollout cases) and
// cmd/nodebench (make bench), and of its own end-to-end tests, by concern:
//
//   - topology: lab.go (Up, Close), topology.go (addresses, namespaces,
//     links, routes), kubeproxy.go (the Services' DNAT rules),
//     upstreams.go (the DNS pods and their zones), leftovers.go and
//     runlock.go (telling a running lab from what a dead one left);
//   - processes: exec.go (commands in a namespace), proc.go (servers the
//     lab starts), cache.go (node cache instances), flags.go (the cache
//     started with node-cache's flags, as the official DaemonSet runs it);
//   - workloads and what they observe: query.go (single queries),
//     load.go (testdns runs), probe.go (a probe stream), rollout.go
//     (restarts and upgrades under load), conntrack.go and metrics.go.
//
// labtest starts a lab for a test.
package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// Prefix starts the name of every namespace and /etc/netns directory a lab
// makes; leftovers are recognised by it.
const Prefix = "nl-"

// Config says where the binaries are and how the upstreams behave.
type Config struct {
	Root      string        // repository root: bin/, Corefile.example
	Delay     time.Duration // added to every upstream answer (cross-node hop)
	Inflight  int           // queries each upstream works on at once
	QPS       float64       // per-upstream query cap, 0 for none
	ServerCPU string        // taskset CPU list for servers ("" for no pinning)
	Logf      func(format string, args ...any)
}

// DefaultConfig is what the demo uses: a 1.5 ms hop, 64 queries in flight
// per upstream pod, no qps cap.
func DefaultConfig(root string) Config {
	return Config{Root: root, Delay: 1500 * time.Microsecond, Inflight: 64, Logf: func(string, ...any) {}}
}

// Lab is one running node lab.
type Lab struct {
	cfg   Config
	ID    string
	Dir   string // run directory: Corefiles, logs
	Node  string // namespace names
	Pod1  string // nameserver 198.18.0.10 (kube-proxy iptables mode)
	Pod2  string // nameserver 169.254.20.10 (IPVS mode)
	DNS1  string
	DNS2  string
	Net   string
	procs []*Proc  // started processes, stopped in reverse order by Close
	lock  *runLock // held while the lab lives: tells other runs it is no leftover

	mu        sync.Mutex
	kubeProxy KubeProxyMode // "" for KubeProxyIptables, the mode Up writes
	caches    []*Cache      // running cache instances, oldest first
	started   int           // cache instances started, to name their files
	made      []string      // namespaces made, for Close
	etc       []string      // /etc/netns dirs made
}

// Bin returns the path of a binary under the repository's bin/.
func (l *Lab) Bin(name string) string { return filepath.Join(l.cfg.Root, "bin", name) }

// Up builds the lab: namespaces, links, routes, kube-proxy rules, upstream
// DNS pods. It refuses to start while leftovers of an earlier run exist. On
// failure it removes what it made.
func Up(ctx context.Context, cfg Config) (*Lab, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the node lab needs root: it makes network namespaces, veth links and iptables rules (inside those namespaces only)")
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	if left := deadLeftovers(Leftovers(Prefix)); len(left) > 0 {
		return nil, fmt.Errorf("leftovers of an earlier lab run are in the way: %s; remove them with `nodelab down` (it stops their processes and deletes them)", strings.Join(left, ", "))
	}
	for _, b := range []string{"coredns", "dnsdelay"} {
		if _, err := os.Stat(filepath.Join(cfg.Root, "bin", b)); err != nil {
			return nil, fmt.Errorf("bin/%s missing: run `make build lab-bins` first: %w", b, err)
		}
	}
	var rnd [3]byte
	rand.Read(rnd[:])
	id := hex.EncodeToString(rnd[:])
	p := Prefix + id + "-"
	l := &Lab{cfg: cfg, ID: id, Node: p + "node", Pod1: p + "pod1", Pod2: p + "pod2", DNS1: p + "dns1", DNS2: p + "dns2", Net: p + "net"}
	lock, err := lockRun(id)
	if err != nil {
		return nil, fmt.Errorf("lab run lock: %w", err)
	}
	l.lock = lock
	dir, err := os.MkdirTemp("", "nodelab-"+id+"-")
	if err != nil {
		l.lock.release()
		return nil, err
	}
	l.Dir = dir
	if err := l.up(ctx); err != nil {
		return nil, errors.Join(err, l.Close())
	}
	return l, nil
}

// Close stops every process the lab started (the cache first), by PID, and
// removes the namespaces and /etc/netns directories it made. Safe to call
// more than once.
func (l *Lab) Close() error {
	var errs []error
	l.mu.Lock()
	caches := slices.Clone(l.caches)
	l.mu.Unlock()
	for i := len(caches) - 1; i >= 0; i-- {
		if err := caches[i].Stop(); err != nil {
			errs = append(errs, err)
		}
	}
	for i := len(l.procs) - 1; i >= 0; i-- {
		if err := l.procs[i].Stop(5 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	l.procs = nil
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := len(l.made) - 1; i >= 0; i-- {
		if _, err := run(ctx, "ip", "netns", "del", l.made[i]); err != nil {
			errs = append(errs, err)
		}
	}
	l.made = nil
	for _, d := range l.etc {
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, err)
		}
	}
	l.etc = nil
	l.lock.release()
	return errors.Join(errs...)
}

func waitFor(ctx context.Context, limit time.Duration, try func() error) error {
	deadline := time.Now().Add(limit)
	for {
		err := try()
		if err == nil {
			return nil
		}
		if errors.Is(err, errExited) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
