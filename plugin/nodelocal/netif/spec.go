// Package netif keeps the node-local interface: a link that holds the cache's
// local IPs as host addresses (/32, /128) so CoreDNS can bind to them.
package netif

import (
	"errors"
	"net/netip"
)

// DefaultName is the link name node-cache uses and this plugin defaults to.
const DefaultName = "nodelocaldns"

// Spec is the wanted state of the interface.
type Spec struct {
	// Name is the link name (at most 15 bytes).
	Name string
	// Addrs are the local IPs the link must hold; each is added as a host
	// prefix. Other addresses on the link are never touched.
	Addrs []netip.Addr
}

// ErrCheck marks failures to read the link's state (as opposed to changing it).
var ErrCheck = errors.New("check interface")
