package lab

import (
	"fmt"
	"strings"
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
	SRVTarget      = "web.default.svc.cluster.local"
	WildDomain     = "wild.svc.cluster.local" // every name under it exists: unique names for the miss path
	WildAddr       = "198.18.0.40"
	WildAddr6      = "2001:2::28"
	CacheMetrics   = LocalIP + ":9253" // prometheus in Corefile.example listens on :9253
)

// Service is a cluster Service the upstream CoreDNS answers for.
type Service struct {
	Name string // FQDN without the trailing dot
	IPv4 string
	IPv6 string
}

// Services are the cluster names the upstream CoreDNS pods serve, A, AAAA
// and PTR.
var Services = []Service{
	{"kubernetes.default.svc.cluster.local", "198.18.0.1", "2001:2::1"},
	{"kube-dns.kube-system.svc.cluster.local", KubeDNSIP, "2001:2::a"},
	{"kube-dns-upstream.kube-system.svc.cluster.local", KubeDNSUpIP, "2001:2::b"},
	{"web.default.svc.cluster.local", "198.18.0.20", "2001:2::14"},
	{"api.default.svc.cluster.local", "198.18.0.21", "2001:2::15"},
	{"db.default.svc.cluster.local", "198.18.0.22", "2001:2::16"},
	{"cache.default.svc.cluster.local", "198.18.0.23", "2001:2::17"},
	{"metrics-server.kube-system.svc.cluster.local", "198.18.0.30", "2001:2::1e"},
}

// hostsFile renders Services in /etc/hosts form for the hosts plugin, which
// also answers their PTR queries.
func hostsFile() string {
	var b strings.Builder
	for _, s := range Services {
		fmt.Fprintf(&b, "%s %s\n%s %s\n", s.IPv4, s.Name, s.IPv6, s.Name)
	}
	return b.String()
}

const soa = `"{{ .Zone }} 30 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 30"`

// upstreamCorefile is a "CoreDNS pod" of the cluster: cluster.local and the
// reverse zone from a hosts file (TTL 300, so the cache's hit path is not
// refresh-dominated), the SRV record and the WildDomain wildcard from
// templates, NXDOMAIN with a SOA
// for every other cluster name (the hosts plugin has no SOA, so it falls
// through to a catch-all template server), stub.test forwarded to its
// server as a kube-dns stubDomain would be, and the rest to the outside
// resolver. It listens on loopback only; dnsdelay serves the pod IP.
// withStub adds the stub domain's own server on StubIP.
func upstreamCorefile(hostsPath string, withStub bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, `cluster.local:%[1]d in-addr.arpa:%[1]d ip6.arpa:%[1]d {
    bind 127.0.0.1
    prometheus %[2]s
    errors
    template IN SRV cluster.local {
        match ^_http\._tcp\.web\.default\.svc\.cluster\.local\.$
        answer "{{ .Name }} %[4]d IN SRV 0 100 80 web.default.svc.cluster.local."
        additional "web.default.svc.cluster.local. %[4]d IN A 198.18.0.20"
        fallthrough
    }
    template IN A cluster.local {
        match ^[^.]+\.%[10]s\.$
        answer "{{ .Name }} %[4]d IN A %[11]s"
        fallthrough
    }
    template IN AAAA cluster.local {
        match ^[^.]+\.%[10]s\.$
        answer "{{ .Name }} %[4]d IN AAAA %[12]s"
        fallthrough
    }
    hosts %[3]s {
        ttl %[4]d
        reload 0
        fallthrough
    }
    forward . 127.0.0.1:%[5]d
}
%[6]s:%[1]d {
    bind 127.0.0.1
    prometheus %[2]s
    forward . %[7]s
}
.:%[1]d {
    bind 127.0.0.1
    prometheus %[2]s
    forward . %[8]s
}
.:%[5]d {
    bind 127.0.0.1
    template ANY ANY {
        rcode NXDOMAIN
        authority %[9]s
    }
}
`, upstreamPort, upstreamMetric, hostsPath, ClusterTTL, nxdomainPort, StubDomain, StubIP, OutsideIP, soa,
		strings.ReplaceAll(WildDomain, ".", `\.`), WildAddr, WildAddr6)
	if withStub {
		fmt.Fprintf(&b, `%[1]s:53 {
    bind %[2]s
    hosts {
        %[3]s %[4]s
        ttl %[5]d
    }
}
`, StubDomain, StubIP, StubAddr, StubName, ClusterTTL)
	}
	return b.String()
}

