package rules

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Comment marks every rule and jump of the plugin.
const Comment = "nodelocaldns"

// Target is what a rule does with the packets it matches.
type Target string

// Targets both backends know. Any other Target names an iptables chain to
// jump to (kube-proxy's KUBE-SVC chain of the upstream Service).
const (
	TargetNotrack Target = "NOTRACK"
	TargetAccept  Target = "ACCEPT"
	TargetDNAT    Target = "DNAT"
	// TargetSetDst rewrites the destination address of a packet conntrack
	// sees as new to To's address, in place (nftables only).
	TargetSetDst Target = "SETDST"
)

// Rule is one rule of the plugin: the model both backends render from.
type Rule struct {
	Proto    string     // udp or tcp
	Src, Dst netip.Addr // matched as a host address when valid
	SPort    int        // matched when not 0
	DPort    int        // matched when not 0
	// Socket matches only while a local, not wildcard-bound, socket takes
	// the packet (xt_socket, nft socket); valid in PREROUTING only.
	Socket bool
	Target Target
	To     netip.AddrPort // the DNAT destination
}

// Save renders r as iptables-save prints it back in chain, so rules compare
// as text with what is on the host.
func (r Rule) Save(chain string) string {
	var b strings.Builder
	b.WriteString("-A " + chain)
	if r.Src.IsValid() {
		b.WriteString(" -s " + host(r.Src))
	}
	if r.Dst.IsValid() {
		b.WriteString(" -d " + host(r.Dst))
	}
	fmt.Fprintf(&b, " -p %s -m %s", r.Proto, r.Proto)
	if r.SPort > 0 {
		fmt.Fprintf(&b, " --sport %d", r.SPort)
	}
	if r.DPort > 0 {
		fmt.Fprintf(&b, " --dport %d", r.DPort)
	}
	if r.Socket {
		b.WriteString(" -m socket")
	}
	b.WriteString(" -m comment --comment " + Comment + " -j " + string(r.Target))
	if r.Target == TargetDNAT {
		b.WriteString(" --to-destination " + r.To.String())
	}
	return b.String()
}

func host(a netip.Addr) string { return netip.PrefixFrom(a, a.BitLen()).String() }

// Chain is a chain the plugin owns, reached by one jump from a built-in chain.
type Chain struct {
	Name    string // e.g. NODELOCALDNS-PREROUTING
	Builtin string // the built-in chain that jumps to it
	Rules   []Rule
}

// Lines are the chain's rules in iptables-save form.
func (c Chain) Lines() []string {
	l := make([]string, len(c.Rules))
	for i, r := range c.Rules {
		l[i] = r.Save(c.Name)
	}
	return l
}

// Jump is the rule in the built-in chain, in iptables-save form.
func (c Chain) Jump() string {
	return fmt.Sprintf("-A %s -m comment --comment %s -j %s", c.Builtin, Comment, c.Name)
}

// Table is the wanted content of one table of one address family.
type Table struct {
	Name   string // raw, filter or nat
	Chains []Chain
}

// Chain names; the same names serve iptables and ip6tables.
const (
	chainRawPrerouting = "NODELOCALDNS-PREROUTING"
	chainRawOutput     = "NODELOCALDNS-OUTPUT"
	chainFilterInput   = "NODELOCALDNS-INPUT"
	chainFilterOutput  = "NODELOCALDNS-OUTPUT"
	chainFallback      = "NODELOCALDNS-FALLBACK"
)

// ownChains lists every chain Ensure and Remove look after, by table.
var ownChains = []Table{
	{Name: "raw", Chains: []Chain{{Name: chainRawPrerouting, Builtin: "PREROUTING"}, {Name: chainRawOutput, Builtin: "OUTPUT"}}},
	{Name: "filter", Chains: []Chain{{Name: chainFilterInput, Builtin: "INPUT"}, {Name: chainFilterOutput, Builtin: "OUTPUT"}}},
	{Name: "nat", Chains: []Chain{{Name: chainFallback, Builtin: "PREROUTING"}}},
}

// upstreamPort is the port of the kube-dns-upstream Service.
const upstreamPort = 53

