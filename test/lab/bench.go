package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Benchmark support: what `make bench` (cmd/nodebench) needs from the lab
// beyond what the demo and the tests use.

const (
	// BenchZone is a wildcard zone the upstream CoreDNS pods answer once
	// AddBenchZone ran: every A query below it gets BenchAddr, so unique
	// names can fill a cache or measure the miss path.
	BenchZone = "bench.cluster.local"
	BenchAddr = "198.18.6.1"
	// benchLink holds the local IPs for servers that cannot set up the node
	// themselves (stock CoreDNS, the ceiling responder).
	benchLink    = "nlbench0"
	benchComment = "nodelocaldns bench"
)

// AddBenchZone restarts the upstream CoreDNS pods with the wildcard zone
// BenchZone in front of their catch-all NXDOMAIN server and waits until
// both answer a name in it through kube-dns-upstream.
func (l *Lab) AddBenchZone(ctx context.Context) error {
	wildcard := fmt.Sprintf(`.:%d {
    bind 127.0.0.1
    template IN A %[2]s {
        answer "{{ .Name }} %[3]d IN A %[4]s"
    }
    template ANY ANY %[2]s {
        authority %[5]s
    }
`, nxdomainPort, BenchZone, ClusterTTL, BenchAddr, soa)
	for _, ns := range []string{l.DNS1, l.DNS2} {
		cf := filepath.Join(l.Dir, ns+".Corefile")
		b, err := os.ReadFile(cf)
		if err != nil {
			return err
		}
		head := fmt.Sprintf(".:%d {\n    bind 127.0.0.1\n", nxdomainPort)
		if !strings.Contains(string(b), head) {
			return fmt.Errorf("%s has no catch-all server %q to put the bench zone in", cf, strings.TrimSpace(head))
		}
		if err := os.WriteFile(cf, []byte(strings.Replace(string(b), head, wildcard, 1)), 0o644); err != nil {
			return err
		}
		for _, p := range l.procs {
			if p.Name == "coredns-"+ns {
				if err := p.Stop(5 * time.Second); err != nil {
					return err
				}
			}
		}
		if _, err := l.Start(ctx, ns, "coredns-"+ns, nil, l.Bin("coredns"), "-conf", cf); err != nil {
			return err
		}
	}
	for _, server := range []string{DNS1IP, DNS2IP} {
		if err := waitFor(ctx, 10*time.Second, func() error {
			r, err := Query(l.Node, server, "probe."+BenchZone, "A", false)
			if err != nil {
				return err
			}
			if len(r.Answer) == 0 {
				return fmt.Errorf("no answer for probe.%s", BenchZone)
			}
			return nil
		}); err != nil {
			return fmt.Errorf("upstream %s with the bench zone: %w (logs in %s)", server, err, l.Dir)
		}
	}
	return nil
}

// UpstreamProcs are the processes of the no-cache path: the upstream
// CoreDNS pods and their delaying proxies.
func (l *Lab) UpstreamProcs() []*Proc {
	var ps []*Proc
	for _, p := range l.procs {
		if !p.Exited() && (strings.HasSuffix(p.Name, l.DNS1) || strings.HasSuffix(p.Name, l.DNS2)) {
			ps = append(ps, p)
		}
	}
	return ps
}

// NodeCorefile is Corefile.example as the lab's node cache runs it.
func (l *Lab) NodeCorefile() (string, error) {
	b, err := os.ReadFile(filepath.Join(l.cfg.Root, "Corefile.example"))
	if err != nil {
		return "", err
	}
	s := string(b)
	if !strings.Contains(s, "statedir") {
		s = strings.Replace(s, "nodelocal {", "nodelocal {\n        statedir "+filepath.Join(l.Dir, "run"), 1)
	}
	return s, nil
}

