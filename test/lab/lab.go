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

	mu      sync.Mutex
	caches  []*Cache // running cache instances, oldest first
	started int      // cache instances started, to name their files
	made    []string // namespaces made, for Close
	etc     []string // /etc/netns dirs made
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

func (l *Lab) up(ctx context.Context) error {
	for _, ns := range []string{l.Node, l.Pod1, l.Pod2, l.DNS1, l.DNS2, l.Net} {
		if _, err := run(ctx, "ip", "netns", "add", ns); err != nil {
			return err
		}
		l.made = append(l.made, ns)
		if _, err := nsRun(ctx, ns, "ip", "link", "set", "lo", "up"); err != nil {
			return err
		}
	}
	// /etc/netns/<ns>/resolv.conf is what `ip netns exec` mounts over
	// /etc/resolv.conf: the pods' kubelet-written resolv.conf, the node's own.
	const search = "search default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
	for ns, content := range map[string]string{
		l.Pod1: "nameserver " + KubeDNSIP + "\n" + search,
		l.Pod2: "nameserver " + LocalIP + "\n" + search,
		l.Node: "nameserver " + OutsideIP + "\n",
		l.DNS1: "nameserver " + OutsideIP + "\n",
		l.DNS2: "nameserver " + OutsideIP + "\n",
		l.Net:  "nameserver " + OutsideIP + "\n",
	} {
		d := filepath.Join(netnsEtc, ns)
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		l.etc = append(l.etc, d)
		if err := os.WriteFile(filepath.Join(d, "resolv.conf"), []byte(content), 0o644); err != nil {
			return err
		}
	}

	node := func(args ...string) error { _, err := nsRun(ctx, l.Node, args[0], args[1:]...); return err }
	steps := [][]string{
		{"sysctl", "-qw", "net.ipv4.ip_forward=1"},
		{"sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0"},
		{"ip", "link", "add", "cbr0", "type", "bridge"},
		{"ip", "addr", "add", BridgeIP + "/24", "dev", "cbr0"},
		{"ip", "link", "set", "cbr0", "up"},
	}
	for _, s := range steps {
		if err := node(s...); err != nil {
			return err
		}
	}
	// Pods: a veth each, routed by the node; no default route.
	for _, p := range []struct{ ns, dev, nodeIP, podIP string }{
		{l.Pod1, "vpod1", "198.18.1.1", "198.18.1.2"},
		{l.Pod2, "vpod2", "198.18.3.1", "198.18.3.2"},
	} {
		for _, s := range [][]string{
			{"ip", "link", "add", p.dev, "type", "veth", "peer", "name", "eth0", "netns", p.ns},
			{"ip", "addr", "add", p.nodeIP + "/24", "dev", p.dev},
			{"ip", "link", "set", p.dev, "up"},
		} {
			if err := node(s...); err != nil {
				return err
			}
		}
		for _, s := range [][]string{
			{"ip", "addr", "add", p.podIP + "/24", "dev", "eth0"},
			{"ip", "link", "set", "eth0", "up"},
			{"ip", "route", "add", "198.18.0.0/15", "via", p.nodeIP},
			{"ip", "route", "add", LocalIP + "/32", "via", p.nodeIP},
		} {
			if _, err := nsRun(ctx, p.ns, s[0], s[1:]...); err != nil {
				return err
			}
		}
	}
	// DNS pods and the outside resolver on the bridge.
	for i, p := range []struct{ ns, ip, extra string }{
		{l.DNS1, DNS1IP, StubIP}, {l.DNS2, DNS2IP, ""}, {l.Net, OutsideIP, ""},
	} {
		dev := fmt.Sprintf("vdns%d", i+1)
		for _, s := range [][]string{
			{"ip", "link", "add", dev, "type", "veth", "peer", "name", "eth0", "netns", p.ns},
			{"ip", "link", "set", dev, "master", "cbr0"},
			{"ip", "link", "set", dev, "up"},
		} {
			if err := node(s...); err != nil {
				return err
			}
		}
		cmds := [][]string{
			{"ip", "addr", "add", p.ip + "/24", "dev", "eth0"},
			{"ip", "link", "set", "eth0", "up"},
			{"ip", "route", "add", "198.18.0.0/15", "via", BridgeIP},
		}
		if p.extra != "" {
			cmds = append(cmds, []string{"ip", "addr", "add", p.extra + "/24", "dev", "eth0"})
		}
		for _, s := range cmds {
			if _, err := nsRun(ctx, p.ns, s[0], s[1:]...); err != nil {
				return err
			}
		}
	}
	// Node-originated traffic to a ClusterIP needs a route before nat OUTPUT
	// rewrites it (a real node uses its default route).
	if err := node("ip", "route", "add", ServiceCIDR, "dev", "cbr0", "src", BridgeIP); err != nil {
		return err
	}
	if err := l.SyncKubeProxy(ctx); err != nil {
		return err
	}
	if err := l.startUpstreams(ctx); err != nil {
		return err
	}
	return l.waitUpstreams(ctx)
}