// familyIPs returns the addresses of one family (ipv6 or not) among ips,
// unmapped and without duplicates.
func familyIPs(ips []netip.Addr, ipv6 bool) []netip.Addr {
	var out []netip.Addr
	for _, a := range ips {
		if a = a.Unmap(); a.IsValid() && a.Is6() == ipv6 && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// Render returns the rule set of one family (ipv6 false: the IPv4 local IPs,
// for iptables; true: the IPv6 ones, for ip6tables): the rules node-cache
// installs, in chains of the plugin's own, plus the standing DNAT of
// Spec.Fallback under Spec.Guard. It returns nil when the spec has no local
// IP of that family.
func Render(spec Spec, ipv6 bool) []Table {
	ips := familyIPs(spec.LocalIPs, ipv6)
	if len(ips) == 0 {
		return nil
	}
	var ports []int
	for _, p := range spec.DNSPorts {
		if !slices.Contains(ports, p) {
			ports = append(ports, p)
		}
	}
	pre := Chain{Name: chainRawPrerouting, Builtin: "PREROUTING"}
	out := Chain{Name: chainRawOutput, Builtin: "OUTPUT"}
	in := Chain{Name: chainFilterInput, Builtin: "INPUT"}
	fout := Chain{Name: chainFilterOutput, Builtin: "OUTPUT"}
	fb := fallbackRules(spec, ips, ports)
	for _, l := range ips {
		// Draining: the IPs with another path get no new pod queries.
		inFallback := slices.Contains(familyIPs(spec.Fallback, l.Is6()), l)
		drained := spec.Drain && (!inFallback || slices.ContainsFunc(fb, func(r Rule) bool { return r.Dst == l }))
		for _, p := range ports {
			for _, proto := range []string{"udp", "tcp"} {
				if !drained {
					pre.Rules = append(pre.Rules, Rule{Proto: proto, Dst: l, DPort: p, Socket: spec.Guard, Target: TargetNotrack})
				}
				// OUTPUT cannot be guarded (see the package doc): the
				// cache's replies, and node-local queries.
				out.Rules = append(out.Rules,
					Rule{Proto: proto, Src: l, SPort: p, Target: TargetNotrack},
					Rule{Proto: proto, Dst: l, DPort: p, Target: TargetNotrack})
				in.Rules = append(in.Rules, Rule{Proto: proto, Dst: l, DPort: p, Target: TargetAccept})
				fout.Rules = append(fout.Rules, Rule{Proto: proto, Src: l, SPort: p, Target: TargetAccept})
			}
		}
		for _, h := range healthPorts(spec) {
			out.Rules = append(out.Rules,
				Rule{Proto: "tcp", Dst: l, DPort: h, Target: TargetNotrack},
				Rule{Proto: "tcp", Src: l, SPort: h, Target: TargetNotrack})
		}
	}
	tables := []Table{
		{Name: "raw", Chains: []Chain{pre, out}},
		{Name: "filter", Chains: []Chain{in, fout}},
	}
	if len(fb) > 0 {
		tables = append(tables, Table{Name: "nat", Chains: []Chain{{Name: chainFallback, Builtin: "PREROUTING", Rules: fb}}})
	}
	return tables
}

// healthPorts are the spec's health ports, HealthPort first, without
// duplicates or zeros.
func healthPorts(spec Spec) []int {
	var ports []int
	for _, p := range append([]int{spec.HealthPort}, spec.MoreHealthPorts...) {
		if p > 0 && !slices.Contains(ports, p) {
			ports = append(ports, p)
		}
	}
	return ports
}

// fallbackRules are the standing DNATs of Spec.Fallback among ips (one
// family) to the upstream, when the guard is on and the upstream is of
// that family.
func fallbackRules(spec Spec, ips []netip.Addr, ports []int) []Rule {
	up := spec.Upstream.Unmap()
	if !spec.Guard || !up.IsValid() || len(ips) == 0 || up.Is6() != ips[0].Is6() {
		return nil
	}
	var rules []Rule
	for _, l := range familyIPs(spec.Fallback, up.Is6()) {
		if !slices.Contains(ips, l) {
			continue
		}
		for _, p := range ports {
			for _, proto := range []string{"udp", "tcp"} {
				rules = append(rules, Rule{Proto: proto, Dst: l, DPort: p, Target: TargetDNAT, To: netip.AddrPortFrom(up, upstreamPort)})
			}
		}
	}
	return rules
}

// RenderRestore is the complete iptables-restore --noflush input that puts
// the spec's rules of one family on a host that has none of them, e.g. for a
// test bed holding the cache's rules for another server. Manager.Remove takes
// them out again.
func RenderRestore(spec Spec, ipv6 bool) string { return RestoreInput(Render(spec, ipv6)) }

// RestoreInput renders tables as a complete iptables-restore --noflush input
// that writes the plugin's chains and inserts each jump at the top: what
// Ensure sends to a host holding none of them. On other hosts Ensure sends
// only the parts that differ, through the same planning.
func RestoreInput(tables []Table) string {
	_, in := plan(tables, tables, nil, "")
	return in
}

// plan compares the wanted tables with what is on the host (cur, by table
// name) and returns what changes and the iptables-restore --noflush input
// that makes them; empty when nothing differs. The chains of own that are
// not wanted but present are removed, their jumps first. where names the
// command in the change messages.
func plan(own, want []Table, cur map[string]saved, where string) ([]string, string) {
	var changes []string
	var b strings.Builder
	for _, t := range own {
		var wt Table
		for _, x := range want {
			if x.Name == t.Name {
				wt = x
			}
		}
		c, lines := planTable(t, wt, cur[t.Name], strings.TrimSpace(where+" "+t.Name))
		changes = append(changes, c...)
		if len(lines) == 0 {
			continue
		}
		b.WriteString("*" + t.Name + "\n")
		for _, l := range lines {
			b.WriteString(l + "\n")
		}
		b.WriteString("COMMIT\n")
	}
	return changes, b.String()
}

// planTable plans one table: own lists the chains looked after, want the
// wanted ones with their rules, have what is there; at names the table in
// messages. It returns the changes and the table's restore lines.
func planTable(own, want Table, have saved, at string) ([]string, []string) {
	var changes, decl, body, jumps, drops []string
	for _, c := range want.Chains {
		lines := c.Lines()
		got, exists := have.chains[c.Name]
		switch {
		case !exists:
			changes = append(changes, fmt.Sprintf("chain %s created in %s (%d rules)", c.Name, at, len(lines)))
		case !slices.Equal(got, lines):
			missing, extra := diff(lines, got)
			changes = append(changes, fmt.Sprintf("chain %s rewritten in %s (%d rules missing, %d unexpected)", c.Name, at, missing, extra))
		default:
			continue
		}
		// Under --noflush a declared chain is flushed (or created), then rewritten.
		decl = append(decl, fmt.Sprintf(":%s - [0:0]", c.Name))
		body = append(body, lines...)
	}
	for _, c := range want.Chains {
		switch n := count(have.chains[c.Builtin], c.Jump()); {
		case n == 0:
			jumps = append(jumps, insertJump(c))
			changes = append(changes, fmt.Sprintf("jump %s -> %s added in %s", c.Builtin, c.Name, at))
		case n > 1:
			// -D takes the first match: drop them all, put one back on top.
			for range n {
				jumps = append(jumps, deleteJump(c))
			}
			jumps = append(jumps, insertJump(c))
			changes = append(changes, fmt.Sprintf("jump %s -> %s duplicates removed in %s (%d)", c.Builtin, c.Name, at, n-1))
		}
	}
	for _, c := range own.Chains {
		if slices.ContainsFunc(want.Chains, func(w Chain) bool { return w.Name == c.Name }) {
			continue
		}
		for range count(have.chains[c.Builtin], c.Jump()) {
			jumps = append(jumps, deleteJump(c))
		}
		if _, ok := have.chains[c.Name]; ok {
			decl = append(decl, fmt.Sprintf(":%s - [0:0]", c.Name))
			drops = append(drops, "-X "+c.Name)
			changes = append(changes, fmt.Sprintf("chain %s removed from %s", c.Name, at))
		}
	}
	if len(decl)+len(jumps) == 0 {
		return changes, nil
	}
	return changes, slices.Concat(decl, body, jumps, drops)
}

// insertJump is the restore line that puts c's jump first in its built-in chain.
func insertJump(c Chain) string {
	return "-I " + c.Builtin + " 1" + strings.TrimPrefix(c.Jump(), "-A "+c.Builtin)
}

// deleteJump is the restore line that deletes c's first jump.
func deleteJump(c Chain) string { return "-D" + strings.TrimPrefix(c.Jump(), "-A") }

// saved is one table as iptables-save prints it: chain name to its rules.
type saved struct {
	chains map[string][]string
}

// parseSave reads iptables-save output of one table.
func parseSave(out string) saved {
	s := saved{chains: map[string][]string{}}
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(l, ":"):
			name, _, _ := strings.Cut(l[1:], " ")
			if _, ok := s.chains[name]; !ok {
				s.chains[name] = []string{}
			}
		case strings.HasPrefix(l, "-A "):
			name, _, _ := strings.Cut(l[3:], " ")
			s.chains[name] = append(s.chains[name], l)
		}
	}
	return s
}

func count(rules []string, r string) int {
	n := 0
	for _, x := range rules {
		if x == r {
			n++
		}
	}
	return n
}

// diff counts the wanted rules that are missing and the rules that are there
// but not wanted (duplicates count).
func diff(want, have []string) (missing, extra int) {
	left := map[string]int{}
	for _, r := range have {
		left[r]++
	}
	for _, r := range want {
		if left[r] > 0 {
			left[r]--
		} else {
			missing++
		}
	}
	for _, n := range left {
		extra += n
	}
	return missing, extra
}
