package nodelocal

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/nodelocaldns/nodelocaldns/plugin/nodelocal/netif"
	"github.com/nodelocaldns/nodelocaldns/plugin/nodelocal/rules"
)

// The rule for instances on one node with different settings (a surge
// rollout that changes `localip` or a port): the node carries what the live
// instances need together. Each instance publishes its own needs in the
// state directory (peers.go); each one ensures the union of its own and the
// live peers' needs, which every instance computes the same, in one
// canonical order, so they write the same rules and never fight. When one
// stops, it removes only what no live instance needs; the last one out
// removes everything (or what its `teardown` says).
//
// Peers share a link when they name the same interface, and rules when
// they use the same mode and backend; what lives elsewhere is theirs alone.
// A live peer whose needs are unknown (it has published nothing yet, or is
// an older version) may need anything: then nothing is removed.

// merge returns base with what each of others needs in base's link and rule
// tables added, every list in canonical order. Others of another link or
// rule home add nothing. unknown reports a nil entry (needs unknown).
func merge(base hostSpec, others []*hostSpec) (out hostSpec, unknown bool) {
	out = base
	out.link.Addrs = slices.Clone(base.link.Addrs)
	r := &out.rules
	r.LocalIPs = slices.Clone(r.LocalIPs)
	r.DNSPorts = slices.Clone(r.DNSPorts)
	r.Fallback = slices.Clone(r.Fallback)
	health := slices.Clone(r.MoreHealthPorts)
	if r.HealthPort > 0 {
		health = append(health, r.HealthPort)
	}
	for _, o := range others {
		if o == nil {
			unknown = true
			continue
		}
		if out.link.Name != "" && o.link.Name == out.link.Name {
			out.link.Addrs = append(out.link.Addrs, o.link.Addrs...)
		}
		if r.Mode != rules.ModeNone && sameRuleHome(*r, o.rules) {
			r.LocalIPs = append(r.LocalIPs, o.rules.LocalIPs...)
			r.DNSPorts = append(r.DNSPorts, o.rules.DNSPorts...)
			r.Fallback = append(r.Fallback, o.rules.Fallback...)
			if o.rules.HealthPort > 0 {
				health = append(health, o.rules.HealthPort)
			}
			health = append(health, o.rules.MoreHealthPorts...)
			r.Guard = r.Guard || o.rules.Guard
			if up := o.rules.Upstream; up.IsValid() && (!r.Upstream.IsValid() || up.Less(r.Upstream)) {
				r.Upstream = up
			}
		}
	}
	out.link.Addrs = sortedSet(out.link.Addrs, netip.Addr.Compare)
	r.LocalIPs = sortedSet(r.LocalIPs, netip.Addr.Compare)
	r.Fallback = sortedSet(r.Fallback, netip.Addr.Compare)
	r.DNSPorts = sortedSet(r.DNSPorts, cmp.Compare[int])
	health = sortedSet(slices.DeleteFunc(health, func(p int) bool { return p <= 0 }), cmp.Compare[int])
	r.HealthPort, r.MoreHealthPorts = 0, nil
	if len(health) > 0 {
		r.HealthPort, r.MoreHealthPorts = health[0], health[1:]
	}
	if len(r.MoreHealthPorts) == 0 {
		r.MoreHealthPorts = nil
	}
	return out, unknown
}

// needed returns what others need of mine: mine's link with the addresses
// they hold there, and mine's rule home with their rules (Mode none when
// none of them has rules there).
func needed(mine hostSpec, others []*hostSpec) (hostSpec, bool) {
	base := hostSpec{
		link:  netif.Spec{Name: mine.link.Name},
		rules: rules.Spec{Mode: mine.rules.Mode, Backend: mine.rules.Backend},
	}
	rest, unknown := merge(base, others)
	if len(rest.rules.LocalIPs) == 0 {
		rest.rules = rules.Spec{Mode: rules.ModeNone}
	}
	return rest, unknown
}

// leaveBeside gives hs up beside live peers: what they need of it stays
// (their rules rewritten without the rest), the rest goes, rules first. It
// returns what stays, or nil when a peer's needs are unknown: that peer
// keeps everything.
func leaveBeside(h Host, hs hostSpec, peers []*hostSpec) (*hostSpec, error) {
	rest, unknown := needed(hs, peers)
	if unknown {
		return nil, nil
	}
	var errs []error
	switch {
	case hs.rules.Mode == rules.ModeNone:
	case rest.rules.Mode == rules.ModeNone:
		if err := h.RemoveRules(hs.rules); err != nil {
			errs = append(errs, fmt.Errorf("remove rules: %w", err))
		}
	default:
		if _, err := h.EnsureRules(rest.rules); err != nil {
			errs = append(errs, fmt.Errorf("rules of the other instances: %w", err))
		}
	}
	if hs.link.Name != "" {
		stale := hs.link
		stale.Addrs = slices.DeleteFunc(slices.Clone(stale.Addrs), func(a netip.Addr) bool { return slices.Contains(rest.link.Addrs, a) })
		if len(stale.Addrs) > 0 {
			if err := h.RemoveLink(stale); err != nil {
				errs = append(errs, fmt.Errorf("remove addresses %v: %w", stale.Addrs, err))
			}
		}
	}
	return &rest, errors.Join(errs...)
}

// withPeers is what the node must carry for own and the live peers
// together. Alone, it is own as configured.
func withPeers(own hostSpec, peers []*hostSpec) (hostSpec, bool) {
	if len(peers) == 0 {
		return own, false
	}
	return merge(own, peers)
}

// sameSpec reports whether two host specs put the same thing on the node.
func sameSpec(a, b hostSpec) bool { return fmt.Sprintf("%+v", a) == fmt.Sprintf("%+v", b) }

func sortedSet[T comparable](s []T, c func(a, b T) int) []T {
	s = slices.Clone(s)
	slices.SortFunc(s, c)
	return slices.Compact(s)
}
