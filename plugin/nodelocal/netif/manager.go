package netif

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	clog "github.com/coredns/coredns/plugin/pkg/log"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

var log = clog.NewWithPlugin("nodelocal")

// bridgeWarning makes the dummy-to-bridge fallback warn once per process.
var bridgeWarning sync.Once

// Manager keeps links and their addresses through netlink.
type Manager struct {
	h *netlink.Handle
}

// New returns a Manager that works in the network namespace of the calling
// thread at the time of each call (netlink opens a socket per request).
func New() *Manager { return &Manager{h: &netlink.Handle{}} }

// Ensure makes the link exist (a dummy, or a port-less bridge where the
// kernel has no dummy driver), be up and hold every address of spec as a
// host prefix. It returns one line per change made.
func (m *Manager) Ensure(spec Spec) ([]string, error) {
	var changes []string
	link, err := m.h.LinkByName(spec.Name)
	switch {
	case isNotFound(err):
		link, err = m.create(spec.Name)
		if err != nil {
			return nil, err
		}
		changes = append(changes, fmt.Sprintf("link %s created (%s)", spec.Name, link.Type()))
	case err != nil:
		return nil, fmt.Errorf("%w: get link %s: %w", ErrCheck, spec.Name, err)
	default:
		if t := link.Type(); t != "dummy" && t != "bridge" {
			return nil, fmt.Errorf("link %s exists with type %q: only a dummy or a bridge link can hold the local IPs; remove it or name another interface", spec.Name, t)
		}
	}

	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := m.h.LinkSetUp(link); err != nil {
			return changes, opErr(fmt.Sprintf("set link %s up", spec.Name), err)
		}
		changes = append(changes, fmt.Sprintf("link %s set up", spec.Name))
	}

	have, err := m.h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return changes, fmt.Errorf("%w: list addresses of %s: %w", ErrCheck, spec.Name, err)
	}
	for _, a := range spec.Addrs {
		p := hostPrefix(a)
		cur := findAddr(have, p)
		if cur != nil && cur.Flags&unix.IFA_F_TENTATIVE == 0 && cur.Flags&unix.IFA_F_DADFAILED == 0 {
			continue
		}
		verb := "added to"
		if cur != nil {
			// Someone added it with duplicate address detection: it is not
			// usable until DAD ends (or ever, if DAD failed). Put ours back.
			if err := m.h.AddrDel(link, cur); err != nil && !isGone(err) {
				return changes, opErr(fmt.Sprintf("delete tentative address %s from %s", p, spec.Name), err)
			}
			verb = "re-added without DAD to"
		}
		if err := m.h.AddrAdd(link, nlAddr(p)); err != nil && !errors.Is(err, unix.EEXIST) {
			return changes, opErr(fmt.Sprintf("add address %s to %s", p, spec.Name), err)
		}
		changes = append(changes, fmt.Sprintf("address %s %s %s", p, verb, spec.Name))
	}
	return changes, nil
}

// create adds a dummy link, or a bridge without ports where the kernel has
// no dummy driver: both hold local addresses the same way.
func (m *Manager) create(name string) (netlink.Link, error) {
	attrs := netlink.NewLinkAttrs()
	attrs.Name = name
	err := m.h.LinkAdd(&netlink.Dummy{LinkAttrs: attrs})
	if errors.Is(err, unix.EOPNOTSUPP) {
		bridgeWarning.Do(func() {
			log.Warningf("The kernel has no dummy link driver (operation not supported): link %s is a bridge without ports instead", name)
		})
		err = m.h.LinkAdd(&netlink.Bridge{LinkAttrs: attrs})
	}
	if err != nil {
		return nil, opErr("create link "+name, err)
	}
	link, err := m.h.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("%w: get link %s after creating it: %w", ErrCheck, name, err)
	}
	return link, nil
}

// Remove takes spec's addresses off the link, then deletes the link when it
// holds no other address (IPv6 link-local ones don't count) and, for a
// bridge, has no ports. A missing link or address is not an error.
func (m *Manager) Remove(spec Spec) error {
	link, err := m.h.LinkByName(spec.Name)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w: get link %s: %w", ErrCheck, spec.Name, err)
	}
	for _, a := range spec.Addrs {
		p := hostPrefix(a)
		if err := m.h.AddrDel(link, nlAddr(p)); err != nil && !isGone(err) {
			return opErr(fmt.Sprintf("delete address %s from %s", p, spec.Name), err)
		}
	}
	if t := link.Type(); t != "dummy" && t != "bridge" {
		return nil // not a link this plugin makes: leave it
	}
	have, err := m.h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("%w: list addresses of %s: %w", ErrCheck, spec.Name, err)
	}
	for _, a := range have {
		if !a.IP.IsLinkLocalUnicast() || a.IP.To4() != nil {
			return nil // a foreign address: the link is not only ours
		}
	}
	if link.Type() == "bridge" {
		links, err := m.h.LinkList()
		if err != nil {
			return fmt.Errorf("%w: list links: %w", ErrCheck, err)
		}
		for _, l := range links {
			if l.Attrs().MasterIndex == link.Attrs().Index {
				return nil // a bridge with ports is someone's network
			}
		}
	}
	if err := m.h.LinkDel(link); err != nil && !isNotFound(err) && !errors.Is(err, unix.ENODEV) {
		return opErr("delete link "+spec.Name, err)
	}
	return nil
}

func hostPrefix(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen())
}

func nlAddr(p netip.Prefix) *netlink.Addr {
	a := &netlink.Addr{IPNet: &net.IPNet{
		IP:   net.IP(p.Addr().AsSlice()),
		Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen()),
	}}
	if p.Addr().Is6() {
		// Usable at once: no duplicate address detection delay.
		a.Flags = unix.IFA_F_NODAD
	}
	return a
}

// findAddr returns the address of have that is exactly p, or nil.
func findAddr(have []netlink.Addr, p netip.Prefix) *netlink.Addr {
	for i := range have {
		ip, ok := netip.AddrFromSlice(have[i].IP)
		if !ok || ip.Unmap() != p.Addr() {
			continue
		}
		if ones, _ := have[i].Mask.Size(); ones == p.Bits() {
			return &have[i]
		}
	}
	return nil
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf)
}

// isGone is true for errors deleting an address that is not there.
func isGone(err error) bool {
	return errors.Is(err, unix.EADDRNOTAVAIL) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENODEV)
}

// opErr wraps err with the operation, and says what is missing on EPERM.
func opErr(op string, err error) error {
	if errors.Is(err, unix.EPERM) {
		err = permError{err}
	}
	return fmt.Errorf("%s: %w", op, err)
}

// permError says which capability is missing; errors.Is(err, unix.EPERM) holds.
type permError struct{ err error }

func (e permError) Error() string { return "operation not permitted: need CAP_NET_ADMIN" }
func (e permError) Unwrap() error { return e.err }
