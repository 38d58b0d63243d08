package rules

import (
	"bytes"
	"errors"
	golog "log"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
)

// These tests run the compare-and-repair logic against fakeRunner: no root,
// no binaries. TestEnsureIptables runs the real runner.

// fakeManager returns a Manager on fake runners, each family holding the
// foreign rules first.
func fakeManager(t *testing.T) (*Manager, map[string]*fakeRunner) {
	t.Helper()
	all, newR := fakeRunners()
	for _, f := range families {
		in := foreign
		if f.ipv6 {
			in = strings.ReplaceAll(strings.ReplaceAll(in, "198.18.9.", "2001:2::9:"), "/32", "/128")
		}
		if err := newR(f.ipv6, BackendLegacy).Restore(in); err != nil {
			t.Fatal(err)
		}
	}
	return New(WithRunner(newR)), all
}

// requireFake checks that r holds every wanted chain exactly, and each jump
// once and first in its built-in chain.
func requireFake(t *testing.T, r *fakeRunner, want []Table) {
	t.Helper()
	for _, tb := range want {
		out, _ := r.Save(tb.Name)
		cur := parseSave(out)
		for _, c := range tb.Chains {
			if !slices.Equal(cur.chains[c.Name], c.Lines()) {
				t.Errorf("%s %s %s holds\n%s\nwant\n%s", r.name, tb.Name, c.Name, strings.Join(cur.chains[c.Name], "\n"), strings.Join(c.Lines(), "\n"))
			}
			if got := cur.chains[c.Builtin]; len(got) == 0 || got[0] != c.Jump() || count(got, c.Jump()) != 1 {
				t.Errorf("%s %s %s: jump not first or not once: %q", r.name, tb.Name, c.Builtin, got)
			}
		}
	}
}

func TestEnsureTables(t *testing.T) {
	m, all := fakeManager(t)
	v4, v6 := all["iptables-legacy"], all["ip6tables-legacy"]
	before := map[*fakeRunner]string{}
	for _, r := range []*fakeRunner{v4, v6} {
		before[r], _ = r.Save("")
	}
	spec := testSpec(BackendLegacy)

	changes := ensure(t, m, spec)
	if len(changes) != 16 { // 4 chains created + 4 jumps, per family
		t.Errorf("First Ensure: %d changes, want 16: %q", len(changes), changes)
	}
	if got := v4.inputs[len(v4.inputs)-1]; got != RestoreInput(Render(spec, false)) {
		t.Errorf("First Ensure sent\n%s\nnot what RestoreInput renders for an empty host\n%s", got, RestoreInput(Render(spec, false)))
	}
	requireFake(t, v4, Render(spec, false))
	requireFake(t, v6, Render(spec, true))
	if v4.tables["nat"] != nil {
		t.Error("Ensure without a fallback read or wrote the nat table")
	}
	sent := len(v4.inputs) + len(v6.inputs)
	if c := ensure(t, m, spec); len(c) != 0 || len(v4.inputs)+len(v6.inputs) != sent {
		t.Errorf("Second Ensure changed %q and sent %d restores, want nothing", c, len(v4.inputs)+len(v6.inputs)-sent)
	}

	// A deleted rule, a deleted jump and a duplicated one.
	out := Render(spec, false)[0].Chains[1].Lines()[2]
	dup := Chain{Name: chainRawPrerouting, Builtin: "PREROUTING"}.Jump()
	jin := Chain{Name: chainFilterInput, Builtin: "INPUT"}.Jump()
	for r, in := range map[*fakeRunner]string{
		v4: "*raw\n-D" + strings.TrimPrefix(out, "-A") + "\n-A" + strings.TrimPrefix(dup, "-A") + "\nCOMMIT\n",
		v6: "*filter\n-D" + strings.TrimPrefix(jin, "-A") + "\nCOMMIT\n",
	} {
		if err := r.Restore(in); err != nil {
			t.Fatal(err)
		}
	}
	c := ensure(t, m, spec)
	if !slices.Equal(c, []string{
		"chain NODELOCALDNS-OUTPUT rewritten in iptables-legacy raw (1 rules missing, 0 unexpected)",
		"jump PREROUTING -> NODELOCALDNS-PREROUTING duplicates removed in iptables-legacy raw (1)",
		"jump INPUT -> NODELOCALDNS-INPUT added in ip6tables-legacy filter",
	}) {
		t.Errorf("Repair reported %q", c)
	}
	requireFake(t, v4, Render(spec, false))
	requireFake(t, v6, Render(spec, true))

	// Guard on: the PREROUTING rules take the socket match in both
	// families, the IPv4 fallback gets a chain in nat; then off again.
	g := guarded(spec)
	c = ensure(t, m, g)
	if !slices.Equal(c, []string{
		"chain NODELOCALDNS-PREROUTING rewritten in iptables-legacy raw (4 rules missing, 4 unexpected)",
		"chain NODELOCALDNS-FALLBACK created in iptables-legacy nat (2 rules)",
		"jump PREROUTING -> NODELOCALDNS-FALLBACK added in iptables-legacy nat",
		"chain NODELOCALDNS-PREROUTING rewritten in ip6tables-legacy raw (2 rules missing, 2 unexpected)",
	}) {
		t.Errorf("Guard on reported %q", c)
	}
	requireFake(t, v4, Render(g, false))
	requireFake(t, v6, Render(g, true))
	if v6.tables["nat"] != nil {
		t.Error("IPv6 nat touched with an IPv4 upstream")
	}
	c = ensure(t, m, spec)
	if len(c) != 3 || c[1] != "chain NODELOCALDNS-FALLBACK removed from iptables-legacy nat" {
		t.Errorf("Guard off reported %q", c)
	}
	if nat, _ := v4.Save("nat"); strings.Contains(nat, "NODELOCALDNS") {
		t.Errorf("nat after guard off:\n%s", nat)
	}

	// IPv4 only: the ip6tables chains go.
	v4only := spec
	v4only.LocalIPs = spec.LocalIPs[:2]
	c = ensure(t, m, v4only)
	if len(c) != 4 || c[0] != "chain NODELOCALDNS-PREROUTING removed from ip6tables-legacy raw: no ip6tables local IP" {
		t.Errorf("Dropping IPv6 reported %q", c)
	}
	if d, _ := v6.Save(""); d != before[v6] {
		t.Errorf("ip6tables after dropping IPv6:\n%s\nwant\n%s", d, before[v6])
	}

	ensure(t, m, g)
	for range 2 { // Remove is idempotent, and takes the fallback too
		if err := m.Remove(spec); err != nil {
			t.Fatalf("Remove: %v", err)
		}
		if d, _ := v4.Save(""); d != strings.Replace(before[v4], "COMMIT\n", "COMMIT\n# Generated by fake\n*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n", 1) {
			t.Errorf("iptables after Remove:\n%s\nwant (foreign rules only)\n%s", d, before[v4])
		}
	}
}

