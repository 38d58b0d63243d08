package nodelocal

import (
	"net/netip"

	"github.com/nodelocaldns/nodelocaldns/plugin/nodelocal/netif"
	"github.com/nodelocaldns/nodelocaldns/plugin/nodelocal/rules"
)

// Host is the node-side work of the plugin. Every method is idempotent.
//
// The Ensure methods bring the node to the wanted state and return one line
// for each thing they had to change, starting with what changed ("link ...",
// "address ...", "rule ...", "jump ..."); an empty list means everything was
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
	// EnsureHandoff leaves a path from the local IPs to the upstream
	// Service for the time no cache runs (teardown handoff).
	EnsureHandoff(rules.Spec, netip.Addr) error
	// RemoveHandoff removes that path.
	RemoveHandoff(rules.Spec) error
}

// newHost builds the host backend; tests replace it with a fake.
var newHost = func(cfg Config) (Host, error) { return newSystemHost(cfg) }
