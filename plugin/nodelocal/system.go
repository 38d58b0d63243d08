package nodelocal

import (
	"net/netip"
)

// System is every effect the plugin has on the node, in one seam held by
// the owner: the real node in production (realSystem), a fake in tests.
type System interface {
	// Host returns the link and rules backend for cfg. It fails, naming
	// what is missing (a binary the rules need), before anything changes.
	Host(cfg Config) (Host, error)
	// Listening reports whether this process has, on every ip:port, a UDP
	// socket and a listening TCP socket (a wildcard bind counts).
	Listening(ips []netip.Addr, ports []int) bool
	// Steer makes new traffic on this process's sockets on ips and ports
	// go to the sockets that joined their reuseport group last, its own;
	// it returns how many groups it steered.
	Steer(ips []netip.Addr, ports []int) (int, error)
	// RaiseRcvBuf gives this process's UDP sockets on ips (or a wildcard)
	// and ports a receive buffer of at least size bytes; it returns how
	// many it raised.
	RaiseRcvBuf(ips []netip.Addr, ports []int, size int) (int, error)
	// Announce makes this process known, in dir, to the other instances
	// on the node.
	Announce(dir string) (Presence, error)
	// Hold tells a supervising parent what this process holds on the
	// node, so that it can undo it when the process dies without doing
	// so (supervise.go).
	Hold(holding)
}

// Presence is this process's place among the instances on the node.
type Presence interface {
	// Publish records what this instance needs on the node, for the others.
	Publish(hostSpec) error
	// Others returns what each other live instance on the node needs; nil
	// for one whose needs are unknown.
	Others() ([]*hostSpec, error)
	// Departed returns, once, the needs of instances found dead since the
	// last call: killed without clean-up, they left what they had.
	Departed() []*hostSpec
	// Lock takes the lock the instances on the node share while one of
	// them changes the node, and returns its release; the release stays
	// valid after Leave.
	Lock() (func(), error)
	// Leave ends the presence, then returns what the instances still live
	// need, as Others does.
	Leave() ([]*hostSpec, error)
}

// realSystem is the node itself: netlink, iptables or nftables, this
// process's sockets and lock files in the state directory.
type realSystem struct{}

func (realSystem) Host(cfg Config) (Host, error)                    { return newSystemHost(cfg) }
func (realSystem) Listening(ips []netip.Addr, ports []int) bool     { return listening(ips, ports) }
func (realSystem) Steer(ips []netip.Addr, ports []int) (int, error) { return steerToSelf(ips, ports) }
func (realSystem) RaiseRcvBuf(ips []netip.Addr, ports []int, size int) (int, error) {
	return raiseRcvBuf(ips, ports, size)
}
func (realSystem) Announce(dir string) (Presence, error) { return announce(dir) }
func (realSystem) Hold(h holding)                        { tellSupervisor(h) }
