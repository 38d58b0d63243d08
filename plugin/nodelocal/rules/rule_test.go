package rules

import (
	"net/netip"
	"strings"
	"testing"
)

func TestRender(t *testing.T) {
	ips := func(s ...string) []netip.Addr {
		var a []netip.Addr
		for _, x := range s {
			a = append(a, netip.MustParseAddr(x))
		}
		return a
	}
	tests := []struct {
		name     string
		spec     Spec
		ipv6     bool
		expected string
		contains string // instead of expected, with lacks
		lacks    string
	}{
		{
			name: "one IPv4, port 53, health 8080",
			spec: Spec{Mode: ModeIptables, LocalIPs: ips("169.254.20.10", "2001:2::10"), DNSPorts: []int{53}, HealthPort: 8080},
			expected: `*raw
:NODELOCALDNS-PREROUTING - [0:0]
:NODELOCALDNS-OUTPUT - [0:0]
-A NODELOCALDNS-PREROUTING -d 169.254.20.10/32 -p udp -m udp --dport 53 -m comment --comment nodelocaldns -j NOTRACK
-A NODELOCALDNS-PREROUTING -d 169.254.20.10/32 -p tcp -m tcp --dport 53 -m comment --comment nodelocaldns -j NOTRACK
-A NODELOCALDNS-OUTPUT -s 169.254.20.10/32 -p udp -m udp --sport 53 -m comment --comment nodelocaldns -j NOTRACK
-A NODELOCALDNS-OUTPUT -d 169.254.20.10/32 -p udp -m udp --dport 53 -m comment --comment nodelocaldns -j NOTRACK
-A NODELOCALDNS-OUTPUT -s 169.254.20.10/32 -p tcp -m tcp --sport 53 -m comment --comment nodelocaldns -j NOTRACK
-A NODELOCALDNS-OUTPUT -d 169.254.20.10/32 -p tcp -m tcp --dport 53 -m comment --comment nodelocaldns -j NOTRACK
-A NODELOCALDNS-OUTPUT -d 169.254.20.10/32 -p tcp -m tcp --dport 8080 -m comment --comment nodelocaldns -j NOTRACK
-A NODELOCALDNS-OUTPUT -s 169.254.20.10/32 -p tcp -m tcp --sport 8080 -m comment --comment nodelocaldns -j NOTRACK
-I PREROUTING 1 -m comment --comment nodelocaldns -j NODELOCALDNS-PREROUTING
-I OUTPUT 1 -m comment --comment nodelocaldns -j NODELOCALDNS-OUTPUT
COMMIT
*filter
:NODELOCALDNS-INPUT - [0:0]
:NODELOCALDNS-OUTPUT - [0:0]
-A NODELOCALDNS-INPUT -d 169.254.20.10/32 -p udp -m udp --dport 53 -m comment --comment nodelocaldns -j ACCEPT
-A NODELOCALDNS-INPUT -d 169.254.20.10/32 -p tcp -m tcp --dport 53 -m comment --comment nodelocaldns -j ACCEPT
-A NODELOCALDNS-OUTPUT -s 169.254.20.10/32 -p udp -m udp --sport 53 -m comment --comment nodelocaldns -j ACCEPT
-A NODELOCALDNS-OUTPUT -s 169.254.20.10/32 -p tcp -m tcp --sport 53 -m comment --comment nodelocaldns -j ACCEPT
-I INPUT 1 -m comment --comment nodelocaldns -j NODELOCALDNS-INPUT
-I OUTPUT 1 -m comment --comment nodelocaldns -j NODELOCALDNS-OUTPUT
COMMIT
`,
		},
		{
			name: "IPv6 only, no health port, duplicates dropped",
			spec: Spec{Mode: ModeIptables, LocalIPs: ips("169.254.20.10", "2001:2::10", "2001:2::10"), DNSPorts: []int{1053, 1053}},
			ipv6: true,
			expected: `*raw
:NODELOCALDNS-PREROUTING - [0:0]
:NODELOCALDNS-OUTPUT - [0:0]
-A NODELOCALDNS-PREROUTING -d 2001:2::10/128 -p udp -m udp --dport 1053 -m comment --comment nodelocaldns -j NOTRACK
-A NODELOCALDNS-PREROUTING -d 2001:2::10/128 -p tcp -m tcp --dport 1053 -m comment --comment nodelocaldns -j NOTRACK
-A NODELOCALDNS-OUTPUT -s 2001:2::10/128 -p udp -m udp --sport 1053 -m comment --comment nodelocaldns -j NOTRACK
-A NODELOCALDNS-OUTPUT -d 2001:2::10/128 -p udp -m udp --dport 1053 -m comment --comment nodelocaldns -j NOTRACK
-A NODELOCALDNS-OUTPUT -s 2001:2::10/128 -p tcp -m tcp --sport 1053 -m comment --comment nodelocaldns -j NOTRACK
-A NODELOCALDNS-OUTPUT -d 2001:2::10/128 -p tcp -m tcp --dport 1053 -m comment --comment nodelocaldns -j NOTRACK
-I PREROUTING 1 -m comment --comment nodelocaldns -j NODELOCALDNS-PREROUTING
-I OUTPUT 1 -m comment --comment nodelocaldns -j NODELOCALDNS-OUTPUT
COMMIT
*filter
:NODELOCALDNS-INPUT - [0:0]
:NODELOCALDNS-OUTPUT - [0:0]
-A NODELOCALDNS-INPUT -d 2001:2::10/128 -p udp -m udp --dport 1053 -m comment --comment nodelocaldns -j ACCEPT
-A NODELOCALDNS-INPUT -d 2001:2::10/128 -p tcp -m tcp --dport 1053 -m comment --comment nodelocaldns -j ACCEPT
-A NODELOCALDNS-OUTPUT -s 2001:2::10/128 -p udp -m udp --sport 1053 -m comment --comment nodelocaldns -j ACCEPT
-A NODELOCALDNS-OUTPUT -s 2001:2::10/128 -p tcp -m tcp --sport 1053 -m comment --comment nodelocaldns -j ACCEPT
-I INPUT 1 -m comment --comment nodelocaldns -j NODELOCALDNS-INPUT
-I OUTPUT 1 -m comment --comment nodelocaldns -j NODELOCALDNS-OUTPUT
COMMIT
`,
		},
		{
			name: "guarded, 169.254.20.10 falls back to the upstream",
			spec: Spec{Mode: ModeIptables, LocalIPs: ips("169.254.20.10", "198.18.0.10"), DNSPorts: []int{53}, Guard: true,
				Fallback: ips("169.254.20.10", "2001:2::10"), Upstream: netip.MustParseAddr("198.18.0.11")},
			expected: `*raw
:NODELOCALDNS-PREROUTING - [0:0]
:NODELOCALDNS-OUTPUT - [0:0]
-A NODELOCALDNS-PREROUTING -d 169.254.20.10/32 -p udp -m udp --dport 53 -m socket -m comment --comment nodelocaldns -j NOTRACK
-A NODELOCALDNS-PREROUTING -d 169.254.20.10/32 -p tcp -m tcp --dport 53 -m socket -m comment --comment nodelocaldns -j NOTRACK
-A NODELOCALDNS-PREROUTING -d 198.18.0.10/32 -p udp -m udp --dport 53 -m socket -m comment --comment nodelocaldns -j NOTRACK
-A NODELOCALDNS-PREROUTING -d 198.18.0.10/32 -p tcp -m tcp --dport 53 -m socket -m comment --comment nodelocaldns -j NOTRACK
-A NODELOCALDNS-OUTPUT -s 169.254.20.10/32 -p udp -m udp --sport 53 -m comment --comment nodelocaldns -j NOTRACK
-A NODELOCALDNS-OUTPUT -d 169.254.20.10/32 -p udp -m udp --dport 53 -m comment --comment nodelocaldns -j NOTRACK
-A NODELOCALDNS-OUTPUT -s 169.254.20.10/32 -p tcp -m tcp --sport 53 -m comment --comment nodelocaldns -j NOTRACK
-A NODELOCALDNS-OUTPUT -d 169.254.20.10/32 -p tcp -m tcp --dport 53 -m comment --comment nodelocaldns -j NOTRACK
-A NODELOCALDNS-OUTPUT -s 198.18.0.10/32 -p udp -m udp --sport 53 -m comment --comment nodelocaldns -j NOTRACK
-A NODELOCALDNS-OUTPUT -d 198.18.0.10/32 -p udp -m udp --dport 53 -m comment --comment nodelocaldns -j NOTRACK
-A NODELOCALDNS-OUTPUT -s 198.18.0.10/32 -p tcp -m tcp --sport 53 -m comment --comment nodelocaldns -j NOTRACK
-A NODELOCALDNS-OUTPUT -d 198.18.0.10/32 -p tcp -m tcp --dport 53 -m comment --comment nodelocaldns -j NOTRACK
-I PREROUTING 1 -m comment --comment nodelocaldns -j NODELOCALDNS-PREROUTING
-I OUTPUT 1 -m comment --comment nodelocaldns -j NODELOCALDNS-OUTPUT
COMMIT
*filter
:NODELOCALDNS-INPUT - [0:0]
:NODELOCALDNS-OUTPUT - [0:0]
-A NODELOCALDNS-INPUT -d 169.254.20.10/32 -p udp -m udp --dport 53 -m comment --comment nodelocaldns -j ACCEPT
-A NODELOCALDNS-INPUT -d 169.254.20.10/32 -p tcp -m tcp --dport 53 -m comment --comment nodelocaldns -j ACCEPT
-A NODELOCALDNS-INPUT -d 198.18.0.10/32 -p udp -m udp --dport 53 -m comment --comment nodelocaldns -j ACCEPT
-A NODELOCALDNS-INPUT -d 198.18.0.10/32 -p tcp -m tcp --dport 53 -m comment --comment nodelocaldns -j ACCEPT
-A NODELOCALDNS-OUTPUT -s 169.254.20.10/32 -p udp -m udp --sport 53 -m comment --comment nodelocaldns -j ACCEPT
-A NODELOCALDNS-OUTPUT -s 169.254.20.10/32 -p tcp -m tcp --sport 53 -m comment --comment nodelocaldns -j ACCEPT
-A NODELOCALDNS-OUTPUT -s 198.18.0.10/32 -p udp -m udp --sport 53 -m comment --comment nodelocaldns -j ACCEPT
-A NODELOCALDNS-OUTPUT -s 198.18.0.10/32 -p tcp -m tcp --sport 53 -m comment --comment nodelocaldns -j ACCEPT
-I INPUT 1 -m comment --comment nodelocaldns -j NODELOCALDNS-INPUT
-I OUTPUT 1 -m comment --comment nodelocaldns -j NODELOCALDNS-OUTPUT
COMMIT
*nat
:NODELOCALDNS-FALLBACK - [0:0]
-A NODELOCALDNS-FALLBACK -d 169.254.20.10/32 -p udp -m udp --dport 53 -m comment --comment nodelocaldns -j DNAT --to-destination 198.18.0.11:53
-A NODELOCALDNS-FALLBACK -d 169.254.20.10/32 -p tcp -m tcp --dport 53 -m comment --comment nodelocaldns -j DNAT --to-destination 198.18.0.11:53
-I PREROUTING 1 -m comment --comment nodelocaldns -j NODELOCALDNS-FALLBACK
COMMIT
`,
		},
		{
			name: "a fallback needs the guard",
			spec: Spec{Mode: ModeIptables, LocalIPs: ips("2001:2::10"), DNSPorts: []int{53},
				Fallback: ips("2001:2::10"), Upstream: netip.MustParseAddr("2001:2::11")},
			ipv6:     true,
			contains: "-d 2001:2::10/128 -p udp -m udp --dport 53 -m comment --comment nodelocaldns -j NOTRACK\n",
			lacks:    "*nat",
		},
		{
			name: "IPv6 fallback",
			spec: Spec{Mode: ModeIptables, LocalIPs: ips("2001:2::10"), DNSPorts: []int{53}, Guard: true,
				Fallback: ips("2001:2::10"), Upstream: netip.MustParseAddr("2001:2::11")},
			ipv6:     true,
			contains: "-A NODELOCALDNS-FALLBACK -d 2001:2::10/128 -p tcp -m tcp --dport 53 -m comment --comment nodelocaldns -j DNAT --to-destination [2001:2::11]:53\n",
		},
		{
			// Two instances on one node with different health ports (a surge
			// that changes it): both ports skip conntrack.
			name:     "more health ports",
			spec:     Spec{Mode: ModeIptables, LocalIPs: ips("169.254.20.10"), DNSPorts: []int{53}, HealthPort: 8080, MoreHealthPorts: []int{8081, 8080}},
			contains: "-A NODELOCALDNS-OUTPUT -d 169.254.20.10/32 -p tcp -m tcp --dport 8080 -m comment --comment nodelocaldns -j NOTRACK\n-A NODELOCALDNS-OUTPUT -s 169.254.20.10/32 -p tcp -m tcp --sport 8080 -m comment --comment nodelocaldns -j NOTRACK\n-A NODELOCALDNS-OUTPUT -d 169.254.20.10/32 -p tcp -m tcp --dport 8081 -m comment --comment nodelocaldns -j NOTRACK\n-A NODELOCALDNS-OUTPUT -s 169.254.20.10/32 -p tcp -m tcp --sport 8081 -m comment --comment nodelocaldns -j NOTRACK\n",
		},
		{
			name: "no IPv6 local IP renders nothing for ip6tables",
			spec: Spec{Mode: ModeIptables, LocalIPs: ips("169.254.20.10"), DNSPorts: []int{53}, HealthPort: 8080},
			ipv6: true,
		},
	}
	for _, tc := range tests {
		got := RenderRestore(tc.spec, tc.ipv6)
		if tc.contains != "" {
			if !strings.Contains(got, tc.contains) || tc.lacks != "" && strings.Contains(got, tc.lacks) {
				t.Errorf("Test %q: rendered\n%s\nwant it to hold %q and not %q", tc.name, got, tc.contains, tc.lacks)
			}
			continue
		}
		if got != tc.expected {
			t.Errorf("Test %q: rendered\n%s\nexpected\n%s", tc.name, got, tc.expected)
		}
	}
}

