// Package rules renders and applies the packet filter rules a node cache
// needs: NOTRACK for DNS and health-check traffic to and from the local IPs,
// so kube-proxy's DNAT and conntrack stay out of the path, and ACCEPT rules so
// host firewalls let it through.
//
// The rules come from one model (Rule, Chain, Table) that renders to
// iptables-restore text and compiles to nftables expressions. iptables is
// read and written through a Runner (iptables-save / iptables-restore
// --noflush), so the compare-and-repair logic runs against a fake in tests.
//
// # Fail-open (Spec.Guard)
//
// With Guard, a pod's DNS packet is NOTRACKed only while a local socket is
// bound to its destination address and port (iptables `-m socket`, nft
// `socket wildcard 0`; a socket bound to the wildcard address does not
// count). When the last cache socket closes, whatever killed the process,
// the kernel stops diverting: packets are tracked again and take the path
// they would take without a cache, kube-proxy's DNAT for the kube-dns IP, or
// the standing DNAT to Spec.Upstream for Spec.Fallback addresses (which only
// packets no socket takes reach, as NOTRACKed packets skip the nat table).
//
// Where the standing DNAT lands: a DNAT ends NAT for the packet (the first
// binding in a hook wins), so kube-proxy's own DNAT of the ClusterIP no
// longer happens. In ModeIptables it reaches a CoreDNS pod when the node
// holds the ClusterIP (IPVS mode), and when kube-proxy runs in iptables
// mode on the same backend: the rule then jumps to kube-proxy's KUBE-SVC
// chain of the Service instead (which kube-proxy then cannot delete while
// the rule stands). With kube-proxy in nftables mode no iptables rule can
// reach its DNAT: use ModeNftables there. ModeNftables first rewrites the
// destination of a new connection to the ClusterIP in place (a mangle
// chain, after conntrack has recorded the original destination, before
// any DNAT), so kube-proxy's DNAT, in any mode, takes it like a query to
// the ClusterIP; its own DNAT, after kube-proxy's, applies only where
// kube-proxy made none (IPVS mode). Conntrack undoes the NAT on the reply,
// which comes back from the address the pod asked.
//
// nft's `socket wildcard` answers only for full sockets, so ModeNftables
// guards TCP with `socket transparent 0` (any socket: a connection's
// request and TIME_WAIT sockets too; a wildcard listener counts as well).
//
// What stays uncovered: traffic the node itself sends (hostNetwork pods,
// kubelet) goes through raw OUTPUT, where this guard cannot work. xt_socket
// is refused outside PREROUTING and INPUT ("Invalid argument" from both
// iptables backends), and nft's `socket` expression, accepted in the output
// hook, looks at the sending socket (a connected UDP client is not wildcard
// bound), so it matches whether or not a cache socket exists. The OUTPUT
// NOTRACK rules therefore stay unguarded: with no cache socket, a node-local
// query to a local IP is refused at once (ICMP port unreachable for UDP, a
// reset for TCP) rather than redirected; resolvers move on to the next
// nameserver, if they have one.
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
	// MoreHealthPorts are further health ports, of other instances on the
	// node that share these rules (a surge rollout that changes the port).
	MoreHealthPorts []int
	// Guard makes the NOTRACK rules for pod traffic match only while a
	// local socket is bound to the destination (see the package doc).
	Guard bool
	// Fallback are the local IPs with no path of their own once no cache
	// socket takes them (169.254.20.10; the kube-dns IP in IPVS mode). With
	// Guard and a valid Upstream of their family, DNS to them that no socket
	// takes is DNATed to Upstream port 53.
	Fallback []netip.Addr
	// Upstream is the ClusterIP of the kube-dns-upstream Service.
	Upstream netip.Addr
	// Drain leaves out the raw PREROUTING NOTRACK rules of the local IPs
	// that have another path (kube-proxy's, or a standing fallback), so
	// that a stopping cache gets no new pod queries while it answers those
	// it holds; everything else stays.
	Drain bool
}

// ErrLocked marks a failure to get the xtables lock.
var ErrLocked = errors.New("xtables lock")

// ErrNoSocketMatch marks a kernel without the socket match (xt_socket or
// nft_socket): Spec.Guard cannot be honoured there.
var ErrNoSocketMatch = errors.New("kernel has no socket match")
