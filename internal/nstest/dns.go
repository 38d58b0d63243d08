package nstest

import (
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// ServeA serves DNS on addr over network ("udp" or "tcp"; port 0 picks a
// free one) from the calling goroutine's namespace, answering every A
// question with ip (TTL 5) and any other with no records, until the test
// ends. It returns the address it listens on.
func ServeA(t testing.TB, network, addr, ip string) string {
	t.Helper()
	a := net.ParseIP(ip).To4()
	if a == nil {
		t.Fatalf("ServeA: %q is not an IPv4 address", ip)
	}
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		if len(r.Question) == 1 && r.Question[0].Qtype == dns.TypeA {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5}, A: a})
		}
		w.WriteMsg(m)
	})
	srv := &dns.Server{Handler: handler}
	var bound string
	switch network {
	case "udp":
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			t.Fatalf("Listen UDP %s: %v", addr, err)
		}
		srv.PacketConn, bound = pc, pc.LocalAddr().String()
	case "tcp":
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("Listen TCP %s: %v", addr, err)
		}
		srv.Listener, bound = ln, ln.Addr().String()
	default:
		t.Fatalf("ServeA: network %q, want udp or tcp", network)
	}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return bound
}

// LookupA asks addr (host:port) one A question for name over network
// ("udp" or "tcp") from the calling goroutine's namespace and returns the
// first address of the answer, or "" on any failure or an empty answer.
func LookupA(network, addr, name string) string {
	c := &dns.Client{Net: network, Timeout: time.Second}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	r, _, err := c.Exchange(m, addr)
	if err != nil || len(r.Answer) == 0 {
		return ""
	}
	if a, ok := r.Answer[0].(*dns.A); ok {
		return a.A.String()
	}
	return ""
}
