package rules

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nodelocaldns/nodelocaldns/internal/nstest"
)

func TestMain(m *testing.M) { nstest.Main(m) }

var backends = []Backend{BackendLegacy, BackendNft}

// guarded is spec with the fail-open guard and 169.254.20.10 falling back
// to 198.18.0.11.
func guarded(spec Spec) Spec {
	spec.Guard = true
	spec.Fallback = []netip.Addr{netip.MustParseAddr("169.254.20.10")}
	spec.Upstream = netip.MustParseAddr("198.18.0.11")
	return spec
}

func testSpec(b Backend) Spec {
	return Spec{
		Mode:       ModeIptables,
		Backend:    b,
		LocalIPs:   []netip.Addr{netip.MustParseAddr("169.254.20.10"), netip.MustParseAddr("198.18.0.10"), netip.MustParseAddr("2001:2::10")},
		DNSPorts:   []int{53},
		HealthPort: 8080,
	}
}

// foreign is another program's rules, put in before the plugin's.
const foreign = `*filter
:FOREIGN-CHAIN - [0:0]
-A FOREIGN-CHAIN -s 198.18.9.8/32 -j RETURN
-A INPUT -s 198.18.9.9/32 -j DROP
-A OUTPUT -d 198.18.9.9/32 -j FOREIGN-CHAIN
COMMIT
*raw
-A PREROUTING -s 198.18.9.9/32 -j NOTRACK
COMMIT
`

// dump returns a family's raw and filter tables without comments and counters.
func dump(t *testing.T, f family, b Backend) string {
	t.Helper()
	var out strings.Builder
	for _, table := range []string{"raw", "filter", "nat"} {
		s, err := nstest.Run(t, binary(f, b, "save"), "-t", table)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(s, "\n") {
			if strings.HasPrefix(l, "#") || l == "" {
				continue
			}
			if strings.HasPrefix(l, ":") {
				l = l[:strings.LastIndex(l, " [")]
			}
			out.WriteString(l + "\n")
		}
	}
	return out.String()
}

func addForeign(t *testing.T, b Backend) {
	t.Helper()
	for _, f := range families {
		in := foreign
		if f.ipv6 {
			in = strings.ReplaceAll(in, "198.18.9.", "2001:2::9:")
			in = strings.ReplaceAll(in, "/32", "/128")
		}
		if _, err := nstest.RunInput(t, in, binary(f, b, "restore"), "--noflush"); err != nil {
			t.Fatal(err)
		}
	}
}

// requireRules checks that every wanted rule and jump is there exactly
// once, each jump first in its built-in chain.
func requireRules(t *testing.T, spec Spec, b Backend) {
	t.Helper()
	for _, f := range families {
		d := dump(t, f, b)
		for _, table := range Render(spec, f.ipv6) {
			cur := parseSave(tableDump(d, table.Name))
			for _, c := range table.Chains {
				if !slices.Equal(cur.chains[c.Name], c.Lines()) {
					t.Errorf("%s %s %s holds\n%s\nwant\n%s", binary(f, b, ""), table.Name, c.Name, strings.Join(cur.chains[c.Name], "\n"), strings.Join(c.Lines(), "\n"))
				}
				if got := cur.chains[c.Builtin]; len(got) == 0 || got[0] != c.Jump() || count(got, c.Jump()) != 1 {
					t.Errorf("%s %s %s: jump not first or not once: %q", binary(f, b, ""), table.Name, c.Builtin, got)
				}
			}
		}
	}
}

// tableDump cuts one table out of a dump.
func tableDump(d, table string) string {
	_, rest, _ := strings.Cut(d, "*"+table+"\n")
	body, _, _ := strings.Cut(rest, "COMMIT")
	return body
}

func ensure(t *testing.T, m *Manager, spec Spec) []string {
	t.Helper()
	c, err := m.Ensure(spec)
	if err != nil {
		t.Fatalf("Ensure: %v (changes %q)", err, c)
	}
	return c
}

func hasPrefix(changes []string, prefix string) bool {
	return slices.ContainsFunc(changes, func(c string) bool { return strings.HasPrefix(c, prefix) })
}

