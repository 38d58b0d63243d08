package nodelocal

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/nodelocaldns/nodelocaldns/plugin/nodelocal/netif"
	"github.com/nodelocaldns/nodelocaldns/plugin/nodelocal/rules"
)

// Host is the node-side work of the plugin. Every method is idempotent.
//
// The Ensure methods bring the node to the wanted state and return one line
// for each thing they had to change, starting with what changed: "link",
// "address", "chain", "jump" or "table" (the label of the repairs metric;
// any other word counts as "other"). An empty list means everything was
// already in place. The Remove methods take away only what the plugin owns.
type Host interface {
	// EnsureLink makes the link exist and be up, holding every address.
	EnsureLink(netif.Spec) ([]string, error)
	// RemoveLink removes the addresses from the link, and the link itself
	// when it holds no other address.
	RemoveLink(netif.Spec) error
	// EnsureRules makes the rule set exactly the one the spec renders.
	EnsureRules(rules.Spec) ([]string, error)
	// RemoveRules removes every rule and chain of the plugin.
	RemoveRules(rules.Spec) error
	// SocketMatch tells whether the kernel has the socket match the
	// spec's Guard needs: nil, an error wrapping rules.ErrNoSocketMatch,
	// or another error when it could not tell.
	SocketMatch(rules.Spec) error
}

// hostSpec is everything the plugin puts on the host.
type hostSpec struct {
	link  netif.Spec // Name "" when there is no interface
	rules rules.Spec // Mode none when there are no rules
}

// ensure puts want on the host: link and addresses first, then rules. It
// returns one line per change, as the Host methods do.
func ensure(h Host, want hostSpec) ([]string, error) {
	var changes []string
	if want.link.Name != "" {
		c, err := h.EnsureLink(want.link)
		changes = append(changes, c...)
		if err != nil {
			countSetupError(err, errInterfaceAdd)
			return changes, fmt.Errorf("interface %s: %w", want.link.Name, err)
		}
	}
	if want.rules.Mode != rules.ModeNone {
		c, err := h.EnsureRules(want.rules)
		changes = append(changes, c...)
		if err != nil {
			countSetupError(err, errIptables)
			return changes, fmt.Errorf("rules: %w", err)
		}
	}
	return changes, nil
}

// remove takes hs away: rules first, so traffic falls back to the
// kube-proxy path, then addresses and link.
func remove(h Host, hs hostSpec) error {
	var errs []error
	if hs.rules.Mode != rules.ModeNone {
		if err := h.RemoveRules(hs.rules); err != nil {
			errs = append(errs, fmt.Errorf("remove rules: %w", err))
		}
	}
	if hs.link.Name != "" {
		if err := h.RemoveLink(hs.link); err != nil {
			errs = append(errs, fmt.Errorf("remove interface %s: %w", hs.link.Name, err))
		}
	}
	return errors.Join(errs...)
}

// removeStale removes what prev has and want has not: the rules when they
// live in other tables (ensuring want replaced them otherwise), and the
// addresses, or the whole link, want no longer names.
func removeStale(h Host, prev, want hostSpec) error {
	if prev.rules.Mode != rules.ModeNone && !sameRuleHome(prev.rules, want.rules) {
		if err := h.RemoveRules(prev.rules); err != nil {
			return fmt.Errorf("remove previous rules: %w", err)
		}
	}
	if prev.link.Name == "" {
		return nil
	}
	stale := prev.link
	if stale.Name == want.link.Name {
		stale.Addrs = slices.DeleteFunc(slices.Clone(stale.Addrs), func(a netip.Addr) bool { return slices.Contains(want.link.Addrs, a) })
		if len(stale.Addrs) == 0 {
			return nil
		}
	}
	if err := h.RemoveLink(stale); err != nil {
		return fmt.Errorf("remove previous addresses: %w", err)
	}
	return nil
}

// sameRuleHome is true when two rule specs live in the same tables, so
// ensuring one replaces the other.
func sameRuleHome(a, b rules.Spec) bool { return a.Mode == b.Mode && a.Backend == b.Backend }

func describe(hs hostSpec) string {
	var parts []string
	if hs.link.Name != "" {
		parts = append(parts, fmt.Sprintf("interface %s with %v", hs.link.Name, hs.link.Addrs))
	} else {
		parts = append(parts, "no interface")
	}
	if hs.rules.Mode != rules.ModeNone {
		parts = append(parts, fmt.Sprintf("%s rules for ports %v and health port %d", hs.rules.Mode, hs.rules.DNSPorts, hs.rules.HealthPort))
	} else {
		parts = append(parts, "no rules")
	}
	return strings.Join(parts, ", ")
}
