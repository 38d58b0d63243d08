package hitpath_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/coredns/caddy"

	"github.com/miekg/dns"
)

// fastAnswers returns how many queries the fast path answered on server.
func fastAnswers(t *testing.T, server string) float64 {
	t.Helper()
	return counterValues(t, server, "coredns_hitpath_answers_total")["coredns_hitpath_answers_total{}"]
}

// TestMultisocket: with multisocket the fast path serves every socket, so
// queries from many client ports (which the kernel spreads over the
// sockets) are all answered by it.
func TestMultisocket(t *testing.T) {
	use(t)
	up := upstream(t)
	p := freePort(t)
	start(t, cacheBlock(p, up, "    multisocket 3\n    hitpath"))
	addr := fmt.Sprintf("127.0.0.1:%d", p)
	q := query{name: "a.test.", qtype: dns.TypeA, rd: true}
	for i := range 3 {
		exchange(t, addr, q.pack(uint16(i)))
	}
	// Each socket's listener learns the reply from its own first hit.
	for i := range 48 {
		exchange(t, addr, q.pack(uint16(100+i)))
	}
	before := fastAnswers(t, "dns://"+addr)
	for i := range 48 {
		if m := exchange(t, addr, q.pack(uint16(200+i))); len(m.Answer) != 1 {
			t.Fatalf("Answer %v", m.Answer)
		}
	}
	if n := fastAnswers(t, "dns://"+addr) - before; n != 48 {
		t.Errorf("Fast path answered %v of 48 hits from 48 client ports over 3 sockets", n)
	}
}

// TestReload: a reload hands the sockets to the new instance: with the fast
// path in the new Corefile it answers again; without it, the chain answers
// everything and no listener of the old instance is left reading.
func TestReload(t *testing.T) {
	use(t)
	up := upstream(t)
	p := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", p)
	server := "dns://" + addr
	inst, err := caddy.Start(caddy.CaddyfileInput{Contents: []byte(cacheBlock(p, up, "    hitpath")), Filepath: "Corefile", ServerTypeName: "dns"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		inst.ShutdownCallbacks()
		for _, f := range inst.OnFinalShutdown {
			f()
		}
		inst.Stop()
	}()
	q := query{name: "a.test.", qtype: dns.TypeA, rd: true}
	ask := func(n int) float64 {
		t.Helper()
		before := fastAnswers(t, server)
		trace := ""
		for i := range n {
			b := fastAnswers(t, server)
			if m := exchange(t, addr, q.pack(uint16(i))); len(m.Answer) != 1 {
				t.Fatalf("Answer %v", m.Answer)
			}
			if fastAnswers(t, server) > b {
				trace += "F"
			} else {
				trace += "c"
			}
		}
		t.Log(trace)
		return fastAnswers(t, server) - before
	}
	if n := ask(5); n < 3 {
		t.Fatalf("Fast path answered %v of 5 before the reload", n)
	}
	for round, extra := range []string{"    hitpath\n    # again", "    # without", "    hitpath"} {
		inst, err = inst.Restart(caddy.CaddyfileInput{Contents: []byte(cacheBlock(p, up, extra)), Filepath: "Corefile", ServerTypeName: "dns"})
		if err != nil {
			t.Fatalf("Reload %d: %v", round, err)
		}
		n := ask(10)
		switch on := strings.Contains(extra, "hitpath"); {
		case on && n < 7:
			t.Errorf("Reload %d, fast path on: it answered %v of 10", round, n)
		case !on && n != 0:
			t.Errorf("Reload %d, fast path off: it still answered %v of 10", round, n)
		}
	}
}

// TestPrefetch: the cache still prefetches a busy name: near the end of
// its TTL the chain sees the queries again.
func TestPrefetch(t *testing.T) {
	use(t)
	up := upstream(t)
	p := freePort(t)
	corefile := fmt.Sprintf(`.:%d {
    bind 127.0.0.1
    hitpath
    cache 30 {
        prefetch 1 1m 50%%
    }
    forward . %s
    prometheus 127.0.0.1:%d
}
`, p, up, p+1)
	start(t, corefile)
	addr := fmt.Sprintf("127.0.0.1:%d", p)
	server := "dns://" + addr
	q := query{name: "short.test.", qtype: dns.TypeA, rd: true}
	prefetches := func() float64 {
		return counterValues(t, server, "coredns_cache_prefetch_total")["coredns_cache_prefetch_total{view=,zones=.}"]
	}
	before, fast0 := prefetches(), fastAnswers(t, server)
	// The cache keeps the 4 s record for its minimum TTL, 5 s, and
	// prefetches in the last 50 %.
	for i := range 24 {
		m := exchange(t, addr, q.pack(uint16(i)))
		if len(m.Answer) != 1 || m.Answer[0].Header().Ttl == 0 {
			t.Fatalf("Query %d: answer %v", i, m.Answer)
		}
		time.Sleep(250 * time.Millisecond)
	}
	if n := prefetches() - before; n < 1 {
		t.Errorf("No prefetch in 6 s of queries for a name with a 5 s TTL")
	}
	if n := fastAnswers(t, server) - fast0; n < 1 {
		t.Errorf("Fast path answered none of the queries")
	}
}

// TestServeStale: once an entry expires, the chain answers, so the cache
// serves it stale while the upstream does not answer; with a stale TTL
// (RFC 8767's 30 s) every stale answer still comes from the cache, counted,
// never from the fast path as if it were fresh.
func TestServeStale(t *testing.T) {
	use(t)
	for _, tc := range []struct {
		setting string
		ttl     uint32
	}{
		{"serve_stale 1h", 0},
		{"serve_stale 1h immediate 30s", 30},
	} {
		t.Run(tc.setting, func(t *testing.T) {
			up := upstream(t)
			p := freePort(t)
			corefile := fmt.Sprintf(`.:%d {
    bind 127.0.0.1
    hitpath
    cache 30 {
        %s
    }
    forward . %s {
        expire 100ms
    }
    prometheus 127.0.0.1:%d
}
`, p, tc.setting, up, p+1)
			start(t, corefile)
			addr := fmt.Sprintf("127.0.0.1:%d", p)
			server := "dns://" + addr
			q := query{name: "short.test.", qtype: dns.TypeA, rd: true}
			for i := range 4 {
				exchange(t, addr, q.pack(uint16(i)))
			}
			upstreamDown.Store(true)
			defer upstreamDown.Store(false)
			time.Sleep(5500 * time.Millisecond)
			stale := func() float64 {
				return counterValues(t, server, "coredns_cache_served_stale_total")["coredns_cache_served_stale_total{view=,zones=.}"]
			}
			stale0, fast0 := stale(), fastAnswers(t, server)
			for i := range 5 {
				m := exchange(t, addr, q.pack(uint16(100+i)))
				if len(m.Answer) != 1 || m.Answer[0].Header().Ttl != tc.ttl || m.Answer[0].(*dns.A).A.String() != "198.18.8.1" {
					t.Errorf("Answer %d after expiry with the upstream down: %v, want the stale record with TTL %d", i, m.Answer, tc.ttl)
				}
			}
			if n := stale() - stale0; n != 5 {
				t.Errorf("The cache served %v of 5 stale answers, want all", n)
			}
			if n := fastAnswers(t, server) - fast0; n != 0 {
				t.Errorf("The fast path answered %v stale queries, want none", n)
			}
		})
	}
}