func TestEnsureIptables(t *testing.T) {
	for _, b := range backends {
		t.Run(string(b), func(t *testing.T) {
			nstest.Enter(t)
			addForeign(t, b)
			before := map[family]string{}
			for _, f := range families {
				before[f] = dump(t, f, b)
			}
			m := New()
			spec := testSpec(b)

			start := time.Now()
			changes := ensure(t, m, spec)
			t.Logf("Ensure on a clean namespace (%s, 2 families) took %v", b, time.Since(start))
			if len(changes) != 16 { // 4 chains created + 4 jumps, per family
				t.Errorf("First Ensure: %d changes, want 16: %q", len(changes), changes)
			}
			requireRules(t, spec, b)
			start = time.Now()
			if c := ensure(t, m, spec); len(c) != 0 {
				t.Errorf("Second Ensure changed %q, want nothing", c)
			}
			t.Logf("Steady-state Ensure took %v", time.Since(start))
			requireRules(t, spec, b)

			// A deleted rule.
			if _, err := nstest.Run(t, binary(families[0], b, ""), "-t", "raw", "-D", chainRawOutput, "3"); err != nil {
				t.Fatal(err)
			}
			start = time.Now()
			c := ensure(t, m, spec)
			t.Logf("Repair of a deleted rule took %v: %q", time.Since(start), c)
			if !slices.Equal(c, []string{"chain NODELOCALDNS-OUTPUT rewritten in iptables-" + string(b) + " raw (1 rules missing, 0 unexpected)"}) {
				t.Errorf("Repair of a deleted rule reported %q", c)
			}
			requireRules(t, spec, b)

			// A deleted jump, and a duplicated one.
			if _, err := nstest.Run(t, binary(families[1], b, ""), "-t", "filter", "-D", "INPUT", "-m", "comment", "--comment", Comment, "-j", chainFilterInput); err != nil {
				t.Fatal(err)
			}
			if _, err := nstest.Run(t, binary(families[0], b, ""), "-t", "raw", "-A", "PREROUTING", "-m", "comment", "--comment", Comment, "-j", chainRawPrerouting); err != nil {
				t.Fatal(err)
			}
			c = ensure(t, m, spec)
			if !slices.Equal(c, []string{
				"jump PREROUTING -> NODELOCALDNS-PREROUTING duplicates removed in iptables-" + string(b) + " raw (1)",
				"jump INPUT -> NODELOCALDNS-INPUT added in ip6tables-" + string(b) + " filter",
			}) {
				t.Errorf("Repair of jumps reported %q", c)
			}
			requireRules(t, spec, b)

			// kube-proxy style: a full restore of the filter table, without our chains.
			full := "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:FOREIGN-CHAIN - [0:0]\n:KUBE-FIREWALL - [0:0]\n" +
				"-A FOREIGN-CHAIN -s 198.18.9.8/32 -j RETURN\n-A INPUT -s 198.18.9.9/32 -j DROP\n-A OUTPUT -d 198.18.9.9/32 -j FOREIGN-CHAIN\nCOMMIT\n"
			if _, err := nstest.RunInput(t, full, binary(families[0], b, "restore")); err != nil {
				t.Fatal(err)
			}
			c = ensure(t, m, spec)
			if len(c) != 4 || !hasPrefix(c, "chain NODELOCALDNS-INPUT created in iptables-"+string(b)+" filter") || !hasPrefix(c, "jump OUTPUT -> NODELOCALDNS-OUTPUT added in iptables-"+string(b)+" filter") {
				t.Errorf("Repair after a full filter restore reported %q", c)
			}
			requireRules(t, spec, b)
			if _, err := nstest.Run(t, binary(families[0], b, ""), "-t", "filter", "-X", "KUBE-FIREWALL"); err != nil {
				t.Fatal(err)
			}

			// The fail-open guard and the standing DNAT: what iptables-save
			// prints back must be what Render wrote, or every Ensure rewrites.
			g := guarded(spec)
			c = ensure(t, m, g)
			if len(c) != 4 || !hasPrefix(c, "chain NODELOCALDNS-FALLBACK created in iptables-"+string(b)+" nat (2 rules)") {
				t.Errorf("Guard on reported %q", c)
			}
			requireRules(t, g, b)
			if c := ensure(t, m, g); len(c) != 0 {
				t.Errorf("Second guarded Ensure changed %q", c)
			}
			c = ensure(t, m, spec)
			if len(c) != 3 || !hasPrefix(c, "chain NODELOCALDNS-FALLBACK removed from iptables-"+string(b)+" nat") {
				t.Errorf("Guard off reported %q", c)
			}
			requireRules(t, spec, b)

			// IPv4 only now: the ip6tables chains go.
			v4 := spec
			v4.LocalIPs = spec.LocalIPs[:2]
			c = ensure(t, m, v4)
			if len(c) != 4 || !hasPrefix(c, "chain NODELOCALDNS-PREROUTING removed from ip6tables-"+string(b)+" raw") {
				t.Errorf("Dropping IPv6 reported %q", c)
			}
			if d := dump(t, families[1], b); d != before[families[1]] {
				t.Errorf("ip6tables after dropping IPv6:\n%s\nwant\n%s", d, before[families[1]])
			}

			for range 2 { // Remove is idempotent
				if err := m.Remove(spec); err != nil {
					t.Fatalf("Remove: %v", err)
				}
				for _, f := range families {
					if d := dump(t, f, b); d != before[f] {
						t.Errorf("%s after Remove:\n%s\nwant (foreign rules only)\n%s", f.name, d, before[f])
					}
				}
			}
		})
	}
}

