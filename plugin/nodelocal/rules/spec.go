// Package rules renders and applies the packet filter rules a node cache
// needs: NOTRACK for DNS and health-check traffic to and from the local IPs,
// so kube-proxy's DNAT and conntrack stay out of the path, and ACCEPT rules so
// host firewalls let it through.
package rules

import (
	"errors"
	"net/netip"
)

// Mode selects the packet filter.
type Mode string

// Modes the `rules` setting accepts.
const (
	ModeIptables Mode = "iptables"
	ModeNftables Mode = "nftables"
	ModeNone     Mode = "none"
)

// Backend selects the iptables flavour in ModeIptables.
type Backend string

// Backends of iptables; BackendAuto picks the one the node's kube-proxy uses.
const (
	BackendAuto   Backend = "auto"
	BackendLegacy Backend = "legacy"
	BackendNft    Backend = "nft"
)

// Spec is the wanted rule set.
type Spec struct {
	Mode    Mode
	Backend Backend
	// LocalIPs are the addresses the cache answers on; IPv6 ones go to ip6tables.
	LocalIPs []netip.Addr
	// DNSPorts are the ports the cache serves DNS on (usually just 53).
	DNSPorts []int
	// HealthPort is the TCP port of the health check, whose traffic also skips conntrack.
	HealthPort int
}

// ErrLocked marks a failure to get the xtables lock.
var ErrLocked = errors.New("xtables lock")
