package nodelocal

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// listening reports whether every ip:port has a UDP socket and a listening
// TCP socket in this network namespace (a wildcard bind counts). It reads
// /proc/net, as ss does; tests replace it.
var listening = func(ips []netip.Addr, ports []int) bool {
	udp := readSockets([]string{"/proc/net/udp", "/proc/net/udp6"}, "07")
	tcp := readSockets([]string{"/proc/net/tcp", "/proc/net/tcp6"}, "0A")
	for _, ip := range ips {
		for _, p := range ports {
			if !hasSocket(udp, ip, p) || !hasSocket(tcp, ip, p) {
				return false
			}
		}
	}
	return true
}

func hasSocket(socks map[netip.AddrPort]bool, ip netip.Addr, port int) bool {
	ip = ip.WithZone("")
	for _, any := range []netip.Addr{ip, netip.IPv4Unspecified(), netip.IPv6Unspecified()} {
		if socks[netip.AddrPortFrom(any, uint16(port))] {
			return true
		}
	}
	return false
}

// readSockets returns the local addresses of the sockets in state st
// ("07" unconnected UDP, "0A" listening TCP) in /proc/net files.
func readSockets(files []string, st string) map[netip.AddrPort]bool {
	out := map[netip.AddrPort]bool{}
	for _, file := range files {
		f, err := os.Open(file)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 4 || fields[3] != st {
				continue
			}
			if ap, ok := parseProcAddr(fields[1]); ok {
				out[ap] = true
			}
		}
		f.Close()
	}
	return out
}

// parseProcAddr reads /proc/net's "HEXADDR:HEXPORT": the address is 32-bit
// words in host byte order (little endian on the machines we run on).
func parseProcAddr(s string) (netip.AddrPort, bool) {
	a, p, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, false
	}
	raw, err := hex.DecodeString(a)
	port, perr := strconv.ParseUint(p, 16, 16)
	if err != nil || perr != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.AddrPort{}, false
	}
	b := make([]byte, len(raw))
	for i := 0; i < len(raw); i += 4 {
		binary.BigEndian.PutUint32(b[i:], binary.LittleEndian.Uint32(raw[i:]))
	}
	ip, _ := netip.AddrFromSlice(b)
	return netip.AddrPortFrom(ip.Unmap(), uint16(port)), true
}
