package nodelocal

import (
	"net"
	"net/netip"
	"strconv"
	"testing"
)

// TestListeningSeesRealSockets: the listeners this process opens are seen.
func TestListeningSeesRealSockets(t *testing.T) {
	u, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	port := u.LocalAddr().(*net.UDPAddr).Port
	lo := netip.MustParseAddr("127.0.0.1")
	if listening([]netip.Addr{lo}, []int{port}) {
		t.Error("Listening with no TCP listener on the port")
	}
	l, err := net.Listen("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Skipf("Skipping: TCP port %d taken: %v", port, err)
	}
	defer l.Close()
	if !listening([]netip.Addr{lo}, []int{port}) {
		t.Error("UDP and TCP sockets on 127.0.0.1 not seen")
	}
}
