package lab

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nodelocaldns/nodelocaldns/internal/dnsload"
)

// LoadSpec is one testdns run.
type LoadSpec struct {
	Pod         string        // namespace
	Resolver    string        // "system" (glibc) or "go"
	Concurrency int           // -c
	Duration    time.Duration // -d
	Limit       time.Duration // -l; 0 for 5 s
	Hosts       []string      // -host
	CPU         string        // taskset CPU list, "" for none
	Extra       []string      // more flags
	JSON        string        // where testdns writes its -json summary; "" for a file in the lab's directory
}

// RunLoad runs bin/testdns inside the pod and returns its summary.
func (l *Lab) RunLoad(ctx context.Context, s LoadSpec) (*dnsload.Summary, error) {
	out := s.JSON
	if out == "" {
		out = filepath.Join(l.Dir, fmt.Sprintf("testdns-%d.json", time.Now().UnixNano()))
	}
	args := []string{"netns", "exec", s.Pod}
	if s.CPU != "" {
		args = append(args, "taskset", "-c", s.CPU)
	}
	limit := s.Limit
	if limit == 0 {
		limit = 5 * time.Second
	}
	args = append(args, l.Bin("testdns"), "-resolver", s.Resolver, "-c", strconv.Itoa(s.Concurrency),
		"-d", s.Duration.String(), "-l", strconv.FormatInt(limit.Milliseconds(), 10), "-q", "-json", out)
	for _, h := range s.Hosts {
		args = append(args, "-host", h)
	}
	args = append(args, s.Extra...)
	// Bounded: the run's duration plus testdns's own 10 s lookup timeout.
	ctx, cancel := context.WithTimeout(ctx, s.Duration+30*time.Second)
	defer cancel()
	if _, err := run(ctx, "ip", args...); err != nil {
		return nil, err
	}
	return dnsload.ReadFile(out)
}

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

// UpstreamQueries sums the DNS requests the upstream CoreDNS pods counted
// (coredns_dns_requests_total of the cluster.local server), fetched inside
// each DNS pod.
func (l *Lab) UpstreamQueries() (float64, error) {
	var total float64
	for _, ns := range []string{l.DNS1, l.DNS2} {
		body, err := HTTPGet(ns, upstreamMetric, "/metrics")
		if err != nil {
			return 0, err
		}
		total += SumMetric(body, "coredns_dns_requests_total", fmt.Sprintf(`server="dns://127.0.0.1:%d"`, upstreamPort))
	}
	return total, nil
}

// SumMetric adds up the samples of a prometheus metric whose label set
// contains every one of the given label matchers (written `name="value"`).
func SumMetric(body, name string, labels ...string) float64 {
	var sum float64
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, lb := range labels {
			if !strings.Contains(line, lb) {
				ok = false
			}
		}
		if !ok {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum += v
		}
	}
	return sum
}

// UDPRcvbufErrors sums UdpRcvbufErrors (datagrams dropped because a
// socket's receive buffer was full) of the given namespaces.
func (l *Lab) UDPRcvbufErrors(ctx context.Context, nss ...string) (uint64, error) {
	var total uint64
	for _, ns := range nss {
		out, err := nsRun(ctx, ns, "cat", "/proc/net/snmp")
		if err != nil {
			return 0, err
		}
		var names []string
		for _, line := range strings.Split(out, "\n") {
			if !strings.HasPrefix(line, "Udp: ") {
				continue
			}
			f := strings.Fields(line)[1:]
			if names == nil {
				names = f
				continue
			}
			for i, n := range names {
				if n == "RcvbufErrors" && i < len(f) {
					v, _ := strconv.ParseUint(f[i], 10, 64)
					total += v
				}
			}
			break
		}
	}
	return total, nil
}
