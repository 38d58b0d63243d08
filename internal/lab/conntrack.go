package lab

import (
	"context"
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
