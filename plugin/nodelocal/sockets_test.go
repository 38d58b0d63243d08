package nodelocal

import (
	"net"
	"net/netip"
	"strconv"
	"testing"
)

func TestParseProcAddr(t *testing.T) {
	tests := []struct{ in, want string }{
		{"0A14FEA9:0035", "169.254.20.10:53"},
		{"00000000:1F90", "0.0.0.0:8080"},
		{"02000120000000000000000010000000:0035", "[2001:2::10]:53"},
		{"0000000000000000FFFF00000A14FEA9:0035", "169.254.20.10:53"},
	}
	for _, tc := range tests {
		got, ok := parseProcAddr(tc.in)
		if !ok || got.String() != tc.want {
			t.Errorf("parseProcAddr(%q) = %v %v, want %s", tc.in, got, ok, tc.want)
		}
	}
}

// TestListeningSeesRealSockets: the /proc reader finds sockets this process opens.
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
