package lab

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// FlushConntrack empties the node namespace's conntrack table (the lab's
// own namespace; the host's table is a different one).
func (l *Lab) FlushConntrack(ctx context.Context) error {
	_, err := nsRun(ctx, l.Node, "conntrack", "-F")
	return err
}

// podIPs are the pods' addresses.
var podIPs = []string{"198.18.1.2", "198.18.3.2"}

// ForgetPodDNSFlows deletes the conntrack entries of the pods' DNS traffic
// in the node namespace, and only those: flushing the whole table would
// also cut the cache's TCP connections to kube-dns-upstream, whose DNAT
// lives in their entries.
func (l *Lab) ForgetPodDNSFlows(ctx context.Context) error {
	for _, src := range podIPs {
		for _, proto := range []string{"udp", "tcp"} {
			out, err := nsRun(ctx, l.Node, "conntrack", "-D", "-p", proto, "-s", src, "--dport", "53")
			if err != nil && !strings.Contains(out, " 0 flow entries") {
				return err
			}
		}
	}
	return nil
}

// PodDNSFlows counts the conntrack entries in the node namespace of DNS
// traffic (UDP and TCP, original destination port 53) from the pods.
func (l *Lab) PodDNSFlows(ctx context.Context) (int, error) {
	n := 0
	for _, src := range podIPs {
		for _, proto := range []string{"udp", "tcp"} {
			out, err := nsRun(ctx, l.Node, "conntrack", "-L", "-p", proto, "-s", src, "--dport", "53")
			if err != nil {
				return 0, err
			}
			for _, line := range strings.Split(out, "\n") {
				if strings.HasPrefix(line, proto) {
					n++
				}
			}
		}
	}
	return n, nil
}

// dnsCounters are the packet counters of the cache's UDP DNS rules: queries
// delivered to the cache (raw PREROUTING NOTRACK, which with fail-open
// counts only packets a cache socket takes, and raw OUTPUT NOTRACK to a
// local IP for the node's own, the lab's readiness queries among them) and
// replies sent from the local IPs' port 53 (raw OUTPUT NOTRACK).
type dnsCounters struct{ in, out uint64 }

// held is how many of the queries delivered since base got no reply.
func (c dnsCounters) held(base dnsCounters) uint64 {
	in, out := c.in-base.in, c.out-base.out
	if out >= in {
		return 0
	}
	return in - out
}

// cacheDNSCounters reads the cache rules' UDP counters on a node of mode m.
func (l *Lab) cacheDNSCounters(ctx context.Context, m NodeMode) (dnsCounters, error) {
	var c dnsCounters
	if m == NodeNftables {
		for _, chain := range []string{"raw-prerouting", "raw-output"} {
			out, err := nsRun(ctx, l.Node, "nft", "list", "chain", "inet", "nodelocaldns", chain)
			if err != nil {
				return c, err
			}
			for _, line := range strings.Split(out, "\n") {
				f := strings.Fields(line)
				i := slices.Index(f, "packets")
				if i < 0 || i+1 >= len(f) {
					continue
				}
				n, _ := strconv.ParseUint(f[i+1], 10, 64)
				switch {
				case strings.Contains(line, "udp dport 53"):
					c.in += n
				case chain == "raw-output" && strings.Contains(line, "saddr") && strings.Contains(line, "udp sport 53"):
					c.out += n
				}
			}
		}
		return c, nil
	}
	out, err := nsRun(ctx, l.Node, m.kubeProxy().iptablesCmd()+"-save", "-c", "-t", "raw")
	if err != nil {
		return c, err
	}
	for _, line := range strings.Split(out, "\n") {
		pk, rule, ok := strings.Cut(line, "] ")
		if !ok || !strings.HasPrefix(pk, "[") || !strings.Contains(rule, "-p udp") {
			continue
		}
		n, _ := strconv.ParseUint(strings.Split(strings.TrimPrefix(pk, "["), ":")[0], 10, 64)
		switch {
		case strings.Contains(rule, "--dport 53") && (strings.HasPrefix(rule, "-A NODELOCALDNS-PREROUTING ") || strings.HasPrefix(rule, "-A NODELOCALDNS-OUTPUT ")):
			c.in += n
		case strings.HasPrefix(rule, "-A NODELOCALDNS-OUTPUT ") && strings.Contains(rule, " -s ") && strings.Contains(rule, "--sport 53"):
			c.out += n
		}
	}
	return c, nil
}

// tcpOutRsts reads the node namespace's count of TCP resets sent (Tcp
// OutRsts in /proc/net/snmp): a killed process's connections, and those
// waiting in its listeners' accept queues, are reset by the kernel.
func (l *Lab) tcpOutRsts(ctx context.Context) (uint64, error) {
	out, err := nsRun(ctx, l.Node, "cat", "/proc/net/snmp")
	if err != nil {
		return 0, err
	}
	var names []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Tcp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		if i := slices.Index(names, "OutRsts"); i > 0 && i < len(f) {
			return strconv.ParseUint(f[i], 10, 64)
		}
	}
	return 0, fmt.Errorf("no Tcp OutRsts in /proc/net/snmp of %s", l.Node)
}
