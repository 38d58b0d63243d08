package hitpath_test

import (
	"bytes"
	"fmt"
	stdlog "log"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/nodelocaldns/nodelocaldns/build/plugins"
)

var useOnce sync.Once

func use(t *testing.T) {
	t.Helper()
	useOnce.Do(func() {
		if err := plugins.Use(); err != nil {
			t.Fatal(err)
		}
		caddy.Quiet = true
		dnsserver.Quiet = true
	})
}

// freePort returns a port free on 127.0.0.1 for both UDP and TCP.
func freePort(t *testing.T) int {
	t.Helper()
	for range 20 {
		l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
		l.Close()
		if err == nil {
			u.Close()
			return port
		}
	}
	t.Fatal("No free port")
	return 0
}

// upstreamDown makes the upstream drop every query.
var upstreamDown atomic.Bool

// upstream is the authoritative server both caches forward to.
func upstream(t *testing.T) string {
	t.Helper()
	soa := func(name string) dns.RR {
		rr, _ := dns.NewRR("test. 300 IN SOA ns.test. admin.test. 1 3600 600 86400 60")
		return rr
	}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		if upstreamDown.Load() {
			return
		}
		m := new(dns.Msg)
		m.SetReply(r)
		m.Authoritative = true
		q := r.Question[0]
		name := strings.ToLower(q.Name)
		add := func(s string) {
			rr, err := dns.NewRR(s)
			if err != nil {
				panic(err)
			}
			m.Answer = append(m.Answer, rr)
		}
		switch {
		case name == "a.test." && q.Qtype == dns.TypeA:
			add("a.test. 300 IN A 198.18.5.1")
		case name == "a.test." && q.Qtype == dns.TypeAAAA:
			add("a.test. 300 IN AAAA 2001:2::1")
		case name == "a.test.":
			m.Ns = append(m.Ns, soa(name)) // NODATA
		case name == "multi.test." && q.Qtype == dns.TypeA:
			for i := 1; i <= 4; i++ {
				add(fmt.Sprintf("multi.test. 300 IN A 198.18.6.%d", i))
			}
		case name == "big.test." && q.Qtype == dns.TypeA:
			for i := 1; i <= 60; i++ {
				add(fmt.Sprintf("big.test. 300 IN A 198.18.7.%d", i))
			}
		case name == "short.test." && q.Qtype == dns.TypeA:
			add("short.test. 4 IN A 198.18.8.1")
		case name == "alias.test." && q.Qtype == dns.TypeA:
			add("alias.test. 300 IN CNAME a.test.")
			add("a.test. 300 IN A 198.18.5.1")
		case name == "_dns._udp.svc.test." && q.Qtype == dns.TypeSRV:
			add("_dns._udp.svc.test. 300 IN SRV 0 50 53 a.test.")
			add("_dns._udp.svc.test. 300 IN SRV 0 50 53 multi.test.")
			rr, _ := dns.NewRR("a.test. 300 IN A 198.18.5.1")
			m.Extra = append(m.Extra, rr)
		case name == "1.5.18.198.in-addr.arpa." && q.Qtype == dns.TypePTR:
			add("1.5.18.198.in-addr.arpa. 300 IN PTR a.test.")
		default:
			m.Rcode = dns.RcodeNameError
			m.Ns = append(m.Ns, soa(name))
		}
		w.WriteMsg(m)
	})
	port := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for _, n := range []string{"udp", "tcp"} {
		s := &dns.Server{Addr: addr, Net: n, Handler: h}
		started := make(chan struct{})
		s.NotifyStartedFunc = func() { close(started) }
		go s.ListenAndServe()
		<-started
		t.Cleanup(func() { s.Shutdown() })
	}
	return addr
}

// start starts a CoreDNS instance from corefile and stops it at the end of
// the test, as SIGTERM does.
func start(t *testing.T, corefile string) {
	t.Helper()
	inst, err := caddy.Start(caddy.CaddyfileInput{Contents: []byte(corefile), Filepath: "Corefile", ServerTypeName: "dns"})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		inst.ShutdownCallbacks()
		for _, f := range inst.OnFinalShutdown {
			f()
		}
		inst.Stop()
	})
}

// cacheBlock is a block like Corefile.example's, on 127.0.0.1:port.
func cacheBlock(port int, up, extra string) string {
	return fmt.Sprintf(`.:%d {
    errors
    bind 127.0.0.1
%s
    cache {
        success 9984 30
        denial 9984 5
    }
    forward . %s
    prometheus 127.0.0.1:%d
}
`, port, extra, up, port+1)
}

