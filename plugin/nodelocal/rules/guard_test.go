package rules

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netns"

	"github.com/nodelocaldns/nodelocaldns/internal/nstest"
)

// The data path of the fail-open guard, in throwaway namespaces: a pod
// namespace routed to a node namespace that holds the local IPs on a bridge
// with no ports, 198.18.0.11 (the upstream ClusterIP, held by the node as
// IPVS mode does) and 198.18.0.53 (a kube-dns pod, reached through a DNAT
// that stands in for kube-proxy's).
const (
	guardLocal    = "169.254.20.10"
	guardKubeDNS  = "198.18.0.10"
	guardUpstream = "198.18.0.11"
	guardEndpoint = "198.18.0.53"
)

// guardNode sets up the namespaces and returns the pod namespace.
func guardNode(t *testing.T) netns.NsHandle {
	t.Helper()
	nstest.Enter(t)
	b := make([]byte, 4)
	rand.Read(b)
	pod := "nltest-pod-" + hex.EncodeToString(b)
	run := func(args ...string) {
		t.Helper()
		if _, err := nstest.Run(t, args[0], args[1:]...); err != nil {
			t.Fatal(err)
		}
	}
	run("ip", "netns", "add", pod)
	t.Cleanup(func() { nstest.Run(t, "ip", "netns", "del", pod) })
	run("ip", "link", "add", "nlpod0", "type", "veth", "peer", "name", "eth0", "netns", pod)
	run("ip", "addr", "add", "198.18.1.1/24", "dev", "nlpod0")
	run("ip", "link", "set", "nlpod0", "up")
	in := func(args ...string) { run(append([]string{"ip", "netns", "exec", pod}, args...)...) }
	in("ip", "link", "set", "lo", "up")
	in("ip", "addr", "add", "198.18.1.2/24", "dev", "eth0")
	in("ip", "link", "set", "eth0", "up")
	in("ip", "route", "add", "198.18.0.0/24", "via", "198.18.1.1")
	in("ip", "route", "add", guardLocal+"/32", "via", "198.18.1.1")
	run("ip", "link", "add", "nldns0", "type", "bridge")
	for _, a := range []string{guardLocal, guardKubeDNS, guardUpstream, guardEndpoint} {
		run("ip", "addr", "add", a+"/32", "dev", "nldns0")
	}
	run("ip", "link", "set", "nldns0", "up")
	h, err := netns.GetFromName(pod)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// serve answers every A query on addr:53 with marker, until closed.
func serve(t *testing.T, addr, marker string) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(addr), 53)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			q := new(dns.Msg)
			if q.Unpack(buf[:n]) != nil || len(q.Question) != 1 {
				continue
			}
			r := new(dns.Msg).SetReply(q)
			r.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5}, A: net.ParseIP(marker)}}
			out, _ := r.Pack()
			c.WriteToUDPAddrPort(out, from)
		}
	}()
	return c
}

// ask sends one query to dst:53 from a fresh socket made in ns (the node's
// own namespace when ns is not open) and returns the answer's address.
func ask(t *testing.T, ns netns.NsHandle, dst string) (string, error) {
	t.Helper()
	var c *net.UDPConn
	var err error
	if ns.IsOpen() {
		node, gerr := netns.Get()
		if gerr != nil {
			t.Fatal(gerr)
		}
		defer node.Close()
		if err := netns.Set(ns); err != nil {
			t.Fatal(err)
		}
		c, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(dst), 53)))
		if err := netns.Set(node); err != nil {
			t.Fatal(err)
		}
	} else {
		c, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(dst), 53)))
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	q := new(dns.Msg).SetQuestion("guard.test.", dns.TypeA)
	out, _ := q.Pack()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write(out); err != nil {
		return "", err
	}
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if err != nil {
		return "", err
	}
	r := new(dns.Msg)
	if err := r.Unpack(buf[:n]); err != nil || len(r.Answer) != 1 {
		return "", errors.New("bad answer")
	}
	return r.Answer[0].(*dns.A).A.String(), nil
}