// TestFallbackServiceChains: with kube-proxy in iptables mode, a DNAT to
// the ClusterIP would end nat before kube-proxy's own; the fallback jumps to
// its Service chain instead.
func TestFallbackServiceChains(t *testing.T) {
	m, all := fakeManager(t)
	kube := "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-UPUDP - [0:0]\n:KUBE-SVC-UPTCP - [0:0]\n" +
		"-A KUBE-SERVICES -d 198.18.0.11/32 -p udp -m comment --comment \"kube-system/kube-dns-upstream:dns cluster IP\" -m udp --dport 53 -j KUBE-SVC-UPUDP\n" +
		"-A KUBE-SERVICES -d 198.18.0.11/32 -p tcp -m comment --comment \"kube-system/kube-dns-upstream:dns-tcp cluster IP\" -m tcp --dport 53 -j KUBE-SVC-UPTCP\n" +
		"-A PREROUTING -j KUBE-SERVICES\nCOMMIT\n"
	if err := all["iptables-legacy"].Restore(kube); err != nil {
		t.Fatal(err)
	}
	ensure(t, m, guarded(testSpec(BackendLegacy)))
	nat, _ := all["iptables-legacy"].Save("nat")
	for _, want := range []string{
		"-A PREROUTING -m comment --comment nodelocaldns -j NODELOCALDNS-FALLBACK\n-A PREROUTING -j KUBE-SERVICES\n",
		"-A NODELOCALDNS-FALLBACK -d 169.254.20.10/32 -p udp -m udp --dport 53 -m comment --comment nodelocaldns -j KUBE-SVC-UPUDP\n",
		"-A NODELOCALDNS-FALLBACK -d 169.254.20.10/32 -p tcp -m tcp --dport 53 -m comment --comment nodelocaldns -j KUBE-SVC-UPTCP\n",
	} {
		if !strings.Contains(nat, want) {
			t.Errorf("nat lacks %q:\n%s", want, nat)
		}
	}
	if c := ensure(t, m, guarded(testSpec(BackendLegacy))); len(c) != 0 {
		t.Errorf("Second Ensure changed %q", c)
	}
}