// query is one query of the corpus.
type query struct {
	name  string
	qtype uint16
	size  uint16 // EDNS UDP size, 0 without OPT
	do    bool
	rd    bool
}

func (q query) String() string {
	return fmt.Sprintf("%s/%s/edns=%d/do=%v/rd=%v", q.name, dns.TypeToString[q.qtype], q.size, q.do, q.rd)
}

func (q query) pack(id uint16) []byte {
	m := new(dns.Msg)
	m.SetQuestion(q.name, q.qtype)
	m.Id = id
	m.RecursionDesired = q.rd
	if q.size > 0 {
		m.SetEdns0(q.size, q.do)
	}
	b, err := m.Pack()
	if err != nil {
		panic(err)
	}
	return b
}

func corpus() []query {
	names := []struct {
		name  string
		qtype uint16
	}{
		{"a.test.", dns.TypeA},
		{"a.test.", dns.TypeAAAA},
		{"a.test.", dns.TypeMX}, // NODATA
		{"multi.test.", dns.TypeA},
		{"big.test.", dns.TypeA}, // truncated without EDNS
		{"alias.test.", dns.TypeA},
		{"_dns._udp.svc.test.", dns.TypeSRV},
		{"1.5.18.198.in-addr.arpa.", dns.TypePTR},
		{"missing.test.", dns.TypeA}, // NXDOMAIN
		{"A.Test.", dns.TypeA},       // mixed case
		{"MuLtI.tEsT.", dns.TypeA},
	}
	var out []query
	for _, n := range names {
		for _, e := range []struct {
			size uint16
			do   bool
		}{{0, false}, {512, false}, {1232, false}, {4096, true}} {
			for _, rd := range []bool{true, false} {
				out = append(out, query{n.name, n.qtype, e.size, e.do, rd})
			}
		}
	}
	return out
}

var lastLen int

// exchange sends b to addr over UDP and returns the reply.
func exchange(t *testing.T, addr string, b []byte) *dns.Msg {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65535)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("No reply from %s: %v", addr, err)
	}
	lastLen = n
	m := new(dns.Msg)
	if err := m.Unpack(buf[:n]); err != nil {
		t.Fatalf("Reply from %s does not unpack: %v", addr, err)
	}
	return m
}

// comparable returns m as text with the ID and every TTL (not the OPT's
// flags) set to 0, each section's records in order.
func comparable(m *dns.Msg) string {
	m = m.Copy()
	m.Id = 0
	for _, sec := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range sec {
			if rr.Header().Rrtype != dns.TypeOPT {
				rr.Header().Ttl = 0
			}
		}
	}
	return m.String()
}

// counterValues returns the metric families named in names, for server,
// each series by its labels other than server: counters' values and
// histograms' sample counts and sums.
func counterValues(t *testing.T, server string, names ...string) map[string]float64 {
	t.Helper()
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		want := false
		for _, n := range names {
			want = want || mf.GetName() == n
		}
		if !want {
			continue
		}
		for _, m := range mf.GetMetric() {
			var ls []string
			mine := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "server" {
					mine = lp.GetValue() == server
					continue
				}
				ls = append(ls, lp.GetName()+"="+lp.GetValue())
			}
			if !mine {
				continue
			}
			k := mf.GetName() + "{" + strings.Join(ls, ",") + "}"
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				out[k] = m.GetCounter().GetValue()
			case dto.MetricType_HISTOGRAM:
				out[k+" count"] = float64(m.GetHistogram().GetSampleCount())
				if !strings.Contains(k, "duration") {
					out[k+" sum"] = m.GetHistogram().GetSampleSum()
				}
			}
		}
	}
	return out
}

var compared = []string{
	"coredns_dns_requests_total", "coredns_dns_responses_total", "coredns_dns_do_requests_total",
	"coredns_dns_request_duration_seconds", "coredns_dns_request_size_bytes", "coredns_dns_response_size_bytes",
	"coredns_cache_hits_total", "coredns_cache_requests_total", "coredns_cache_misses_total",
}