// outsideCorefile is the "internet": example.test and NXDOMAIN for the rest.
func outsideCorefile() string {
	return fmt.Sprintf(`example.test:53 {
    bind %[1]s
    prometheus %[1]s:9153
    hosts {
        %[2]s %[3]s
        2001:2:0:4::10 %[3]s
        ttl %[4]d
    }
}
.:53 {
    bind %[1]s
    prometheus %[1]s:9153
    template ANY ANY {
        rcode NXDOMAIN
        authority %[5]s
    }
}
`, OutsideIP, OutsideAddr, OutsideName, ClusterTTL, soa)
}

// kubeProxyRules renders what kube-proxy in iptables mode writes for the
// kube-dns and kube-dns-upstream Services with two endpoints each: every
// packet to a ClusterIP goes KUBE-SERVICES → KUBE-SVC-… → one of two
// KUBE-SEP-… (random, probability 0.5) → DNAT; traffic from outside the
// cluster CIDR and hairpin traffic is marked and masqueraded. Applied with
// `iptables-restore --noflush`, as kube-proxy does, so other chains in the
// tables (the cache's) stay.
func kubeProxyRules() string {
	type svc struct{ name, ip, hash string }
	svcs := []svc{{"kube-system/kube-dns", KubeDNSIP, "DNS"}, {"kube-system/kube-dns-upstream", KubeDNSUpIP, "DNSUP"}}
	eps := []string{DNS1IP, DNS2IP}
	var chains, rules strings.Builder
	for _, s := range svcs {
		for _, proto := range []string{"udp", "tcp"} {
			port := "dns"
			if proto == "tcp" {
				port = "dns-tcp"
			}
			svcChain := fmt.Sprintf("KUBE-SVC-%s-%s", s.hash, strings.ToUpper(proto))
			fmt.Fprintf(&chains, ":%s - [0:0]\n", svcChain)
			fmt.Fprintf(&rules, "-A KUBE-SERVICES -d %s/32 -p %s -m comment --comment \"%s:%s cluster IP\" -m %s --dport 53 -j %s\n", s.ip, proto, s.name, port, proto, svcChain)
			fmt.Fprintf(&rules, "-A %s ! -s %s -d %s/32 -p %s -m comment --comment \"%s:%s cluster IP\" -m %s --dport 53 -j KUBE-MARK-MASQ\n", svcChain, clusterCIDR, s.ip, proto, s.name, port, proto)
			for i, ep := range eps {
				sep := fmt.Sprintf("KUBE-SEP-%s-%s%d", s.hash, strings.ToUpper(proto), i+1)
				fmt.Fprintf(&chains, ":%s - [0:0]\n", sep)
				if i < len(eps)-1 {
					fmt.Fprintf(&rules, "-A %s -m comment --comment \"%s:%s -> %s:53\" -m statistic --mode random --probability 0.50000000000 -j %s\n", svcChain, s.name, port, ep, sep)
				} else {
					fmt.Fprintf(&rules, "-A %s -m comment --comment \"%s:%s -> %s:53\" -j %s\n", svcChain, s.name, port, ep, sep)
				}
				fmt.Fprintf(&rules, "-A %s -s %s/32 -m comment --comment \"%s:%s\" -j KUBE-MARK-MASQ\n", sep, ep, s.name, port)
				fmt.Fprintf(&rules, "-A %s -p %s -m comment --comment \"%s:%s\" -m %s -j DNAT --to-destination %s:53\n", sep, proto, s.name, port, proto, ep)
			}
		}
	}
	return "*nat\n" +
		":KUBE-SERVICES - [0:0]\n:KUBE-POSTROUTING - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n" +
		chains.String() +
		"-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n" +
		"-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n" +
		"-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0\n" +
		"-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n" +
		rules.String() +
		"COMMIT\n" +
		"*filter\n:KUBE-FORWARD - [0:0]\n" +
		"-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n" +
		"-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark 0x4000/0x4000 -j ACCEPT\n" +
		"-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n" +
		"COMMIT\n"
}

// kubeProxyJumps are the jumps from the built-in chains, added once (with
// -C first, as kube-proxy ensures them).
var kubeProxyJumps = [][]string{
	{"-t", "nat", "PREROUTING", "-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES"},
	{"-t", "nat", "OUTPUT", "-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES"},
	{"-t", "nat", "POSTROUTING", "-m", "comment", "--comment", "kubernetes postrouting rules", "-j", "KUBE-POSTROUTING"},
	{"-t", "filter", "FORWARD", "-m", "comment", "--comment", "kubernetes forwarding rules", "-j", "KUBE-FORWARD"},
}
