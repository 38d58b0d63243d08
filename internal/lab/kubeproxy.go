package lab

import (
	"context"
	"fmt"
	"strings"
)

// KubeProxyMode is how the lab's kube-proxy writes its Service rules.
type KubeProxyMode string

// The modes the lab emulates. IPVS mode needs the kernel's IPVS, which the
// lab machines lack; "IPVS style" cases keep iptables rules and only change
// what the pods ask (169.254.20.10) and what the cache holds.
const (
	// KubeProxyIptables is iptables mode through the default iptables
	// (the nft backend on Debian).
	KubeProxyIptables KubeProxyMode = "iptables"
	// KubeProxyIptablesLegacy is iptables mode through iptables-legacy.
	KubeProxyIptablesLegacy KubeProxyMode = "iptables-legacy"
	// KubeProxyNftables is nftables mode: table ip kube-proxy.
	KubeProxyNftables KubeProxyMode = "nftables"
)

// iptablesCmd is the iptables command of a mode's backend.
func (m KubeProxyMode) iptablesCmd() string {
	if m == KubeProxyIptablesLegacy {
		return "iptables-legacy"
	}
	return "iptables"
}

// KubeProxy is the mode kube-proxy's rules are in now.
func (l *Lab) KubeProxy() KubeProxyMode {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.kubeProxy == "" {
		return KubeProxyIptables
	}
	return l.kubeProxy
}

// SetKubeProxy moves kube-proxy's rules to mode: the rules of the mode in
// place go (only kube-proxy's: KUBE- chains and their jumps, or its nft
// table), then the new ones are written, as a node switched to another
// kube-proxy mode has them after kube-proxy's own clean-up.
func (l *Lab) SetKubeProxy(ctx context.Context, mode KubeProxyMode) error {
	cur := l.KubeProxy()
	if cur == mode {
		return nil
	}
	if err := l.removeKubeProxy(ctx, cur); err != nil {
		return fmt.Errorf("remove kube-proxy's %s rules: %w", cur, err)
	}
	l.mu.Lock()
	l.kubeProxy = mode
	l.mu.Unlock()
	return l.SyncKubeProxy(ctx)
}

func (l *Lab) removeKubeProxy(ctx context.Context, mode KubeProxyMode) error {
	if mode == KubeProxyNftables {
		_, err := nsRun(ctx, l.Node, "nft", "delete", "table", "ip", "kube-proxy")
		return err
	}
	ipt := mode.iptablesCmd()
	for _, table := range []string{"nat", "filter"} {
		saved, err := nsRun(ctx, l.Node, ipt+"-save", "-t", table)
		if err != nil {
			return err
		}
		var kept []string
		for _, line := range strings.Split(saved, "\n") {
			if !strings.Contains(line, "KUBE-") {
				kept = append(kept, line)
			}
		}
		if _, err := nsRunInput(ctx, l.Node, strings.Join(kept, "\n")+"\n", ipt+"-restore", "-w", "5", "-T", table); err != nil {
			return err
		}
	}
	return nil
}

// SyncKubeProxy writes kube-proxy's rules as kube-proxy's sync loop does.
// In iptables mode: iptables-restore --noflush of its own chains, and the
// jumps from the built-in chains when missing. In nftables mode: its table
// ip kube-proxy, replaced whole in one transaction.
func (l *Lab) SyncKubeProxy(ctx context.Context) error {
	mode := l.KubeProxy()
	if mode == KubeProxyNftables {
		if _, err := nsRunInput(ctx, l.Node, kubeProxyNft(), "nft", "-f", "-"); err != nil {
			return fmt.Errorf("kube-proxy nftables rules: %w", err)
		}
		return nil
	}
	ipt := mode.iptablesCmd()
	if _, err := nsRunInput(ctx, l.Node, kubeProxyRules(), ipt+"-restore", "-w", "5", "--noflush"); err != nil {
		return fmt.Errorf("kube-proxy rules: %w", err)
	}
	for _, j := range kubeProxyJumps {
		check := append([]string{"-w", "5", j[0], j[1], "-C"}, j[2:]...)
		if _, err := nsRun(ctx, l.Node, ipt, check...); err == nil {
			continue
		}
		add := append([]string{"-w", "5", j[0], j[1], "-I"}, j[2:]...)
		if _, err := nsRun(ctx, l.Node, ipt, add...); err != nil {
			return fmt.Errorf("kube-proxy jump: %w", err)
		}
	}
	return nil
}

