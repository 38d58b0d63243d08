package lab

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

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
