package hitpath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"time"
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
// It works on a descriptor of its own of CoreDNS's socket (the same socket:
// nodelocal's steering counts sockets by inode, so a second descriptor is
// not a second member of the reuseport group), held by a net.UDPConn so
// that waiting is Go's netpoller's: a goroutine parked in the netpoller
// holds no thread and no P. (Waiting in a blocking poll(2) held the only P
// of a one-CPU server until the runtime's sysmon took it back, up to 10 ms
// later, while the chain's goroutines, the queries it does not answer
// itself, waited for it: under 200 glibc clients their median lookup took
// twice the chain's alone.)
type batchIO struct {
	conn *net.UDPConn
	rc   syscall.RawConn

	stopped atomic.Bool

	bufs  [][]byte
	names []unix.RawSockaddrInet6 // room for either family
	iov   []unix.Iovec
	hdrs  []unix.Mmsghdr

	oiov  []unix.Iovec
	ohdrs []unix.Mmsghdr
}

// newBatchIO serves the socket of descriptor fd (CoreDNS's; it stays open
// and CoreDNS's) through a descriptor of its own.
func newBatchIO(fd, n, size int) (*batchIO, error) {
	d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("duplicate socket descriptor %d: %w", fd, err)
	}
	f := os.NewFile(uintptr(d), "hitpath")
	pc, err := net.FilePacketConn(f) // a descriptor of its own again, in the netpoller
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("use socket descriptor %d: %w", fd, err)
	}
	conn, ok := pc.(*net.UDPConn)
	if !ok {
		pc.Close()
		return nil, fmt.Errorf("socket descriptor %d is not a UDP socket", fd)
	}
	rc, err := conn.SyscallConn()
	if err != nil {
		conn.Close()
		return nil, err
	}
	b := &batchIO{conn: conn, rc: rc, bufs: make([][]byte, n), names: make([]unix.RawSockaddrInet6, n),
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
	for i := range b.hdrs {
		b.hdrs[i].Hdr.Namelen = unix.SizeofSockaddrInet6
		b.hdrs[i].Hdr.Flags = 0
		b.hdrs[i].Len = 0
	}
	for {
		if b.stopped.Load() {
			return 0, errStopped // also under a load that never lets it wait
		}
		var n int
		var errno syscall.Errno
		err := b.rc.Read(func(fd uintptr) bool {
			for {
				r, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.hdrs[0])),
					uintptr(len(b.hdrs)), unix.MSG_DONTWAIT, 0, 0)
				switch e {
				case unix.EINTR:
					continue
				case unix.EAGAIN:
					return false // wait in the netpoller
				}
				n, errno = int(r), e
				return true
			}
		})
		switch {
		case err == nil && errno == 0:
			return n, nil
		case err == nil:
			return 0, errno
		case b.stopped.Load():
			return 0, errStopped
		case errors.Is(err, net.ErrClosed):
			return 0, errClosed
		case errors.Is(err, os.ErrDeadlineExceeded):
			continue // not stopped: a deadline this code does not set
		default:
			return 0, err
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
	sent := 0
	err := b.rc.Write(func(fd uintptr) bool {
		for sent < len(replies) {
			n, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&b.ohdrs[sent])),
				uintptr(len(replies)-sent), unix.MSG_DONTWAIT, 0, 0)
			switch e {
			case 0:
				sent += int(n)
			case unix.EINTR:
			case unix.EAGAIN:
				return false // wait in the netpoller for room
			default:
				// One bad destination fails the call: skip that reply.
				sent++
			}
		}
		return true
	})
	return err
}

// stop makes read return errStopped, waking its wait. Writing goes on:
// the replies to queries already read still go out.
func (b *batchIO) stop() {
	b.stopped.Store(true)
	b.conn.SetReadDeadline(time.Now())
}

// close releases the listener's descriptor; CoreDNS's stays.
func (b *batchIO) close() { b.conn.Close() }

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
	if b.conn.LocalAddr().(*net.UDPAddr).IP.To4() != nil {
		ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	_, err := b.conn.WriteToUDPAddrPort(p, ap)
	return err
}