// kubeProxyNft renders what kube-proxy in nftables mode writes for the
// kube-dns and kube-dns-upstream Services with two endpoints each, in the
// shape of its own table (pkg/proxy/nftables): base chains at dstnat and
// srcnat jump to `services`, which looks the destination up in the
// service-ips verdict map; each Service port chain marks traffic from
// outside the cluster CIDR for masquerade and picks an endpoint chain with
// numgen, which DNATs.
func kubeProxyNft() string {
	type svc struct{ name, ip, hash string }
	svcs := []svc{{"kube-system/kube-dns", KubeDNSIP, "DNS"}, {"kube-system/kube-dns-upstream", KubeDNSUpIP, "DNSUP"}}
	eps := []string{DNS1IP, DNS2IP}
	var b, elems strings.Builder
	// Replaced whole: add (no-op if there), delete, add again.
	b.WriteString("add table ip kube-proxy\ndelete table ip kube-proxy\n")
	b.WriteString("table ip kube-proxy {\n")
	b.WriteString("\tcomment \"rules for kube-proxy\"\n")
	b.WriteString("\tchain mark-for-masquerade {\n\t\tmeta mark set meta mark | 0x4000\n\t}\n")
	b.WriteString("\tchain masquerading {\n\t\tmeta mark & 0x4000 == 0 return\n\t\tmeta mark set meta mark ^ 0x4000\n\t\tmasquerade fully-random\n\t}\n")
	for _, s := range svcs {
		for _, proto := range []string{"udp", "tcp"} {
			port := "dns"
			if proto == "tcp" {
				port = "dns-tcp"
			}
			var epChains []string
			for i, ep := range eps {
				c := fmt.Sprintf("endpoint-%s%s%d-%s/%s/%s__%s/53", s.hash, strings.ToUpper(proto), i+1, s.name, proto, port, ep)
				epChains = append(epChains, c)
				fmt.Fprintf(&b, "\tchain %s {\n\t\tip saddr %s jump mark-for-masquerade\n\t\tmeta l4proto %s dnat to %s:53\n\t}\n", c, ep, proto, ep)
			}
			sc := fmt.Sprintf("service-%s%s-%s/%s/%s", s.hash, strings.ToUpper(proto), s.name, proto, port)
			fmt.Fprintf(&b, "\tchain %s {\n\t\tip daddr %s %s dport 53 ip saddr != %s jump mark-for-masquerade\n", sc, s.ip, proto, clusterCIDR)
			fmt.Fprintf(&b, "\t\tnumgen random mod %d vmap { ", len(epChains))
			for i, c := range epChains {
				if i > 0 {
					b.WriteString(", ")
				}
				fmt.Fprintf(&b, "%d : goto %s", i, c)
			}
			b.WriteString(" }\n\t}\n")
			if elems.Len() > 0 {
				elems.WriteString(", ")
			}
			fmt.Fprintf(&elems, "%s . %s . 53 : goto %s", s.ip, proto, sc)
		}
	}
	fmt.Fprintf(&b, "\tmap service-ips {\n\t\ttype ipv4_addr . inet_proto . inet_service : verdict\n\t\tcomment \"ClusterIP, ExternalIP and LoadBalancer IP traffic\"\n\t\telements = { %s }\n\t}\n", elems.String())
	b.WriteString("\tchain services {\n\t\tip daddr . meta l4proto . th dport vmap @service-ips\n\t}\n")
	b.WriteString("\tchain nat-prerouting {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n\t\tjump services\n\t}\n")
	b.WriteString("\tchain nat-output {\n\t\ttype nat hook output priority -100; policy accept;\n\t\tjump services\n\t}\n")
	b.WriteString("\tchain nat-postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\t\tjump masquerading\n\t}\n")
	b.WriteString("}\n")
	return b.String()
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