// SyncKubeProxy writes kube-proxy's rules as kube-proxy's sync loop does:
// iptables-restore --noflush of its own chains (the default iptables, nft
// backend), and the jumps from the built-in chains when missing.
func (l *Lab) SyncKubeProxy(ctx context.Context) error {
	if _, err := nsRunInput(ctx, l.Node, kubeProxyRules(), "iptables-restore", "-w", "5", "--noflush"); err != nil {
		return fmt.Errorf("kube-proxy rules: %w", err)
	}
	for _, j := range kubeProxyJumps {
		check := append([]string{"-w", "5", j[0], j[1], "-C"}, j[2:]...)
		if _, err := nsRun(ctx, l.Node, "iptables", check...); err == nil {
			continue
		}
		add := append([]string{"-w", "5", j[0], j[1], "-I"}, j[2:]...)
		if _, err := nsRun(ctx, l.Node, "iptables", add...); err != nil {
			return fmt.Errorf("kube-proxy jump: %w", err)
		}
	}
	return nil
}

func (l *Lab) startUpstreams(ctx context.Context) error {
	hosts := filepath.Join(l.Dir, "cluster.hosts")
	if err := os.WriteFile(hosts, []byte(hostsFile()), 0o644); err != nil {
		return err
	}
	for _, u := range []struct {
		ns, ip string
		stub   bool
	}{{l.DNS1, DNS1IP, true}, {l.DNS2, DNS2IP, false}} {
		cf := filepath.Join(l.Dir, u.ns+".Corefile")
		if err := os.WriteFile(cf, []byte(upstreamCorefile(hosts, u.stub)), 0o644); err != nil {
			return err
		}
		if _, err := l.Start(ctx, u.ns, "coredns-"+u.ns, nil, l.Bin("coredns"), "-conf", cf); err != nil {
			return err
		}
		if _, err := l.Start(ctx, u.ns, "dnsdelay-"+u.ns, nil, l.Bin("dnsdelay"),
			"-listen", u.ip+":53", "-upstream", fmt.Sprintf("127.0.0.1:%d", upstreamPort),
			"-delay", l.cfg.Delay.String(), "-max-inflight", fmt.Sprint(l.cfg.Inflight), "-qps", fmt.Sprint(l.cfg.QPS)); err != nil {
			return err
		}
	}
	cf := filepath.Join(l.Dir, l.Net+".Corefile")
	if err := os.WriteFile(cf, []byte(outsideCorefile()), 0o644); err != nil {
		return err
	}
	_, err := l.Start(ctx, l.Net, "coredns-"+l.Net, nil, l.Bin("coredns"), "-conf", cf)
	return err
}

// waitUpstreams waits until each upstream answers through the node: both
// DNS pods directly, through the kube-dns Service, and the outside resolver.
func (l *Lab) waitUpstreams(ctx context.Context) error {
	checks := []struct{ server, name string }{
		{DNS1IP, Services[0].Name}, {DNS2IP, Services[0].Name}, {KubeDNSUpIP, Services[0].Name}, {OutsideIP, OutsideName}, {StubIP, StubName},
	}
	for _, c := range checks {
		if err := waitFor(ctx, 10*time.Second, func() error {
			_, err := Query(l.Node, c.server, c.name, "A", false)
			return err
		}); err != nil {
			return fmt.Errorf("upstream %s does not answer %s: %w (logs in %s)", c.server, c.name, err, l.Dir)
		}
	}
	return nil
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

// StopUpstreams stops the upstream DNS pods' servers (proxies and CoreDNS),
// as if every CoreDNS pod were gone.
func (l *Lab) StopUpstreams() error {
	var errs []error
	for _, p := range l.procs {
		if strings.HasSuffix(p.Name, l.DNS1) || strings.HasSuffix(p.Name, l.DNS2) {
			errs = append(errs, p.Stop(5*time.Second))
		}
	}
	return errors.Join(errs...)
}

// NodeRun runs a command in the node namespace.
func (l *Lab) NodeRun(ctx context.Context, name string, args ...string) (string, error) {
	return nsRun(ctx, l.Node, name, args...)
}

// NodeRunInput runs a command with stdin in the node namespace.
func (l *Lab) NodeRunInput(ctx context.Context, input, name string, args ...string) (string, error) {
	return nsRunInput(ctx, l.Node, input, name, args...)
}

// PodRun runs a command in a pod's namespace (its resolv.conf applies).
func PodRun(ctx context.Context, pod, name string, args ...string) (string, error) {
	return nsRun(ctx, pod, name, args...)
}
