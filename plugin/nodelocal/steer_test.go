package nodelocal

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var reuseport = net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}); err != nil {
		return err
	}
	return serr
}}

func rawFD(t *testing.T, c syscall.Conn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var fd int
	rc.Control(func(f uintptr) { fd = int(f) })
	return fd
}

// udpGroup opens n sockets sharing addr (port 0: a free one).
func udpGroup(t *testing.T, addr string, n int) []*net.UDPConn {
	t.Helper()
	var out []*net.UDPConn
	for range n {
		pc, err := reuseport.ListenPacket(context.Background(), "udp4", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pc.Close() })
		out = append(out, pc.(*net.UDPConn))
		addr = pc.LocalAddr().String()
	}
	return out
}

// sendFromFreshPorts sends n datagrams to addr, each from a new socket,
// as resolvers do.
func sendFromFreshPorts(t *testing.T, addr string, n int) {
	t.Helper()
	for i := range n {
		c, err := net.Dial("udp4", addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "q%d", i)
		c.Close()
	}
}

// drain counts what each socket received.
func drain(socks []*net.UDPConn) []int {
	got := make([]int, len(socks))
	buf := make([]byte, 64)
	for i, s := range socks {
		for {
			s.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			if _, err := s.Read(buf); err != nil {
				break
			}
			got[i]++
		}
	}
	return got
}

// TestSteerToNewest: once the second instance's sockets join the group and
// attach the program, every new datagram goes to them and none to the old
// instance's, whose queue stays empty; when they leave, the old sockets get
// the traffic again.
func TestSteerToNewest(t *testing.T) {
	const sent = 64
	for _, k := range []int{1, 2} {
		t.Run(fmt.Sprintf("%d sockets per instance", k), func(t *testing.T) {
			old := udpGroup(t, "127.0.0.1:0", k)
			addr := old[0].LocalAddr().String()
			sendFromFreshPorts(t, addr, sent)
			if got := drain(old); sum(got) != sent {
				t.Fatalf("The old instance alone with the program received %v of %d", got, sent)
			}
			if err := attachSteer(fds(t, old)); err != nil {
				t.Fatal(err)
			}
			sendFromFreshPorts(t, addr, sent)
			if got := drain(old); sum(got) != sent {
				t.Fatalf("The old instance alone with the program received %v of %d", got, sent)
			}

			next := udpGroup(t, addr, k)
			if err := attachSteer(fds(t, next)); err != nil {
				t.Fatal(err)
			}
			sendFromFreshPorts(t, addr, sent)
			gotOld, gotNew := drain(old), drain(next)
			if sum(gotOld) != 0 || sum(gotNew) != sent {
				t.Errorf("With the new instance in the group: old sockets got %v, new ones %v; want all %d on the new ones", gotOld, gotNew, sent)
			}

			for _, s := range next {
				s.Close()
			}
			sendFromFreshPorts(t, addr, sent)
			if got := drain(old); sum(got) != sent {
				t.Errorf("After the new instance left the old sockets got %v of %d", got, sent)
			}
		})
	}
}

// TestSteerTCP: new connections go to the new listener; the old one's
// accept queue stays empty. Plain TCP: Go's default MPTCP listeners refuse
// the program (TestOwnSockets).
func TestSteerTCP(t *testing.T) {
	reuseport := reuseport
	reuseport.SetMultipathTCP(false)
	old, err := reuseport.Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	addr := old.Addr().String()
	next, err := reuseport.Listen(context.Background(), "tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	if err := attachSteer([]int{rawFD(t, next.(*net.TCPListener))}); err != nil {
		t.Fatal(err)
	}
	const conns = 32
	for range conns {
		c, err := net.Dial("tcp4", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	count := func(l net.Listener) int {
		n := 0
		for {
			l.(*net.TCPListener).SetDeadline(time.Now().Add(50 * time.Millisecond))
			c, err := l.Accept()
			if err != nil {
				return n
			}
			c.Close()
			n++
		}
	}
	if o, n := count(old), count(next); o != 0 || n != conns {
		t.Errorf("Old listener accepted %d, new one %d; want all %d on the new one", o, n, conns)
	}
}

// TestOwnSockets finds this process's UDP socket (once, though it has two
// descriptors) and TCP listener on an address, and not a TCP connection on
// it.
func TestOwnSockets(t *testing.T) {
	u := udpGroup(t, "127.0.0.1:0", 1)[0]
	port := u.LocalAddr().(*net.UDPAddr).Port
	l, err := reuseport.Listen(context.Background(), "tcp4", u.LocalAddr().String())
	if err != nil {
		t.Skipf("Skipping: TCP port %d taken: %v", port, err)
	}
	defer l.Close()
	c, err := net.Dial("tcp4", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	a, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()

	// A second descriptor of the UDP socket (as a reload's File() or the
	// hitpath plugin holds) is the same socket: one slot in the group.
	dup, err := unix.Dup(rawFD(t, u))
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dup)

	lo := netip.MustParseAddr("127.0.0.1")
	got := steerGroups([]netip.Addr{lo}, []int{port})
	ap := netip.AddrPortFrom(lo, uint16(port))
	if len(got) != 2 || len(got[sockGroup{stream: false, addr: ap}]) != 1 || len(got[sockGroup{stream: true, addr: ap}]) != 1 {
		t.Errorf("steerGroups = %v, want one UDP socket and one TCP listener on %s", got, ap)
	}
	// The UDP group is steered; Go's TCP listener is MPTCP by default,
	// which refuses the program and is skipped.
	if n, err := steerToSelf([]netip.Addr{lo}, []int{port}); err != nil || n < 1 {
		t.Errorf("steerToSelf = %d, %v; want the UDP group steered", n, err)
	}
}

func fds(t *testing.T, socks []*net.UDPConn) []int {
	var out []int
	for _, s := range socks {
		out = append(out, rawFD(t, s))
	}
	return out
}

func sum(v []int) int {
	n := 0
	for _, x := range v {
		n += x
	}
	return n
}