// TestNoSocketMatch: on a kernel without xt_socket the probe says so once,
// and Ensure keeps the unguarded rules instead of failing.
func TestNoSocketMatch(t *testing.T) {
	m, all := fakeManager(t)
	v4 := all["iptables-legacy"]
	v4.noSocket = true
	spec := guarded(testSpec(BackendLegacy))
	err := m.SocketMatch(spec)
	if !errors.Is(err, ErrNoSocketMatch) || !strings.Contains(err.Error(), "iptables-legacy") {
		t.Fatalf("SocketMatch without xt_socket: %v, want ErrNoSocketMatch naming iptables-legacy", err)
	}
	sent := len(v4.inputs)
	ensure(t, m, spec)
	if len(v4.inputs) != sent+1 {
		t.Errorf("Ensure sent %d restores, want 1 (the probe runs once)", len(v4.inputs)-sent)
	}
	unguarded := testSpec(BackendLegacy)
	requireFake(t, v4, Render(unguarded, false))
	if v4.tables["nat"] != nil && strings.Contains(mustSave(v4, "nat"), "NODELOCALDNS") {
		t.Error("Fallback DNAT installed without the guard: it would catch every query")
	}
	if err := m.SocketMatch(spec); !errors.Is(err, ErrNoSocketMatch) {
		t.Errorf("Second SocketMatch: %v", err)
	}

	// With the match, the probe leaves nothing behind.
	m2, all2 := fakeManager(t)
	if err := m2.SocketMatch(spec); err != nil {
		t.Fatalf("SocketMatch: %v", err)
	}
	if raw := mustSave(all2["iptables-legacy"], "raw"); strings.Contains(raw, chainProbe) || len(all2["iptables-legacy"].inputs) != 3 {
		t.Errorf("Probe left\n%s\nafter %d restores, want 2 more than the foreign rules' one", raw, len(all2["iptables-legacy"].inputs))
	}
}

// TestMissingBinaries: a family without its binaries is skipped unless the
// spec has local IPs of it.
func TestMissingBinaries(t *testing.T) {
	m, all := fakeManager(t)
	all["ip6tables-legacy"].missing = true
	v4only := testSpec(BackendLegacy)
	v4only.LocalIPs = []netip.Addr{netip.MustParseAddr("169.254.20.10")}
	ensure(t, m, v4only)
	if err := m.Remove(v4only); err != nil {
		t.Errorf("Remove of IPv4 rules with no ip6tables: %v", err)
	}
	if err := m.Remove(testSpec(BackendLegacy)); err == nil || !strings.Contains(err.Error(), "ip6tables-legacy not found") {
		t.Errorf("Remove of IPv6 rules with no ip6tables: %v", err)
	}
}

func mustSave(r *fakeRunner, table string) string {
	s, _ := r.Save(table)
	return s
}

// TestAutoBackendTables: auto follows a kubelet hint chain first, then the
// backend holding more KUBE- rules, else nft.
func TestAutoBackendTables(t *testing.T) {
	for _, tc := range []struct {
		name  string
		rules map[string]string // restore input by runner
		want  Backend
	}{
		{"no kube-proxy", nil, BackendNft},
		{"KUBE- rules in legacy", map[string]string{"iptables-legacy": "*nat\n:KUBE-SERVICES - [0:0]\n-A PREROUTING -j KUBE-SERVICES\nCOMMIT\n"}, BackendLegacy},
		{"hint in nft beats rules in legacy", map[string]string{
			"iptables-legacy": "*nat\n:KUBE-SERVICES - [0:0]\n-A PREROUTING -j KUBE-SERVICES\n-A OUTPUT -j KUBE-SERVICES\nCOMMIT\n",
			"ip6tables-nft":   "*raw\n:KUBE-IPTABLES-HINT - [0:0]\nCOMMIT\n",
		}, BackendNft},
	} {
		all, newR := fakeRunners()
		for _, ipv6 := range []bool{false, true} {
			for _, b := range backends {
				newR(ipv6, b)
			}
		}
		for name, in := range tc.rules {
			if err := all[name].Restore(in); err != nil {
				t.Fatal(err)
			}
		}
		m := New(WithRunner(newR))
		if got, err := m.backend(BackendAuto); got != tc.want || err != nil {
			t.Errorf("Test %q: auto picked %s (%v), want %s", tc.name, got, err, tc.want)
		}
	}
}

// TestAutoBackendUnreadable: a backend whose rules cannot be read (no
// CAP_NET_RAW for iptables-legacy-save) still lets auto choose, but the log
// says the choice may be wrong and how to make it right.
func TestAutoBackendUnreadable(t *testing.T) {
	var buf bytes.Buffer
	golog.SetOutput(&buf)
	t.Cleanup(func() { golog.SetOutput(os.Stderr) })

	all, newR := fakeRunners()
	for _, ipv6 := range []bool{false, true} {
		for _, b := range backends {
			newR(ipv6, b)
		}
	}
	all["iptables-legacy"].unread = errors.New("can't initialize iptables table `raw': Permission denied")
	m := New(WithRunner(newR))
	if got, err := m.backend(BackendAuto); got != BackendNft || err != nil {
		t.Errorf("Auto picked %s (%v), want nft (nothing readable in legacy)", got, err)
	}
	for _, want := range []string{"iptables-legacy: can't initialize", "rules iptables legacy|nft"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("Log lacks %q:\n%s", want, buf.String())
		}
	}
}
