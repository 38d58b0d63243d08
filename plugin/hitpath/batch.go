package hitpath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// errStopped is what a read returns once the listener is told to stop,
// errClosed when the descriptor was closed under it.
var (
	errStopped = errors.New("listener stopped")
	errClosed  = errors.New("socket descriptor closed")
)

// batchIO reads and writes one UDP socket in batches (recvmmsg, sendmmsg).
// It works on CoreDNS's own descriptor of the socket, the one CoreDNS's
// server got, and never closes it: a descriptor of its own would be one
// more socket for whoever counts a process's sockets on an address (the
// reuseport steering of nodelocal does). Waiting is a poll on the socket
// and on an eventfd that stop writes to. (Waiting in Go's netpoller on an
// epoll set holding the socket measured the same and once left a batch of
// queries unanswered for dnsperf's 5 s timeout: not kept.)
type batchIO struct {
	fd   int
	wake int

	stopped atomic.Bool

	bufs  [][]byte
	names []unix.RawSockaddrInet6 // room for either family
	iov   []unix.Iovec
	hdrs  []unix.Mmsghdr

	oiov  []unix.Iovec
	ohdrs []unix.Mmsghdr
}

func newBatchIO(fd, n, size int) (*batchIO, error) {
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("make eventfd: %w", err)
	}
	b := &batchIO{fd: fd, wake: wake, bufs: make([][]byte, n), names: make([]unix.RawSockaddrInet6, n),
		iov: make([]unix.Iovec, n), hdrs: make([]unix.Mmsghdr, n), oiov: make([]unix.Iovec, n), ohdrs: make([]unix.Mmsghdr, n)}
	for i := range n {
		b.bufs[i] = make([]byte, size)
		b.iov[i].Base = &b.bufs[i][0]
		b.iov[i].SetLen(size)
		b.hdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&b.names[i]))
		b.hdrs[i].Hdr.Iov = &b.iov[i]
		b.hdrs[i].Hdr.SetIovlen(1)
	}
	return b, nil
}

// read waits for queries and reads up to a batch of them. A query i is
// b.bufs[i][:b.hdrs[i].Len], from b.names[i]; b.truncated(i) says it was
// longer than the buffer.
func (b *batchIO) read() (int, error) {
	if b.stopped.Load() {
		return 0, errStopped // also under a load that never lets it wait
	}
	for i := range b.hdrs {
		b.hdrs[i].Hdr.Namelen = unix.SizeofSockaddrInet6
		b.hdrs[i].Hdr.Flags = 0
		b.hdrs[i].Len = 0
	}
	for {
		n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(b.fd), uintptr(unsafe.Pointer(&b.hdrs[0])),
			uintptr(len(b.hdrs)), unix.MSG_DONTWAIT, 0, 0)
		switch errno {
		case 0:
			return int(n), nil
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			if err := b.wait(unix.POLLIN); err != nil {
				return 0, err
			}
		case unix.EBADF:
			return 0, errClosed
		default:
			return 0, errno
		}
	}
}

func (b *batchIO) truncated(i int) bool { return b.hdrs[i].Hdr.Flags&unix.MSG_TRUNC != 0 }

// write sends replies[k] to the sender of query from[k], for every k.
func (b *batchIO) write(replies [][]byte, from []int) error {
	for k, r := range replies {
		b.oiov[k].Base = &r[0]
		b.oiov[k].SetLen(len(r))
		b.ohdrs[k].Hdr.Name = b.hdrs[from[k]].Hdr.Name
		b.ohdrs[k].Hdr.Namelen = b.hdrs[from[k]].Hdr.Namelen
		b.ohdrs[k].Hdr.Iov = &b.oiov[k]
		b.ohdrs[k].Hdr.SetIovlen(1)
	}
	for sent := 0; sent < len(replies); {
		n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(b.fd), uintptr(unsafe.Pointer(&b.ohdrs[sent])),
			uintptr(len(replies)-sent), unix.MSG_DONTWAIT, 0, 0)
		switch errno {
		case 0:
			sent += int(n)
		case unix.EINTR:
		case unix.EAGAIN:
			if err := b.wait(unix.POLLOUT); err != nil {
				return err
			}
		default:
			// One bad destination fails the call: skip that reply.
			sent++
		}
	}
	return nil
}

// wait blocks until the socket has the events ev or the listener stops.
func (b *batchIO) wait(ev int16) error {
	fds := []unix.PollFd{{Fd: int32(b.fd), Events: ev}, {Fd: int32(b.wake), Events: unix.POLLIN}}
	for {
		_, err := unix.Poll(fds, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("poll UDP socket: %w", err)
		}
		if fds[1].Revents != 0 {
			return errStopped
		}
		if fds[0].Revents&unix.POLLNVAL != 0 {
			return errClosed
		}
		return nil
	}
}

// stop makes read and write return errStopped.
func (b *batchIO) stop() {
	b.stopped.Store(true)
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	unix.Write(b.wake, one[:])
}

// close releases the eventfd; the socket stays CoreDNS's.
func (b *batchIO) close() { unix.Close(b.wake) }

// addr returns the sender of query i.
func (b *batchIO) addr(i int) *net.UDPAddr {
	n := &b.names[i]
	switch n.Family {
	case unix.AF_INET:
		a := (*unix.RawSockaddrInet4)(unsafe.Pointer(n))
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&a.Port))[:])
		return net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.AddrFrom4(a.Addr), port))
	case unix.AF_INET6:
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&n.Port))[:])
		return net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.AddrFrom16(n.Addr), port))
	}
	return nil
}

// sendTo sends one reply, for the queries the chain answers.
func (b *batchIO) sendTo(p []byte, to *net.UDPAddr) error {
	ap := to.AddrPort()
	var sa unix.Sockaddr
	if ap.Addr().Is4() || ap.Addr().Is4In6() {
		sa = &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().Unmap().As4()}
	} else {
		sa = &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	}
	for range 2 {
		err := unix.Sendto(b.fd, p, unix.MSG_DONTWAIT, sa)
		if err != unix.EAGAIN {
			return err
		}
		if err := b.wait(unix.POLLOUT); err != nil {
			return err
		}
	}
	return unix.EAGAIN
}
