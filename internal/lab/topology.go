package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
)

// Addresses of the lab. Everything is in 198.18.0.0/15 (benchmarking range),
// except the cache's link-local 169.254.20.10 and the AAAA data in 2001:2::/48.
const (
	ServiceCIDR    = "198.18.0.0/24"
	KubeDNSIP      = "198.18.0.10" // Service kube-dns: what pods ask
	KubeDNSUpIP    = "198.18.0.11" // Service kube-dns-upstream: what the cache asks
	LocalIP        = "169.254.20.10"
	BridgeIP       = "198.18.2.1" // the node on the DNS pods' bridge
	DNS1IP         = "198.18.2.2"
	DNS2IP         = "198.18.2.3"
	StubIP         = "198.18.2.53"   // second address of dns1: the stub domain's server
	OutsideIP      = "198.18.2.100"  // the "internet" resolver the node's resolv.conf names
	clusterCIDR    = "198.18.0.0/22" // pods and DNS pods; traffic from elsewhere is masqueraded
	upstreamPort   = 5300            // the upstream CoreDNS behind its delaying proxy
	nxdomainPort   = 5301            // the upstream CoreDNS's catch-all NXDOMAIN server
	upstreamMetric = "127.0.0.1:9153"
	ClusterTTL     = 300
	StubDomain     = "stub.test"
	StubName       = "api.stub.test"
	StubAddr       = "198.18.5.5"
	OutsideName    = "www.example.test"
	OutsideAddr    = "198.18.4.10"
	SRVName        = "_http._tcp.web.default.svc.cluster.local"
	WildDomain     = "wild.svc.cluster.local" // every name under it exists: unique names for the miss path
	WildAddr       = "198.18.0.40"
	WildAddr6      = "2001:2::28"
	CacheMetrics   = LocalIP + ":9253" // prometheus in Corefile.example listens on :9253
)

// up builds the topology of the package doc: the namespaces, the pods'
// resolv.conf, the node's bridge, the veth links and routes, kube-proxy's
// rules and the upstream DNS pods, answering.
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

// AddPod makes one more pod namespace, named like the lab's others with
// suffix name, on a veth to the node (nodeIP/24 on the node's end, podIP/24
// on the pod's eth0) and routed like pod1 and pod2, and returns its name.
// Close removes it. A pod-network cache runs in one (Cilium mode).
func (l *Lab) AddPod(ctx context.Context, name, nodeIP, podIP string) (string, error) {
	ns := Prefix + l.ID + "-" + name
	if _, err := run(ctx, "ip", "netns", "add", ns); err != nil {
		return "", err
	}
	l.mu.Lock()
	l.made = append(l.made, ns)
	l.mu.Unlock()
	dev := "v" + name
	for _, s := range [][]string{
		{"ip", "link", "add", dev, "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"ip", "addr", "add", nodeIP + "/24", "dev", dev},
		{"ip", "link", "set", dev, "up"},
	} {
		if _, err := nsRun(ctx, l.Node, s[0], s[1:]...); err != nil {
			return "", fmt.Errorf("add pod %s: %w", ns, err)
		}
	}
	for _, s := range [][]string{
		{"ip", "link", "set", "lo", "up"},
		{"ip", "addr", "add", podIP + "/24", "dev", "eth0"},
		{"ip", "link", "set", "eth0", "up"},
		{"ip", "route", "add", "198.18.0.0/15", "via", nodeIP},
	} {
		if _, err := nsRun(ctx, ns, s[0], s[1:]...); err != nil {
			return "", fmt.Errorf("add pod %s: %w", ns, err)
		}
	}
	return ns, nil
}