// flows counts the node's conntrack entries of UDP port 53 to dst.
func flows(t *testing.T, dst string) int {
	t.Helper()
	out, err := nstest.Run(t, "conntrack", "-L", "-p", "udp", "--orig-dst", dst, "--orig-port-dst", "53")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "udp ") {
			n++
		}
	}
	return n
}

// TestGuardDataPath: with the guard, a query to a local IP with a cache
// socket is answered by it and leaves no conntrack entry; once the socket is
// closed the same query takes the path it would take without a cache
// (kube-proxy's DNAT for the kube-dns IP, the standing DNAT to the upstream
// for 169.254.20.10), and comes back to the cache when a socket is bound
// again. Node-local queries stay unguarded (see the package doc).
func TestGuardDataPath(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mode    Mode
		backend Backend
		// kubeProxy installs the stand-in for kube-proxy's DNAT of the kube-dns IP.
		kubeProxy []string
	}{
		{"iptables-legacy", ModeIptables, BackendLegacy, []string{"iptables-legacy", "-t", "nat", "-A", "PREROUTING", "-d", guardKubeDNS, "-p", "udp", "--dport", "53", "-j", "DNAT", "--to-destination", guardEndpoint + ":53"}},
		{"iptables-nft", ModeIptables, BackendNft, []string{"iptables-nft", "-t", "nat", "-A", "PREROUTING", "-d", guardKubeDNS, "-p", "udp", "--dport", "53", "-j", "DNAT", "--to-destination", guardEndpoint + ":53"}},
		{"nftables", ModeNftables, "", []string{"nft", "add table ip kube-proxy; add chain ip kube-proxy pre { type nat hook prerouting priority dstnat; }; add rule ip kube-proxy pre ip daddr " + guardKubeDNS + " udp dport 53 dnat to " + guardEndpoint + ":53"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := guardNode(t)
			if _, err := nstest.Run(t, tc.kubeProxy[0], tc.kubeProxy[1:]...); err != nil {
				t.Fatal(err)
			}
			spec := Spec{Mode: tc.mode, Backend: tc.backend, DNSPorts: []int{53}, Guard: true,
				LocalIPs: []netip.Addr{netip.MustParseAddr(guardLocal), netip.MustParseAddr(guardKubeDNS)},
				Fallback: []netip.Addr{netip.MustParseAddr(guardLocal)}, Upstream: netip.MustParseAddr(guardUpstream)}
			m := New()
			if err := m.SocketMatch(spec); err != nil {
				t.Fatalf("SocketMatch: %v", err)
			}
			ensure(t, m, spec)
			serve(t, guardEndpoint, "198.18.7.53")
			serve(t, guardUpstream, "198.18.7.11")

			expect := func(dst, want, why string) {
				t.Helper()
				if got, err := ask(t, pod, dst); got != want {
					t.Errorf("%s: query to %s answered by %q (%v), want %s", why, dst, got, err, want)
				}
			}
			cache := []*net.UDPConn{serve(t, guardLocal, "198.18.7.1"), serve(t, guardKubeDNS, "198.18.7.1")}
			expect(guardKubeDNS, "198.18.7.1", "Cache up")
			expect(guardLocal, "198.18.7.1", "Cache up")
			if n := flows(t, guardKubeDNS) + flows(t, guardLocal); n != 0 {
				t.Errorf("Cache up: %d conntrack entries for pod DNS, want 0 (NOTRACK)", n)
			}

			for _, c := range cache {
				c.Close()
			}
			expect(guardKubeDNS, "198.18.7.53", "No cache socket (kube-proxy's DNAT)")
			expect(guardLocal, "198.18.7.11", "No cache socket (standing DNAT to the upstream)")

			if n := flows(t, guardKubeDNS) + flows(t, guardLocal); n != 2 {
				t.Errorf("No cache socket: %d conntrack entries for pod DNS, want 2 (tracked and DNATed)", n)
			}
			// Node-local traffic goes through raw OUTPUT, which no socket
			// match covers: with no cache socket it is refused, not diverted.
			if _, err := ask(t, netns.None(), guardLocal); !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("Node-local query with no cache socket: %v, want connection refused (OUTPUT is not guarded)", err)
			}

			serve(t, guardLocal, "198.18.7.2")
			expect(guardLocal, "198.18.7.2", "Cache back")
			if c := ensure(t, m, spec); len(c) != 0 {
				t.Errorf("Ensure after the cache came back changed %q: the kernel alone switched paths", c)
			}
			if err := m.Remove(spec); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestGuardFallbackKubeProxy: with kube-proxy in iptables mode the upstream
// ClusterIP is held by no one; the standing DNAT jumps to kube-proxy's
// Service chain and lands on its endpoint.
func TestGuardFallbackKubeProxy(t *testing.T) {
	for _, b := range backends {
		t.Run(string(b), func(t *testing.T) {
			pod := guardNode(t)
			kube := "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-UPSTREAM - [0:0]\n" +
				"-A KUBE-SERVICES -d 198.18.0.12/32 -p udp -m udp --dport 53 -j KUBE-SVC-UPSTREAM\n" +
				"-A KUBE-SVC-UPSTREAM -p udp -j DNAT --to-destination " + guardEndpoint + ":53\n" +
				"-A PREROUTING -j KUBE-SERVICES\nCOMMIT\n"
			if _, err := nstest.RunInput(t, kube, binary(families[0], b, "restore"), "--noflush"); err != nil {
				t.Fatal(err)
			}
			checkFallbackToEndpoint(t, pod, Spec{Mode: ModeIptables, Backend: b})
		})
	}
}

// TestGuardFallbackKubeProxyNft: with kube-proxy in nftables mode (its own
// table, its DNAT at dstnat) the upstream ClusterIP is held by no one and
// no iptables chain can be jumped to; the fallback rewrites the
// destination to the ClusterIP before any DNAT, kube-proxy's DNAT lands it
// on its endpoint, and the reply comes back from the address the pod asked.
func TestGuardFallbackKubeProxyNft(t *testing.T) {
	pod := guardNode(t)
	kube := "add table ip kube-proxy; add chain ip kube-proxy nat-prerouting { type nat hook prerouting priority dstnat; }; " +
		"add rule ip kube-proxy nat-prerouting ip daddr 198.18.0.12 udp dport 53 dnat to " + guardEndpoint + ":53"
	if _, err := nstest.Run(t, "nft", kube); err != nil {
		t.Fatal(err)
	}
	checkFallbackToEndpoint(t, pod, Spec{Mode: ModeNftables})
}

// checkFallbackToEndpoint puts in the guarded rules of spec's mode and
// backend for guardLocal, with the standing fallback to the upstream
// ClusterIP 198.18.0.12 that kube-proxy sends to guardEndpoint: the pod is
// answered by the cache while its socket is open, by the endpoint once it
// is closed.
func checkFallbackToEndpoint(t *testing.T, pod netns.NsHandle, spec Spec) {
	t.Helper()
	spec.DNSPorts, spec.Guard = []int{53}, true
	spec.LocalIPs = []netip.Addr{netip.MustParseAddr(guardLocal)}
	spec.Fallback = []netip.Addr{netip.MustParseAddr(guardLocal)}
	spec.Upstream = netip.MustParseAddr("198.18.0.12")
	m := New()
	ensure(t, m, spec)
	serve(t, guardEndpoint, "198.18.7.53")
	c := serve(t, guardLocal, "198.18.7.1")
	if got, err := ask(t, pod, guardLocal); got != "198.18.7.1" {
		t.Errorf("Cache up: answered by %q (%v), want the cache", got, err)
	}
	c.Close()
	if got, err := ask(t, pod, guardLocal); got != "198.18.7.53" {
		t.Errorf("No cache socket: answered by %q (%v), want kube-proxy's endpoint", got, err)
	}
	if err := m.Remove(spec); err != nil {
		t.Fatal(err)
	}
}
