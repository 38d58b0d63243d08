package nodelocal

import (
	"errors"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// defaultRcvBuf is the receive buffer the plugin gives the DNS listeners'
// UDP sockets. The kernel's default (net.core.rmem_default, 208 KiB) holds a
// couple of hundred queries: a burst from many pods overflows it, the kernel
// drops the queries (UdpRcvbufErrors) and glibc clients wait their 5 s
// timeout. 4 MiB holds thousands; the memory is only used while queries wait.
const defaultRcvBuf = 4 << 20

// raiseRcvBuf sets the receive buffer of this process's UDP sockets bound to
// one of ips (or a wildcard) on one of ports to at least size bytes, with
// SO_RCVBUFFORCE (CAP_NET_ADMIN, which the plugin needs anyway) and, without
// that capability, SO_RCVBUF up to net.core.rmem_max. It returns how many
// sockets it raised; sockets already at size are left alone, so it is cheap
// to call on every reconcile and catches listeners a reload opened.
func raiseRcvBuf(ips []netip.Addr, ports []int, size int) (int, error) {
	socks, err := ownSockets()
	if err != nil {
		return 0, err
	}
	raised := 0
	var errs []error
	for _, s := range socks {
		if s.stream || !s.matches(ips, ports, true) {
			continue
		}
		fd := s.fd
		// The kernel reports twice the size set (it counts its overhead).
		if cur, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF); err == nil && cur >= 2*size {
			continue
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size); err != nil {
			if !errors.Is(err, unix.EPERM) {
				errs = append(errs, fmt.Errorf("set receive buffer of socket %d: %w", fd, err))
				continue
			}
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, size); err != nil {
				errs = append(errs, fmt.Errorf("set receive buffer of socket %d: %w", fd, err))
				continue
			}
		}
		raised++
	}
	return raised, errors.Join(errs...)
}
