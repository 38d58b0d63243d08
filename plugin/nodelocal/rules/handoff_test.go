package rules

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/nodelocaldns/nodelocaldns/internal/nstest"
)

func TestRenderHandoff(t *testing.T) {
	spec := testSpec(BackendNft)
	up := netip.MustParseAddr("198.18.0.11")

	// IPVS mode: no kube-proxy chain, DNAT to the ClusterIP; only IPv4 local IPs.
	got := RenderHandoff(spec, up, nil)
	want := []string{
		"-A NODELOCALDNS-HANDOFF -d 169.254.20.10/32 -p udp -m udp --dport 53 -m comment --comment nodelocaldns -j DNAT --to-destination 198.18.0.11:53",
		"-A NODELOCALDNS-HANDOFF -d 169.254.20.10/32 -p tcp -m tcp --dport 53 -m comment --comment nodelocaldns -j DNAT --to-destination 198.18.0.11:53",
		"-A NODELOCALDNS-HANDOFF -d 198.18.0.10/32 -p udp -m udp --dport 53 -m comment --comment nodelocaldns -j DNAT --to-destination 198.18.0.11:53",
		"-A NODELOCALDNS-HANDOFF -d 198.18.0.10/32 -p tcp -m tcp --dport 53 -m comment --comment nodelocaldns -j DNAT --to-destination 198.18.0.11:53",
	}
	if len(got) != 1 || got[0].Name != "nat" || !slices.Equal(got[0].Chains[0].Lines(), want) {
		t.Errorf("RenderHandoff PREROUTING =\n%s\nwant\n%s", strings.Join(got[0].Chains[0].Lines(), "\n"), strings.Join(want, "\n"))
	}
	if len(got[0].Chains[1].Rules) != 4 || got[0].Chains[1].Builtin != "OUTPUT" {
		t.Errorf("Host-originated traffic not handed off: %q", got[0].Chains[1].Lines())
	}

	// iptables mode: jump to kube-proxy's Service chain, found in a saved nat table.
	nat := parseSave(`*nat
:KUBE-SERVICES - [0:0]
-A KUBE-SERVICES -d 198.18.0.10/32 -p udp -m comment --comment "kube-system/kube-dns:dns cluster IP" -m udp --dport 53 -j KUBE-SVC-TCOU7JCQXEZGVUNU
-A KUBE-SERVICES -d 198.18.0.11/32 -p udp -m comment --comment "kube-system/kube-dns-upstream:dns cluster IP" -m udp --dport 53 -j KUBE-SVC-UPSTREAMUDP
-A KUBE-SERVICES -d 198.18.0.11/32 -p tcp -m comment --comment "kube-system/kube-dns-upstream:dns-tcp cluster IP" -m tcp --dport 53 -j KUBE-SVC-UPSTREAMTCP
COMMIT
`)
	svc := kubeServiceChains(nat, up)
	if svc["udp"] != "KUBE-SVC-UPSTREAMUDP" || svc["tcp"] != "KUBE-SVC-UPSTREAMTCP" {
		t.Fatalf("kubeServiceChains = %v", svc)
	}
	got = RenderHandoff(spec, up, svc)
	if r := got[0].Chains[0].Lines()[1]; !strings.HasSuffix(r, "-p tcp -m tcp --dport 53 -m comment --comment nodelocaldns -j KUBE-SVC-UPSTREAMTCP") {
		t.Errorf("TCP handoff rule %q does not jump to kube-proxy's chain", r)
	}
	if RenderHandoff(Spec{LocalIPs: []netip.Addr{netip.MustParseAddr("2001:2::10")}, DNSPorts: []int{53}}, up, nil) != nil {
		t.Error("Handoff rendered for local IPs of another family than the upstream")
	}
}

// TestHandoff applies and removes the path in a namespace, for both backends.
func TestHandoff(t *testing.T) {
	for _, b := range backends {
		t.Run(string(b), func(t *testing.T) {
			nstest.Enter(t)
			m := New()
			spec := testSpec(b)
			up := netip.MustParseAddr("198.18.0.11")
			save := func() string {
				out, err := nstest.Run(t, binary(families[0], b, "save"), "-t", "nat")
				if err != nil {
					t.Fatal(err)
				}
				return out
			}
			for range 2 { // twice: no duplicates
				if err := m.EnsureHandoff(spec, up); err != nil {
					t.Fatal(err)
				}
			}
			out := save()
			if n := strings.Count(out, "-j DNAT --to-destination 198.18.0.11:53"); n != 8 {
				t.Errorf("%d DNAT rules, want 8 (2 IPs x udp/tcp x PREROUTING/OUTPUT):\n%s", n, out)
			}
			if n := strings.Count(out, "-j "+chainHandoffPrerouting+"\n"); n != 1 {
				t.Errorf("%d jumps to %s, want 1", n, chainHandoffPrerouting)
			}
			if err := m.RemoveHandoff(spec); err != nil {
				t.Fatal(err)
			}
			if out := save(); strings.Contains(out, "NODELOCALDNS") {
				t.Errorf("RemoveHandoff left:\n%s", out)
			}
		})
	}
}
