package rules

import (
	"fmt"
	"net/netip"
)

// The handoff path (`teardown handoff`, for IPVS mode where pods only know
// the local IP): while no cache runs, DNS sent to the local IPs goes to the
// cluster DNS Service instead. It lives in the nat table, in chains of its
// own, and the next start removes it once its own rules are in place.
const (
	chainHandoffPrerouting = "NODELOCALDNS-HANDOFF"
	chainHandoffOutput     = "NODELOCALDNS-HANDOFF-OUT"
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
	ips := familyIPs(spec.LocalIPs, upstream.Is6())
	if len(ips) == 0 {
		return nil
	}
	pre := Chain{Name: chainHandoffPrerouting, Builtin: "PREROUTING"}
	out := Chain{Name: chainHandoffOutput, Builtin: "OUTPUT"}
	for _, l := range ips {
		for _, p := range spec.DNSPorts {
			for _, proto := range []string{"udp", "tcp"} {
				r := Rule{Proto: proto, Dst: l, DPort: p, Target: TargetDNAT, To: netip.AddrPortFrom(upstream, upstreamPort)}
				if svc[proto] != "" {
					r.Target, r.To = Target(svc[proto]), netip.AddrPort{}
				}
				pre.Rules = append(pre.Rules, r)
				out.Rules = append(out.Rules, r)
			}
		}
	}
	return []Table{{Name: "nat", Chains: []Chain{pre, out}}}
}

// EnsureHandoff installs the handoff path for the spec's local IPs to
// upstream (ModeIptables only), through kube-proxy's Service chain when it
// has one.
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
	want := RenderHandoff(spec, upstream, nil)
	if want == nil {
		return fmt.Errorf("teardown handoff: no local IP of the upstream %s's family", upstream)
	}
	_, err = m.apply(m.runner(f, b), handoffChains, want, upstream)
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
