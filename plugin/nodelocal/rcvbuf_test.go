package nodelocal

import (
	"net"
	"net/netip"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// sockRcvBuf reads SO_RCVBUF of a socket (the kernel reports twice the size set).
func sockRcvBuf(t *testing.T, conn interface{ File() (*os.File, error) }) int {
	t.Helper()
	f, err := conn.File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	v, err := unix.GetsockoptInt(int(f.Fd()), unix.SOL_SOCKET, unix.SO_RCVBUF)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestRaiseRcvBuf: the DNS listeners' UDP sockets get the buffer, past
// net.core.rmem_max; other sockets, TCP on the same port included, keep theirs.
func TestRaiseRcvBuf(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("SO_RCVBUFFORCE needs root (CAP_NET_ADMIN)")
	}
	const size = 8 << 20
	// A UDP and a TCP listener on one port, as CoreDNS has them; the TCP
	// port may be taken by another test's socket: pick again then.
	var dns *net.UDPConn
	var tcp *net.TCPListener
	for try := 0; tcp == nil; try++ {
		u, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		tl, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: u.LocalAddr().(*net.UDPAddr).Port})
		if err != nil {
			u.Close()
			if try == 10 {
				t.Fatal(err)
			}
			continue
		}
		dns, tcp = u, tl
	}
	defer dns.Close()
	defer tcp.Close()
	port := dns.LocalAddr().(*net.UDPAddr).Port
	other, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	wild, err := net.ListenUDP("udp", &net.UDPAddr{})
	if err != nil {
		t.Fatal(err)
	}
	defer wild.Close()
	wildPort := wild.LocalAddr().(*net.UDPAddr).Port
	otherBefore, tcpBefore := sockRcvBuf(t, other), sockRcvBuf(t, tcp)
	if otherBefore >= 2*size {
		t.Fatalf("The kernel default %d is already above the test's size", otherBefore)
	}

	ips := []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("198.18.0.10")}
	n, err := raiseRcvBuf(ips, []int{port, wildPort}, size)
	if err != nil || n != 2 {
		t.Fatalf("raiseRcvBuf raised %d sockets (%v), want 2: the listener and the wildcard socket", n, err)
	}
	if got := sockRcvBuf(t, dns); got < 2*size {
		t.Errorf("Listener's receive buffer is %d, want %d", got, 2*size)
	}
	if got := sockRcvBuf(t, wild); got < 2*size {
		t.Errorf("Wildcard listener's receive buffer is %d, want %d", got, 2*size)
	}
	if got := sockRcvBuf(t, other); got != otherBefore {
		t.Errorf("A UDP socket on another port changed from %d to %d", otherBefore, got)
	}
	if got := sockRcvBuf(t, tcp); got != tcpBefore {
		t.Errorf("The TCP listener changed from %d to %d", tcpBefore, got)
	}
	// Reconcile calls it again: nothing left to do.
	if n, err := raiseRcvBuf(ips, []int{port, wildPort}, size); err != nil || n != 0 {
		t.Errorf("Second call raised %d sockets (%v), want 0", n, err)
	}
}
