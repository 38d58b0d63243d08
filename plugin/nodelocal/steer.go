package nodelocal

import (
	"errors"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// In a surge rollout two instances share each local IP:port through
// SO_REUSEPORT, and the kernel spreads new packets and connections over
// both by hash. When the old one stops, whatever sits in its UDP receive
// queue or TCP accept queue at close is lost, and a lost UDP query stalls a
// resolver for its 5 s timeout. So a starting instance steers the new
// traffic to itself as soon as its own sockets are open: it attaches to
// their reuseport group a classic BPF program that picks the sockets that
// joined after the first instance's. The old instance then only finishes
// what it already has and closes with empty queues.
//
// The program indexes the group's socket array, which the kernel keeps in
// join order (a leaving socket's slot is taken by the last one). An
// instance alone in the group holds slots 0..k-1 and the program's pick,
// k + hash % k, is past the end: the kernel then falls back to its own hash
// choice, so the program is harmless until a second instance joins, and a
// joining instance's sockets (slots k..2k-1) get all new traffic at once.

// Classic BPF ancillary load of skb->hash (linux/filter.h).
const (
	skfAdOff    = 0xfffff000 // SKF_AD_OFF, -0x1000
	skfAdRxhash = 32         // SKF_AD_RXHASH
)

// steerProgram returns the program for instances with k sockets each on
// one IP:port: slot k + hash % k, the second instance's sockets.
func steerProgram(k int) []unix.SockFilter {
	if k <= 1 {
		return []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: 1}}
	}
	return []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: skfAdOff + skfAdRxhash},
		{Code: unix.BPF_ALU | unix.BPF_MOD | unix.BPF_K, K: uint32(k)},
		{Code: unix.BPF_ALU | unix.BPF_ADD | unix.BPF_K, K: uint32(k)},
		{Code: unix.BPF_RET | unix.BPF_A},
	}
}

// attachSteer attaches the program for len(fds) sockets per instance to
// the reuseport group of fds (one group: the same type, IP and port).
func attachSteer(fds []int) error {
	prog := steerProgram(len(fds))
	fprog := &unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	// The program belongs to the group; setting it through one socket is
	// enough.
	if err := unix.SetsockoptSockFprog(fds[0], unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF, fprog); err != nil {
		return fmt.Errorf("attach reuseport program to socket %d: %w", fds[0], err)
	}
	return nil
}

// sockGroup is one reuseport group as seen from this process.
type sockGroup struct {
	stream bool // TCP listener, else UDP
	addr   netip.AddrPort
}

// steerGroups finds this process's UDP sockets and listening TCP sockets
// bound to one of ips and one of ports, by group.
func steerGroups(ips []netip.Addr, ports []int) map[sockGroup][]int {
	out := map[sockGroup][]int{}
	socks, err := ownSockets()
	if err != nil {
		return out
	}
	for _, s := range socks {
		if !s.matches(ips, ports, false) {
			continue
		}
		if s.stream && !s.accepts() {
			continue // a connection, not the listener
		}
		g := sockGroup{stream: s.stream, addr: s.addr}
		out[g] = append(out[g], s.fd)
	}
	return out
}

// steerToSelf attaches the steering program to every group of this
// process's sockets on ips and ports and returns how many it steered. TCP
// listeners that Go opened as MPTCP sockets (its default since Go 1.24)
// refuse the program; they are skipped: a TCP client whose connection the
// old instance resets on close retries at once.
func steerToSelf(ips []netip.Addr, ports []int) (int, error) {
	steered := 0
	var errs []error
	for g, fds := range steerGroups(ips, ports) {
		err := attachSteer(fds)
		switch {
		case err == nil:
			steered++
		case g.stream && errors.Is(err, unix.EOPNOTSUPP):
		default:
			errs = append(errs, err)
		}
	}
	return steered, errors.Join(errs...)
}
