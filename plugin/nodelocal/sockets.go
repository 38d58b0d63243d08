package nodelocal

import (
	"fmt"
	"net/netip"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// ownSocket is one of this process's UDP sockets or TCP (or MPTCP) sockets,
// with the address it is bound to.
type ownSocket struct {
	fd     int    // one descriptor of the socket (the lowest)
	ino    uint64 // the socket's inode: one per socket, however many descriptors
	stream bool   // TCP, else UDP
	addr   netip.AddrPort
}

// matches reports whether the socket is bound to one of ports and to one of
// ips, or, with wildcard, to the unspecified address.
func (s ownSocket) matches(ips []netip.Addr, ports []int, wildcard bool) bool {
	port := int(s.addr.Port())
	for _, p := range ports {
		if p != port {
			continue
		}
		if wildcard && s.addr.Addr().IsUnspecified() {
			return true
		}
		for _, ip := range ips {
			if ip.WithZone("") == s.addr.Addr() {
				return true
			}
		}
	}
	return false
}

// accepts reports whether a TCP socket is a listener, not a connection.
func (s ownSocket) accepts() bool {
	l, err := unix.GetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	return err == nil && l != 0
}

// listening reports whether this process has, on every ip:port, a UDP
// socket and a listening TCP socket (a wildcard bind counts): its DNS
// listeners are open.
func listening(ips []netip.Addr, ports []int) bool {
	socks, err := ownSockets()
	if err != nil {
		return false
	}
	for _, ip := range ips {
		for _, p := range ports {
			udp, tcp := false, false
			for _, s := range socks {
				if !s.matches([]netip.Addr{ip}, []int{p}, true) {
					continue
				}
				if s.stream {
					tcp = tcp || s.accepts()
				} else {
					udp = true
				}
			}
			if !udp || !tcp {
				return false
			}
		}
	}
	return true
}

// ownSockets lists this process's IPv4 and IPv6 UDP and TCP sockets from
// /proc/self/fd, each once: a socket with several descriptors (a listener
// that a reload passed on with File(), or one the hitpath plugin reads) is
// one socket in its reuseport group, and steering counts sockets.
func ownSockets() ([]ownSocket, error) {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil, fmt.Errorf("list own sockets: %w", err)
	}
	var out []ownSocket
	seen := map[uint64]bool{}
	for _, e := range entries { // in descriptor order
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var st unix.Stat_t
		if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK || seen[st.Ino] {
			continue
		}
		typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
		if err != nil || (typ != unix.SOCK_DGRAM && typ != unix.SOCK_STREAM) {
			continue
		}
		if typ == unix.SOCK_DGRAM {
			if p, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL); err != nil || p != unix.IPPROTO_UDP {
				continue
			}
		}
		sa, err := unix.Getsockname(fd)
		if err != nil {
			continue
		}
		var ap netip.AddrPort
		switch a := sa.(type) {
		case *unix.SockaddrInet4:
			ap = netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
		case *unix.SockaddrInet6:
			ap = netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), uint16(a.Port))
		default:
			continue
		}
		seen[st.Ino] = true
		out = append(out, ownSocket{fd: fd, ino: st.Ino, stream: typ == unix.SOCK_STREAM, addr: ap})
	}
	return out, nil
}