// TestDifferential: the same corpus of queries, asked of a block with the
// fast path and of the same block without it, gets the same answers field
// by field (ID and TTL aside) and moves the same metrics, while the fast
// path answers every cache hit it can.
func TestDifferential(t *testing.T) {
	use(t)
	up := upstream(t)
	pFast, pStock := freePort(t), freePort(t)
	start(t, cacheBlock(pFast, up, "    hitpath"))
	start(t, cacheBlock(pStock, up, ""))
	fast, stock := fmt.Sprintf("127.0.0.1:%d", pFast), fmt.Sprintf("127.0.0.1:%d", pStock)
	fastServer, stockServer := "dns://"+fast, "dns://"+stock

	qs := corpus()
	id := uint16(1)
	ask := func(q query) (*dns.Msg, *dns.Msg) {
		id++
		b := q.pack(id)
		f := exchange(t, fast, b)
		lf := lastLen
		s := exchange(t, stock, b)
		if lf != lastLen {
			t.Logf("%v: %d bytes with, %d without", q, lf, lastLen)
		}
		return f, s
	}
	// Round 1 fills both caches, round 2 is answered by the caches (and
	// teaches the fast path), rounds 3 and 4 are the fast path's.
	for _, q := range qs {
		ask(q)
	}
	fast0, stock0 := counterValues(t, fastServer, compared...), counterValues(t, stockServer, compared...)
	want := 0.0
	var answered0 float64
	for round := 2; round <= 4; round++ {
		if round == 3 {
			answered0 = counterValues(t, fastServer, "coredns_hitpath_answers_total")["coredns_hitpath_answers_total{}"]
		}
		for _, q := range qs {
			f, s := ask(q)
			if cf, cs := comparable(f), comparable(s); cf != cs {
				t.Errorf("Round %d, %v: answers differ\nwith the fast path:\n%s\nwithout:\n%s", round, q, cf, cs)
			}
			if f.Id != id {
				t.Errorf("Round %d, %v: reply ID %d, want %d", round, q, f.Id, id)
			}
			// The fast path answers while the TTL left is 2 s or more (it
			// hands the last second back to the chain); a slow round can
			// take the 5 s denials there.
			if round > 2 && !f.Truncated && minTTL(f) >= 2 {
				want++
				if os.Getenv("HITPATH_DEBUG") != "" {
					a := counterValues(t, fastServer, "coredns_hitpath_answers_total")["coredns_hitpath_answers_total{}"]
					t.Logf("%v fast total %v", q, a)
				}
			}
		}
	}
	// The prometheus plugin reports a query after its reply is out: wait
	// for both servers to have reported every query.
	sent := float64(3 * len(qs))
	durations := func(m map[string]float64) (n float64) {
		for k, v := range m {
			if strings.HasPrefix(k, "coredns_dns_request_duration_seconds") && strings.HasSuffix(k, " count") {
				n += v
			}
		}
		return n
	}
	var fast1, stock1 map[string]float64
	for deadline := time.Now().Add(5 * time.Second); ; {
		fast1, stock1 = counterValues(t, fastServer, compared...), counterValues(t, stockServer, compared...)
		if durations(fast1)-durations(fast0) == sent && durations(stock1)-durations(stock0) == sent || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	answered := counterValues(t, fastServer, "coredns_hitpath_answers_total")["coredns_hitpath_answers_total{}"] - answered0
	if answered != want {
		t.Errorf("Fast path answered %v queries of rounds 3 and 4, want %v (every one not truncated with 2 s left)", answered, want)
	}
	delta := func(a, b map[string]float64) map[string]float64 {
		d := map[string]float64{}
		for k, v := range b {
			if v-a[k] != 0 {
				d[k] = v - a[k]
			}
		}
		return d
	}
	df, ds := delta(fast0, fast1), delta(stock0, stock1)
	if len(ds) == 0 {
		t.Fatal("No metric moved without the fast path")
	}
	keys := func(m map[string]float64) []string {
		var ks []string
		for k := range m {
			ks = append(ks, k)
		}
		sort.Strings(ks)
		return ks
	}
	for _, k := range keys(ds) {
		if df[k] != ds[k] {
			t.Errorf("Metric %s moved by %v with the fast path, %v without", k, df[k], ds[k])
		}
	}
	for _, k := range keys(df) {
		if _, ok := ds[k]; !ok {
			t.Errorf("Metric %s moved by %v with the fast path only", k, df[k])
		}
	}
}

// TestTTLCountsDown: a reply from the fast path carries the TTL the cache
// has left, not the one it learned.
func TestTTLCountsDown(t *testing.T) {
	use(t)
	up := upstream(t)
	p := freePort(t)
	start(t, cacheBlock(p, up, "    hitpath"))
	addr := fmt.Sprintf("127.0.0.1:%d", p)
	q := query{name: "a.test.", qtype: dns.TypeA, rd: true}
	for i := range 3 {
		exchange(t, addr, q.pack(uint16(i)))
	}
	first := exchange(t, addr, q.pack(10)).Answer[0].Header().Ttl
	time.Sleep(2100 * time.Millisecond)
	later := exchange(t, addr, q.pack(11)).Answer[0].Header().Ttl
	if later > first-2 || later < first-3 {
		t.Errorf("TTL %d two seconds after %d, want %d or %d", later, first, first-2, first-3)
	}
}

// TestLoadbalanceOrderVaries: with loadbalance in the block, the fast
// path's answers still come in varying order, with the same records.
func TestLoadbalanceOrderVaries(t *testing.T) {
	use(t)
	up := upstream(t)
	p := freePort(t)
	start(t, cacheBlock(p, up, "    loadbalance\n    hitpath"))
	addr := fmt.Sprintf("127.0.0.1:%d", p)
	server := "dns://" + addr
	q := query{name: "multi.test.", qtype: dns.TypeA, rd: true}
	for i := range 3 {
		exchange(t, addr, q.pack(uint16(i)))
	}
	answered0 := counterValues(t, server, "coredns_hitpath_answers_total")["coredns_hitpath_answers_total{}"]
	orders := map[string]bool{}
	for i := range 40 {
		m := exchange(t, addr, q.pack(uint16(100+i)))
		var order, set []string
		for _, rr := range m.Answer {
			order = append(order, rr.(*dns.A).A.String())
		}
		set = append(set, order...)
		sort.Strings(set)
		if strings.Join(set, " ") != "198.18.6.1 198.18.6.2 198.18.6.3 198.18.6.4" {
			t.Fatalf("Answer %v, want the four addresses", order)
		}
		orders[strings.Join(order, " ")] = true
	}
	if answered := counterValues(t, server, "coredns_hitpath_answers_total")["coredns_hitpath_answers_total{}"] - answered0; answered < 30 {
		t.Errorf("Fast path answered %v of 40 hits", answered)
	}
	if len(orders) < 2 {
		t.Errorf("One order in 40 answers: %v", orders)
	}
}

// TestOffWithLog: in a block with log (which must see every query) the
// fast path stays off, says so once, and the chain answers everything.
func TestOffWithLog(t *testing.T) {
	use(t)
	var buf bytes.Buffer
	logTo(t, &buf)
	up := upstream(t)
	p := freePort(t)
	start(t, cacheBlock(p, up, "    log\n    hitpath"))
	addr := fmt.Sprintf("127.0.0.1:%d", p)
	q := query{name: "a.test.", qtype: dns.TypeA, rd: true}
	for i := range 5 {
		if m := exchange(t, addr, q.pack(uint16(i))); len(m.Answer) != 1 {
			t.Fatalf("Answer %v", m.Answer)
		}
	}
	if n := counterValues(t, "dns://"+addr, "coredns_hitpath_answers_total")["coredns_hitpath_answers_total{}"]; n != 0 {
		t.Errorf("Fast path answered %v queries in a block with log", n)
	}
	msg := fmt.Sprintf("Off in server block .:%d: log must see every query", p)
	if c := strings.Count(buf.String(), msg); c != 1 {
		t.Errorf("Log says %q %d times, want once; log:\n%s", msg, c, buf.String())
	}
	if c := strings.Count(buf.String(), "A IN a.test."); c != 5 {
		t.Errorf("log plugin logged %d of 5 queries", c)
	}
}

// lockedBuffer is a bytes.Buffer safe for the log's writers.
type lockedBuffer struct {
	mu  sync.Mutex
	buf *bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// logTo sends the process's log to buf for the test.
func logTo(t *testing.T, buf *bytes.Buffer) {
	t.Helper()
	old := stdlog.Writer()
	stdlog.SetOutput(&lockedBuffer{buf: buf})
	t.Cleanup(func() { stdlog.SetOutput(old) })
}

// minTTL returns the smallest TTL in m, OPT aside.
func minTTL(m *dns.Msg) uint32 {
	least := ^uint32(0)
	for _, sec := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range sec {
			if rr.Header().Rrtype != dns.TypeOPT {
				least = min(least, rr.Header().Ttl)
			}
		}
	}
	return least
}