// HoldLocalIPs does for a server without the nodelocal directive what the
// directive does: a port-less bridge holding the cache's local IPs, and the
// NOTRACK and ACCEPT rules for DNS on them (so pods' queries to the kube-dns
// IP skip kube-proxy's DNAT). The returned function removes both.
func (l *Lab) HoldLocalIPs(ctx context.Context) (func() error, error) {
	ips := []string{LocalIP, KubeDNSIP}
	var rules [][]string
	for _, ip := range ips {
		for _, proto := range []string{"udp", "tcp"} {
			rules = append(rules,
				[]string{"-t", "raw", "PREROUTING", "-p", proto, "-d", ip, "--dport", "53", "-j", "NOTRACK"},
				[]string{"-t", "raw", "OUTPUT", "-p", proto, "-s", ip, "--sport", "53", "-j", "NOTRACK"},
				[]string{"-t", "raw", "OUTPUT", "-p", proto, "-d", ip, "--dport", "53", "-j", "NOTRACK"},
				[]string{"-t", "filter", "INPUT", "-p", proto, "-d", ip, "--dport", "53", "-j", "ACCEPT"},
				[]string{"-t", "filter", "OUTPUT", "-p", proto, "-s", ip, "--sport", "53", "-j", "ACCEPT"},
			)
		}
	}
	var added [][]string
	undo := func() error {
		var errs []error
		for i := len(added) - 1; i >= 0; i-- {
			r := added[i]
			args := append([]string{"-w", "5", r[0], r[1], "-D", r[2]}, r[3:]...)
			args = append(args, "-m", "comment", "--comment", benchComment)
			if _, err := nsRun(context.Background(), l.Node, "iptables", args...); err != nil {
				errs = append(errs, err)
			}
		}
		added = nil
		if _, err := nsRun(context.Background(), l.Node, "ip", "link", "del", benchLink); err != nil {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	}
	steps := [][]string{{"ip", "link", "add", benchLink, "type", "bridge"}}
	for _, ip := range ips {
		steps = append(steps, []string{"ip", "addr", "add", ip + "/32", "dev", benchLink})
	}
	steps = append(steps, []string{"ip", "link", "set", benchLink, "up"})
	for _, s := range steps {
		if _, err := nsRun(ctx, l.Node, s[0], s[1:]...); err != nil {
			return nil, errors.Join(err, undo())
		}
	}
	for _, r := range rules {
		args := append([]string{"-w", "5", r[0], r[1], "-I", r[2]}, r[3:]...)
		args = append(args, "-m", "comment", "--comment", benchComment)
		if _, err := nsRun(ctx, l.Node, "iptables", args...); err != nil {
			return nil, errors.Join(err, undo())
		}
		added = append(added, r)
	}
	return undo, nil
}

// StartServer starts a DNS server in the node namespace (pinned like the
// lab's other servers) and measures the time from starting the process to
// its first answer for Services[0] on the local IP, asked from the node
// every 2 ms for at most limit. The caller stops the process.
func (l *Lab) StartServer(ctx context.Context, name string, env []string, limit time.Duration, bin string, args ...string) (*Proc, time.Duration, error) {
	p, err := l.start(l.Node, name, env, bin, args...)
	if err != nil {
		return nil, 0, err
	}
	t0 := time.Now()
	deadline := t0.Add(limit)
	for {
		if p.Exited() {
			return nil, 0, fmt.Errorf("%s exited before answering; its log:\n%s", name, p.Tail(15))
		}
		r, err := quickQuery(l.Node, LocalIP, Services[0].Name)
		if err == nil && r {
			return p, time.Since(t0), nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			p.Stop(10 * time.Second)
			return nil, 0, fmt.Errorf("%s did not answer on %s within %v (last: %v); its log:\n%s", name, LocalIP, limit, err, p.Tail(15))
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// quickQuery asks for name's A record with a 50 ms timeout and reports
// whether an answer came back.
func quickQuery(ns, server, name string) (bool, error) {
	r, err := exchange(ns, server, name, dns.TypeA, false, 50*time.Millisecond)
	if err != nil {
		return false, err
	}
	return len(r.Answer) > 0, nil
}
