package rules

import (
	"strings"
	"testing"

	"github.com/nodelocaldns/nodelocaldns/internal/nstest"
)

func TestRenderNft(t *testing.T) {
	chains := RenderNft(testSpec(""))
	var got []string
	for _, c := range chains {
		got = append(got, c.Name+":")
		for _, r := range c.Rules {
			got = append(got, "  "+r.Nft())
		}
	}
	if len(chains) != 4 || len(chains[1].Rules) != 18 || len(chains[2].Rules) != 6 {
		t.Errorf("Rendered\n%s", strings.Join(got, "\n"))
	}
	for _, want := range []string{
		"raw-prerouting:\n  ip daddr 169.254.20.10 udp dport 53 counter notrack\n",
		"  ip6 saddr 2001:2::10 tcp sport 8080 counter notrack\n",
		"filter-output:\n  ip saddr 169.254.20.10 udp sport 53 counter accept\n",
	} {
		if s := strings.Join(got, "\n") + "\n"; !strings.Contains(s, want) {
			t.Errorf("Rendered\n%s\nlacks\n%s", s, want)
		}
	}
}

func TestEnsureNftables(t *testing.T) {
	nstest.Enter(t)
	if _, err := nstest.RunInput(t, "table inet foreign {\n chain input {\n type filter hook input priority 0;\n ip saddr 198.18.9.9 drop\n }\n}\n", "nft", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	m := New()
	spec := testSpec("")
	spec.Mode = ModeNftables
	c := ensure(t, m, spec)
	if len(c) != 1 || c[0] != "table inet nodelocaldns created (4 chains)" {
		t.Errorf("First Ensure: %q", c)
	}
	out, err := nstest.Run(t, "nft", "list", "table", "inet", NftTable)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("nft list table:\n%s", out)
	for _, want := range []string{
		"type filter hook prerouting priority raw; policy accept;",
		"ip daddr 169.254.20.10 udp dport 53 counter packets 0 bytes 0 notrack",
		"ip6 saddr 2001:2::10 tcp sport 8080 counter packets 0 bytes 0 notrack",
		"type filter hook input priority filter; policy accept;",
		"ip daddr 198.18.0.10 tcp dport 53 counter packets 0 bytes 0 accept",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("nft list lacks %q", want)
		}
	}
	if c := ensure(t, m, spec); len(c) != 0 {
		t.Errorf("Second Ensure changed %q", c)
	}

	// The guard and the standing DNAT, as nft lists them, then off again.
	g := guarded(spec)
	if c := ensure(t, m, g); len(c) != 3 || c[0] != "chain raw-prerouting rewritten in table inet nodelocaldns (6 rules missing, 6 unexpected)" || c[1] != "chain nat-prerouting created in table inet nodelocaldns" || c[2] != "chain mangle-prerouting created in table inet nodelocaldns" {
		t.Errorf("Guard on: %q", c)
	}
	out, err = nstest.Run(t, "nft", "list", "table", "inet", NftTable)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("nft list table (guarded):\n%s", out)
	for _, want := range []string{
		"ip daddr 198.18.0.10 udp dport 53 socket wildcard 0 counter packets 0 bytes 0 notrack",
		"ip6 daddr 2001:2::10 tcp dport 53 socket transparent 0 counter packets 0 bytes 0 notrack",
		// After kube-proxy's DNAT, so that one stands where it exists.
		"type nat hook prerouting priority dstnat + 10; policy accept;",
		"ip daddr 198.18.0.11 tcp dport 53 counter packets 0 bytes 0 dnat ip to 198.18.0.11:53",
		// Ahead of every DNAT: kube-proxy's takes the rewritten packet.
		"type filter hook prerouting priority mangle; policy accept;",
		"ip daddr 169.254.20.10 udp dport 53 ct state new counter packets 0 bytes 0 ip daddr set 198.18.0.11",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("nft list lacks %q", want)
		}
	}
	if c := ensure(t, m, g); len(c) != 0 {
		t.Errorf("Second guarded Ensure changed %q", c)
	}
	if c := ensure(t, m, spec); len(c) != 3 || c[1] != "chain mangle-prerouting removed from table inet nodelocaldns" || c[2] != "chain nat-prerouting removed from table inet nodelocaldns" {
		t.Errorf("Guard off: %q", c)
	}

	if _, err := nstest.Run(t, "nft", "flush", "chain", "inet", NftTable, "filter-input"); err != nil {
		t.Fatal(err)
	}
	if c := ensure(t, m, spec); len(c) != 1 || c[0] != "chain filter-input rewritten in table inet nodelocaldns (6 rules missing, 0 unexpected)" {
		t.Errorf("Repair of a flushed chain: %q", c)
	}
	if _, err := nstest.Run(t, "nft", "delete", "table", "inet", NftTable); err != nil {
		t.Fatal(err)
	}
	if c := ensure(t, m, spec); len(c) != 1 || !strings.HasPrefix(c[0], "table inet nodelocaldns created") {
		t.Errorf("Repair of a deleted table: %q", c)
	}
	for range 2 {
		if err := m.Remove(spec); err != nil {
			t.Fatal(err)
		}
	}
	out, err = nstest.Run(t, "nft", "list", "ruleset")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, NftTable) || !strings.Contains(out, "ip saddr 198.18.9.9 drop") {
		t.Errorf("Ruleset after Remove:\n%s", out)
	}
}

func TestNftProbeAndJump(t *testing.T) {
	if _, err := (Rule{Proto: "udp", DPort: 53, Target: "KUBE-SVC-X"}).exprs(); err == nil || !strings.Contains(err.Error(), "cannot jump to iptables chain KUBE-SVC-X") {
		t.Errorf("Compiling a jump to an iptables chain: %v", err)
	}
	nstest.Enter(t)
	m := New()
	if err := m.SocketMatch(Spec{Mode: ModeNftables}); err != nil {
		t.Fatalf("SocketMatch(nftables): %v", err)
	}
	out, err := nstest.Run(t, "nft", "list", "ruleset")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out) != "" {
		t.Errorf("The nftables probe left:\n%s", out)
	}
}
