package nodelocal

import (
	"github.com/nodelocaldns/nodelocaldns/plugin/nodelocal/netif"
	"github.com/nodelocaldns/nodelocaldns/plugin/nodelocal/rules"
)

// systemHost is the real Host: netlink for the link, iptables-restore for
// the rules (or netlink, in nftables mode).
type systemHost struct {
	link  *netif.Manager
	rules *rules.Manager
}

// newSystemHost returns the real backends. It fails when a binary the rules
// need is missing, naming it, so the start fails before anything changes.
func newSystemHost(cfg Config) (Host, error) {
	spec := rules.Spec{Mode: cfg.Rules, Backend: cfg.Backend, LocalIPs: cfg.LocalIPs}
	if err := rules.Check(spec); err != nil {
		return nil, err
	}
	return systemHost{link: netif.New(), rules: rules.New()}, nil
}

func (h systemHost) EnsureLink(s netif.Spec) ([]string, error)  { return h.link.Ensure(s) }
func (h systemHost) RemoveLink(s netif.Spec) error              { return h.link.Remove(s) }
func (h systemHost) EnsureRules(s rules.Spec) ([]string, error) { return h.rules.Ensure(s) }
func (h systemHost) RemoveRules(s rules.Spec) error             { return h.rules.Remove(s) }
func (h systemHost) SocketMatch(s rules.Spec) error             { return h.rules.SocketMatch(s) }
