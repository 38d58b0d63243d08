package rules

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Comment marks every rule and jump of the plugin.
const Comment = "nodelocaldns"

// Chain is a chain the plugin owns, reached by one jump from a built-in chain.
type Chain struct {
	Name    string // e.g. NODELOCALDNS-PREROUTING
	Builtin string // the built-in chain that jumps to it
	// Rules are the chain's rules in iptables-save form ("-A NAME ..."), so
	// they compare as text against what iptables-save prints.
	Rules []string
}

// Jump is the rule in the built-in chain, in iptables-save form.
func (c Chain) Jump() string {
	return fmt.Sprintf("-A %s -m comment --comment %s -j %s", c.Builtin, Comment, c.Name)
}

// Table is the wanted content of one table of one address family.
type Table struct {
	Name   string // raw or filter
	Chains []Chain
}

// Chain names; the same names serve iptables and ip6tables.
const (
	chainRawPrerouting = "NODELOCALDNS-PREROUTING"
	chainRawOutput     = "NODELOCALDNS-OUTPUT"
	chainFilterInput   = "NODELOCALDNS-INPUT"
	chainFilterOutput  = "NODELOCALDNS-OUTPUT"
)

// ownChains lists every chain the plugin may own, by table.
var ownChains = []Table{
	{Name: "raw", Chains: []Chain{{Name: chainRawPrerouting, Builtin: "PREROUTING"}, {Name: chainRawOutput, Builtin: "OUTPUT"}}},
	{Name: "filter", Chains: []Chain{{Name: chainFilterInput, Builtin: "INPUT"}, {Name: chainFilterOutput, Builtin: "OUTPUT"}}},
}

// Render returns the rule set of one family (ipv6 false: the IPv4 local IPs,
// for iptables; true: the IPv6 ones, for ip6tables): the rules node-cache
// installs, in chains of the plugin's own. It returns nil when the spec has
// no local IP of that family.
func Render(spec Spec, ipv6 bool) []Table {
	var ips []netip.Addr
	for _, a := range spec.LocalIPs {
		a = a.Unmap()
		if a.Is6() == ipv6 && !slices.Contains(ips, a) {
			ips = append(ips, a)
		}
	}
	if len(ips) == 0 {
		return nil
	}
	var ports []int
	for _, p := range spec.DNSPorts {
		if !slices.Contains(ports, p) {
			ports = append(ports, p)
		}
	}
	var pre, out, in, fout []string
	for _, l := range ips {
		h := netip.PrefixFrom(l, l.BitLen()).String()
		for _, p := range ports {
			for _, proto := range []string{"udp", "tcp"} {
				pre = append(pre, rule(chainRawPrerouting, "-d", h, proto, "--dport", p, "NOTRACK"))
				out = append(out, rule(chainRawOutput, "-s", h, proto, "--sport", p, "NOTRACK"))
				out = append(out, rule(chainRawOutput, "-d", h, proto, "--dport", p, "NOTRACK"))
				in = append(in, rule(chainFilterInput, "-d", h, proto, "--dport", p, "ACCEPT"))
				fout = append(fout, rule(chainFilterOutput, "-s", h, proto, "--sport", p, "ACCEPT"))
			}
		}
		if spec.HealthPort > 0 {
			out = append(out, rule(chainRawOutput, "-d", h, "tcp", "--dport", spec.HealthPort, "NOTRACK"))
			out = append(out, rule(chainRawOutput, "-s", h, "tcp", "--sport", spec.HealthPort, "NOTRACK"))
		}
	}
	t := slices.Clone(ownChains)
	t[0].Chains = []Chain{{chainRawPrerouting, "PREROUTING", pre}, {chainRawOutput, "OUTPUT", out}}
	t[1].Chains = []Chain{{chainFilterInput, "INPUT", in}, {chainFilterOutput, "OUTPUT", fout}}
	return t
}

// rule renders one rule exactly as iptables-save prints it back.
func rule(chain, addrFlag, addr, proto, portFlag string, port int, target string) string {
	return fmt.Sprintf("-A %s %s %s -p %s -m %s %s %d -m comment --comment %s -j %s", chain, addrFlag, addr, proto, proto, portFlag, port, Comment, target)
}

// RestoreInput renders tables as a complete iptables-restore --noflush input
// that rewrites the plugin's chains and inserts each jump at the top. Ensure
// sends only the parts that differ from what is on the host.
func RestoreInput(tables []Table) string {
	var b strings.Builder
	for _, t := range tables {
		fmt.Fprintf(&b, "*%s\n", t.Name)
		for _, c := range t.Chains {
			fmt.Fprintf(&b, ":%s - [0:0]\n", c.Name)
		}
		for _, c := range t.Chains {
			for _, r := range c.Rules {
				b.WriteString(r + "\n")
			}
		}
		for _, c := range t.Chains {
			b.WriteString(insertJump(c) + "\n")
		}
		b.WriteString("COMMIT\n")
	}
	return b.String()
}

// insertJump is the restore line that puts c's jump first in its built-in chain.
func insertJump(c Chain) string {
	return "-I " + c.Builtin + " 1" + strings.TrimPrefix(c.Jump(), "-A "+c.Builtin)
}
