// Command benchresponder is the ceiling of `make bench`: the least a Go DNS
// server can cost per query on a core. It answers every UDP query at once
// from prebuilt answer records (A 198.18.6.1, AAAA 2001:2::6:1, TTL 300; no
// answer for other types), echoing the query's ID and question: no parsing
// beyond the question, no cache, no allocation per query.
//
//	benchresponder -listen 169.254.20.10:53,198.18.0.10:53
//
// It runs until SIGTERM or SIGINT.
package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// Answer records after the question, the name a pointer to the question's.
var (
	answerA    = []byte{0xc0, 12, 0, 1, 0, 1, 0, 0, 1, 44, 0, 4, 198, 18, 6, 1}
	answerAAAA = []byte{0xc0, 12, 0, 28, 0, 1, 0, 0, 1, 44, 0, 16, 0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 6, 0, 1}
)

func main() {
	listen := flag.String("listen", "", "comma-separated `ADDR:PORT` list to answer on (UDP)")
	flag.Parse()
	if *listen == "" {
		fmt.Fprintln(os.Stderr, "benchresponder: need -listen")
		os.Exit(2)
	}
	for _, a := range strings.Split(*listen, ",") {
		addr, err := netip.ParseAddrPort(a)
		if err != nil {
			fmt.Fprintf(os.Stderr, "benchresponder: -listen %q: %v\n", a, err)
			os.Exit(2)
		}
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
		if err != nil {
			fmt.Fprintf(os.Stderr, "benchresponder: %v\n", err)
			os.Exit(1)
		}
		go serve(c)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
}

func serve(c *net.UDPConn) {
	in := make([]byte, 512)
	out := make([]byte, 512)
	for {
		n, from, err := c.ReadFromUDPAddrPort(in)
		if err != nil {
			fmt.Fprintf(os.Stderr, "benchresponder: %v\n", err)
			os.Exit(1)
		}
		if m := reply(in[:n], out); m > 0 {
			c.WriteToUDPAddrPort(out[:m], from)
		}
	}
}

// reply writes the answer to query q into out and returns its length, or 0
// when q is not a single-question query to answer.
func reply(q, out []byte) int {
	if len(q) < 12 || q[2]&0x80 != 0 || binary.BigEndian.Uint16(q[4:]) != 1 {
		return 0
	}
	i := 12
	for i < len(q) && q[i] != 0 {
		if q[i]&0xc0 != 0 {
			return 0
		}
		i += int(q[i]) + 1
	}
	end := i + 5 // root label, type, class
	if end > len(q) {
		return 0
	}
	qtype := binary.BigEndian.Uint16(q[i+1:])
	var ans []byte
	switch qtype {
	case 1:
		ans = answerA
	case 28:
		ans = answerAAAA
	}
	if end+len(ans) > len(out) {
		return 0
	}
	copy(out, q[:end])
	out[2] = 0x84 | q[2]&0x01 // QR, AA, RD as asked
	out[3] = 0x80             // RA, NOERROR
	binary.BigEndian.PutUint16(out[6:], uint16(min(len(ans), 1)))
	binary.BigEndian.PutUint16(out[8:], 0)
	binary.BigEndian.PutUint16(out[10:], 0)
	copy(out[end:], ans)
	return end + len(ans)
}
