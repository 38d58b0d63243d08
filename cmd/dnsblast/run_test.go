package main

import (
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// serve answers every query on a loopback UDP socket with one A record,
// or with nothing when mute; it stops with the test.
func serve(t *testing.T, mute bool) string {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		if mute {
			return
		}
		m := new(dns.Msg)
		m.SetReply(r)
		rr, _ := dns.NewRR(r.Question[0].Name + " 30 IN A 198.18.0.1")
		m.Answer = append(m.Answer, rr)
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

func TestRunCountsEveryQuery(t *testing.T) {
	c := config{server: serve(t, false), name: "kubernetes.default.svc.cluster.local", qtype: dns.TypeA,
		outstanding: 20, batch: 8, duration: time.Minute, count: 2000, timeout: 5 * time.Second, sockets: 1}
	if err := c.check(); err != nil {
		t.Fatal(err)
	}
	res, err := run(c)
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != 2000 || res.Completed != 2000 || res.Lost != 0 || res.NoError != 2000 {
		t.Errorf("Got sent %d, completed %d, lost %d, NOERROR %d; want 2000 sent and answered (-n 2000)", res.Sent, res.Completed, res.Lost, res.NoError)
	}
	if res.QPS <= 0 || res.AvgLatMS <= 0 || res.MinLatMS > res.MaxLatMS {
		t.Errorf("Figures out of shape: %+v", res)
	}
}

// With -sockets the queries go out from that many source ports, each with
// its share, and every one is counted once.
func TestRunSockets(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ports := map[int]int{}
	var mu sync.Mutex
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		mu.Lock()
		ports[w.RemoteAddr().(*net.UDPAddr).Port]++
		mu.Unlock()
		m := new(dns.Msg)
		m.SetReply(r)
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	c := config{server: pc.LocalAddr().String(), name: "a.test", qtype: dns.TypeA,
		outstanding: 21, batch: 4, duration: time.Minute, count: 3001, timeout: 5 * time.Second, sockets: 4}
	if err := c.check(); err != nil {
		t.Fatal(err)
	}
	res, err := run(c)
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != 3001 || res.Completed != 3001 || res.Lost != 0 {
		t.Errorf("Got sent %d, completed %d, lost %d; want 3001 sent and answered (-n 3001)", res.Sent, res.Completed, res.Lost)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(ports) != 4 {
		t.Errorf("Queries came from %d source ports, want 4 (-sockets 4): %v", len(ports), ports)
	}
	for p, n := range ports {
		if n < 750 || n > 751 {
			t.Errorf("Port %d sent %d queries, want its share of 3001 (750 or 751)", p, n)
		}
	}
}

func TestRunCountsLostQueries(t *testing.T) {
	c := config{server: serve(t, true), name: "kubernetes.default.svc.cluster.local", qtype: dns.TypeA,
		outstanding: 5, batch: 4, duration: 300 * time.Millisecond, count: 1000, timeout: 50 * time.Millisecond, sockets: 1}
	if err := c.check(); err != nil {
		t.Fatal(err)
	}
	res, err := run(c)
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent == 0 || res.Completed != 0 || res.Lost != res.Sent {
		t.Errorf("A server that never answers: sent %d, completed %d, lost %d; want every query sent counted lost", res.Sent, res.Completed, res.Lost)
	}
}

func TestCheck(t *testing.T) {
	ok := config{server: "198.18.0.10", name: "a.test", outstanding: 100, batch: 32, duration: time.Second, count: 10, timeout: time.Second, sockets: 1}
	for _, tc := range []struct {
		edit func(*config)
		want string
	}{
		{func(c *config) {}, ""},
		{func(c *config) { c.duration = time.Hour }, "-d 1h0m0s"},
		{func(c *config) { c.count = 0 }, "-n 0"},
		{func(c *config) { c.outstanding = 20000 }, "-q 20000"},
		{func(c *config) { c.batch = 0 }, "-batch 0"},
		{func(c *config) { c.name = "" }, "-name"},
		{func(c *config) { c.sockets = 0 }, "-sockets 0"},
		{func(c *config) { c.sockets = 101 }, "-sockets 101"},
	} {
		c := ok
		tc.edit(&c)
		err := c.check()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("Valid settings rejected: %v", err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("Got %v, want an error naming %q", err, tc.want)
		}
	}
	c := ok
	c.check()
	if c.server != "198.18.0.10:53" {
		t.Errorf("Server without a port became %q, want port 53", c.server)
	}
}
