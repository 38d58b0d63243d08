package lab

import (
	"context"
	"fmt"
	"strings"
)

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