func TestParseSave(t *testing.T) {
	out := `# Generated by iptables-save v1.8.9
*filter
:INPUT ACCEPT [0:0]
:NODELOCALDNS-INPUT - [0:0]
-A INPUT -s 198.18.9.9/32 -j DROP
-A INPUT -m comment --comment nodelocaldns -j NODELOCALDNS-INPUT
COMMIT
`
	s := parseSave(out)
	if len(s.chains["INPUT"]) != 2 || s.chains["INPUT"][1] != "-A INPUT -m comment --comment nodelocaldns -j NODELOCALDNS-INPUT" {
		t.Errorf("INPUT parsed as %q", s.chains["INPUT"])
	}
	if r, ok := s.chains["NODELOCALDNS-INPUT"]; !ok || len(r) != 0 {
		t.Errorf("Empty declared chain parsed as %q, %v", r, ok)
	}
	if m, e := diff([]string{"a", "b"}, []string{"b", "b", "c"}); m != 1 || e != 2 {
		t.Errorf("diff: %d missing, %d unexpected, want 1 and 2", m, e)
	}
}

// TestRenderDrain: a draining spec leaves out the pod NOTRACK rules of the
// local IPs with another path (kube-proxy's for the kube-dns IP, the
// standing fallback for the link-local IP), and only those.
func TestRenderDrain(t *testing.T) {
	local, kubeDNS := netip.MustParseAddr("169.254.20.10"), netip.MustParseAddr("198.18.0.10")
	base := Spec{Mode: ModeIptables, LocalIPs: []netip.Addr{local, kubeDNS}, DNSPorts: []int{53}, Guard: true, Fallback: []netip.Addr{local}, Drain: true}
	prerouting := func(s Spec) []string {
		var dst []string
		for _, tb := range Render(s, false) {
			for _, c := range tb.Chains {
				if c.Name == chainRawPrerouting {
					for _, r := range c.Rules {
						dst = append(dst, r.Dst.String())
					}
				}
			}
		}
		return dst
	}
	if got := prerouting(base); len(got) != 2 || got[0] != "169.254.20.10" {
		t.Errorf("Draining without an upstream: NOTRACK in PREROUTING for %v, want only the link-local IP's (it has no other path)", got)
	}
	withUp := base
	withUp.Upstream = netip.MustParseAddr("198.18.0.11")
	if got := prerouting(withUp); len(got) != 0 {
		t.Errorf("Draining with the fallback: NOTRACK in PREROUTING for %v, want none", got)
	}
	withUp.Drain = false
	if got := prerouting(withUp); len(got) != 4 {
		t.Errorf("Not draining: %d NOTRACK rules in PREROUTING, want 4", len(got))
	}
}
