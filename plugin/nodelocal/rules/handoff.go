package rules

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// The handoff path (`teardown handoff`, for IPVS mode where pods only know
// the local IP): while no cache runs, DNS sent to the local IPs goes to the
// cluster DNS Service instead. It lives in the nat table, in chains of its
// own, and the next start removes it once its own rules are in place.
const (
	chainHandoffPrerouting = "NODELOCALDNS-HANDOFF"
	chainHandoffOutput     = "NODELOCALDNS-HANDOFF-OUT"
	upstreamPort           = 53
)

var handoffChains = []Table{
	{Name: "nat", Chains: []Chain{{Name: chainHandoffPrerouting, Builtin: "PREROUTING"}, {Name: chainHandoffOutput, Builtin: "OUTPUT"}}},
}

// RenderHandoff returns the nat rules that send DNS for the spec's local IPs
// of upstream's family to upstream. svc maps "udp"/"tcp" to kube-proxy's
// KUBE-SVC chain of that Service, when kube-proxy (iptables mode) has one:
// jumping there load-balances to the endpoints as kube-proxy would. Without
// it (IPVS mode, where the node holds every ClusterIP) the rule DNATs to the
// ClusterIP itself.
func RenderHandoff(spec Spec, upstream netip.Addr, svc map[string]string) []Table {
	upstream = upstream.Unmap()
	var ips []netip.Addr
	for _, a := range spec.LocalIPs {
		if a = a.Unmap(); a.Is6() == upstream.Is6() && !slices.Contains(ips, a) {
			ips = append(ips, a)
		}
	}
	if len(ips) == 0 {
		return nil
	}
	var pre, out []string
	for _, l := range ips {
		h := netip.PrefixFrom(l, l.BitLen()).String()
		for _, p := range spec.DNSPorts {
			for _, proto := range []string{"udp", "tcp"} {
				target := svc[proto]
				if target == "" {
					target = "DNAT --to-destination " + netip.AddrPortFrom(upstream, upstreamPort).String()
				}
				pre = append(pre, rule(chainHandoffPrerouting, "-d", h, proto, "--dport", p, target))
				out = append(out, rule(chainHandoffOutput, "-d", h, proto, "--dport", p, target))
			}
		}
	}
	t := slices.Clone(handoffChains)
	t[0].Chains = []Chain{{chainHandoffPrerouting, "PREROUTING", pre}, {chainHandoffOutput, "OUTPUT", out}}
	return t
}

// kubeServiceChains finds kube-proxy's KUBE-SVC chains for upstream:53 in a
// saved nat table, by protocol.
func kubeServiceChains(nat saved, upstream netip.Addr) map[string]string {
	dst := netip.PrefixFrom(upstream, upstream.BitLen()).String()
	found := map[string]string{}
	for _, r := range nat.chains["KUBE-SERVICES"] {
		f := strings.Fields(r)
		var d, proto, dport, jump string
		for i := 0; i+1 < len(f); i++ {
			switch f[i] {
			case "-d":
				d = f[i+1]
			case "-p":
				proto = f[i+1]
			case "--dport":
				dport = f[i+1]
			case "-j":
				jump = f[i+1]
			}
		}
		if d == dst && dport == fmt.Sprint(upstreamPort) && strings.HasPrefix(jump, "KUBE-SVC-") && found[proto] == "" {
			found[proto] = jump
		}
	}
	return found
}

// EnsureHandoff installs the handoff path for the spec's local IPs to
// upstream (ModeIptables only).
func (m *Manager) EnsureHandoff(spec Spec, upstream netip.Addr) error {
	if spec.Mode != ModeIptables {
		return fmt.Errorf("teardown handoff needs rules iptables, not %s", spec.Mode)
	}
	b, err := m.backend(spec.Backend)
	if err != nil {
		return err
	}
	f := families[0]
	if upstream.Unmap().Is6() {
		f = families[1]
	}
	nat, err := m.save(f, b, "nat")
	if err != nil {
		return err
	}
	want := RenderHandoff(spec, upstream, kubeServiceChains(nat, upstream.Unmap()))
	if want == nil {
		return fmt.Errorf("teardown handoff: no local IP of the upstream %s's family", upstream)
	}
	_, err = m.ensureFamily(f, b, want)
	return err
}

// RemoveHandoff removes the handoff path, if any, from both families.
func (m *Manager) RemoveHandoff(spec Spec) error {
	if spec.Mode != ModeIptables {
		return nil
	}
	b, err := m.backend(spec.Backend)
	if err != nil {
		return err
	}
	// No family needs its binaries: where they are missing there is no path.
	return m.removeFamilies(b, handoffChains, func(family) bool { return false })
}
