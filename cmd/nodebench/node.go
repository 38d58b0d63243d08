package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/nodelocaldns/nodelocaldns/internal/lab"
	"github.com/nodelocaldns/nodelocaldns/plugin/nodelocal/rules"
)

// What the benchmark does to the lab's node beyond what the demo and the
// tests do: a wildcard zone upstream, the local IPs and rules held for
// servers without the nodelocal directive, and a timed start.

const (
	// benchZone is the wildcard zone (lab.AddWildcardZone) the upstream
	// CoreDNS pods answer: every A query below it gets benchAddr, so unique
	// names can fill a cache or measure the miss path.
	benchZone = "bench.cluster.local"
	benchAddr = "198.18.6.1"
	// benchLink holds the local IPs for servers that cannot set up the node
	// themselves (stock CoreDNS, the ceiling responder).
	benchLink = "nlbench0"
)

// heldRules are the NOTRACK and ACCEPT rules the nodelocal directive
// installs for DNS on the local IPs, rendered by its own rules package:
// the same rules, in the same chains, for a server without the directive.
// No health port: the bench peers' health checks are not what it measures.
//
// The coordinator's single place to switch when the rules package exports
// its new renderer (and a removal to match releaseInput).
func heldRules() []rules.Table {
	spec := rules.Spec{
		Mode:     rules.ModeIptables,
		LocalIPs: []netip.Addr{netip.MustParseAddr(lab.LocalIP), netip.MustParseAddr(lab.KubeDNSIP)},
		DNSPorts: []int{53},
	}
	return rules.Render(spec, false)
}

// releaseInput is the iptables-restore --noflush input that takes tables'
// chains and their jumps out again: a declared chain is flushed, then the
// jump goes and the empty chain is deleted.
func releaseInput(tables []rules.Table) string {
	var b strings.Builder
	for _, t := range tables {
		fmt.Fprintf(&b, "*%s\n", t.Name)
		for _, c := range t.Chains {
			fmt.Fprintf(&b, ":%s - [0:0]\n", c.Name)
		}
		for _, c := range t.Chains {
			b.WriteString("-D" + strings.TrimPrefix(c.Jump(), "-A") + "\n")
		}
		for _, c := range t.Chains {
			b.WriteString("-X " + c.Name + "\n")
		}
		b.WriteString("COMMIT\n")
	}
	return b.String()
}

// holdLocalIPs does for a server without the nodelocal directive what the
// directive does: a port-less bridge holding the cache's local IPs, and the
// NOTRACK and ACCEPT rules for DNS on them (so pods' queries to the kube-dns
// IP skip kube-proxy's DNAT). The returned function removes both.
func holdLocalIPs(ctx context.Context, l *lab.Lab) (func() error, error) {
	tables := heldRules()
	var link, held bool
	undo := func() error {
		var errs []error
		if held {
			if _, err := l.NodeRunInput(context.Background(), releaseInput(tables), "iptables-restore", "-w", "5", "--noflush"); err != nil {
				errs = append(errs, fmt.Errorf("remove the held rules: %w", err))
			}
			held = false
		}
		if link {
			if _, err := l.NodeRun(context.Background(), "ip", "link", "del", benchLink); err != nil {
				errs = append(errs, err)
			}
			link = false
		}
		return errors.Join(errs...)
	}
	if _, err := l.NodeRun(ctx, "ip", "link", "add", benchLink, "type", "bridge"); err != nil {
		return nil, err
	}
	link = true
	steps := [][]string{}
	for _, ip := range []string{lab.LocalIP, lab.KubeDNSIP} {
		steps = append(steps, []string{"ip", "addr", "add", ip + "/32", "dev", benchLink})
	}
	steps = append(steps, []string{"ip", "link", "set", benchLink, "up"})
	for _, s := range steps {
		if _, err := l.NodeRun(ctx, s[0], s[1:]...); err != nil {
			return nil, errors.Join(err, undo())
		}
	}
	if _, err := l.NodeRunInput(ctx, rules.RestoreInput(tables), "iptables-restore", "-w", "5", "--noflush"); err != nil {
		return nil, errors.Join(fmt.Errorf("hold the rules: %w", err), undo())
	}
	held = true
	return undo, nil
}

// startServer starts a DNS server in the node namespace (pinned like the
// lab's other servers) and measures the time from starting the process to
// its first answer for Services[0] on the local IP, asked from the node
// every 2 ms for at most limit. The caller stops the process (the lab does
// when it closes).
func startServer(ctx context.Context, l *lab.Lab, name string, env []string, limit time.Duration, bin string, args ...string) (*lab.Proc, time.Duration, error) {
	p, err := l.Start(ctx, l.Node, name, env, bin, args...)
	if err != nil {
		return nil, 0, err
	}
	return firstAnswer(ctx, l, p, time.Now(), limit)
}

// startServerOn is startServer on the CPUs cpus (a taskset list) instead
// of the server CPU.
func startServerOn(ctx context.Context, l *lab.Lab, name, cpus string, env []string, limit time.Duration, bin string, args ...string) (*lab.Proc, time.Duration, error) {
	p, err := l.StartOn(ctx, l.Node, name, cpus, env, bin, args...)
	if err != nil {
		return nil, 0, err
	}
	return firstAnswer(ctx, l, p, time.Now(), limit)
}

// firstAnswer waits for p's first answer and returns the time since t0;
// it stops p when none comes within limit.
func firstAnswer(ctx context.Context, l *lab.Lab, p *lab.Proc, t0 time.Time, limit time.Duration) (*lab.Proc, time.Duration, error) {
	deadline := t0.Add(limit)
	for {
		if p.Exited() {
			return nil, 0, fmt.Errorf("%s exited before answering; its log:\n%s", p.Name, p.Tail(15))
		}
		r, err := lab.Exchange(l.Node, lab.LocalIP, lab.Services[0].Name, dns.TypeA, false, 50*time.Millisecond)
		if err == nil && len(r.Answer) > 0 {
			return p, time.Since(t0), nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			p.Stop(10 * time.Second)
			return nil, 0, fmt.Errorf("%s did not answer on %s within %v (last: %v); its log:\n%s", p.Name, lab.LocalIP, limit, err, p.Tail(15))
		}
		time.Sleep(2 * time.Millisecond)
	}
}