func TestAutoBackend(t *testing.T) {
	for _, kube := range []Backend{BackendLegacy, BackendNft, ""} {
		t.Run("kube-proxy on "+string(kube), func(t *testing.T) {
			nstest.Enter(t)
			if kube != "" {
				in := "*filter\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -d 198.18.0.10/32 -j RETURN\n-A INPUT -j KUBE-SERVICES\nCOMMIT\n"
				if _, err := nstest.RunInput(t, in, binary(families[0], kube, "restore"), "--noflush"); err != nil {
					t.Fatal(err)
				}
			}
			want := kube
			if want == "" {
				want = BackendNft
			}
			m := New()
			spec := testSpec(BackendAuto)
			ensure(t, m, spec)
			for _, b := range backends {
				d := dump(t, families[0], b)
				if got := strings.Contains(d, chainFilterInput); got != (b == want) {
					t.Errorf("Auto with KUBE- rules in %q: %s holds our chain: %v, want rules only in %s", kube, b, got, want)
				}
			}
			if err := m.Remove(spec); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestCommandPrefix runs the Manager from a goroutine in the host namespace,
// reaching the test namespace only through `ip netns exec`.
func TestCommandPrefix(t *testing.T) {
	name := nstest.Enter(t)
	m := New(WithCommandPrefix("ip", "netns", "exec", name))
	spec := testSpec(BackendNft)
	done := make(chan error)
	go func() {
		_, err := m.Ensure(spec)
		done <- err
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	requireRules(t, spec, BackendNft)
	go func() { done <- m.Remove(spec) }()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if d := dump(t, families[0], BackendNft); strings.Contains(d, "NODELOCALDNS") {
		t.Errorf("Rules left after Remove:\n%s", d)
	}
}

func TestLocked(t *testing.T) {
	nstest.Enter(t)
	lock := filepath.Join(t.TempDir(), "xtables.lock")
	f, err := os.Create(lock)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	m := New(WithEnv("XTABLES_LOCKFILE="+lock), WithWait(time.Second))
	_, err = m.Ensure(testSpec(BackendLegacy))
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("Ensure while another holds the xtables lock: %v, want ErrLocked", err)
	}
	t.Logf("Lock error: %v", err)
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	ensure(t, m, testSpec(BackendLegacy))
	if err := m.Remove(testSpec(BackendLegacy)); err != nil {
		t.Fatal(err)
	}
}

func TestCheckMissingBinary(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	err := Check(testSpec(BackendNft))
	if err == nil || !strings.Contains(err.Error(), "iptables-nft not found in PATH: install the iptables package") {
		t.Errorf("Check with no iptables: %v", err)
	}
	if err := Check(Spec{Mode: ModeNone}); err != nil {
		t.Errorf("Check of rules none: %v", err)
	}
	if err := Check(Spec{Mode: ModeNftables}); err != nil {
		t.Errorf("Check of rules nftables needs no binary: %v", err)
	}
}
