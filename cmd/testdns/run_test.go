package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/nodelocaldns/nodelocaldns/internal/dnsload"
)

// Names the test server knows. They are rooted so that no search path from
// the machine's resolv.conf is tried.
const (
	fastName    = "fast.testdns."
	slowName    = "slow.testdns."
	nxName      = "nx.testdns."
	refusedName = "refused.testdns."
	wildSuffix  = ".wild.testdns." // any name under it answers like fastName
	slowDelay   = 300 * time.Millisecond
)

// testServer is a tiny DNS server on 127.0.0.1 (UDP and TCP, one random
// port) that counts the queries it receives per name and type.
type testServer struct {
	addr string
	mu   sync.Mutex
	seen map[string]int // "name type", e.g. "fast.testdns. A"
}

func (s *testServer) count(name string, qtype uint16) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen[name+" "+dns.TypeToString[qtype]]
}

func (s *testServer) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	if len(r.Question) != 1 {
		return
	}
	q := r.Question[0]
	name := strings.ToLower(q.Name)
	s.mu.Lock()
	s.seen[name+" "+dns.TypeToString[q.Qtype]]++
	s.mu.Unlock()

	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative, m.RecursionAvailable = true, true
	if strings.HasSuffix(name, wildSuffix) {
		name = fastName
	}
	switch name {
	case slowName:
		time.Sleep(slowDelay)
		fallthrough
	case fastName:
		hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: 30, Rrtype: q.Qtype}
		switch q.Qtype {
		case dns.TypeA:
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: net.IPv4(127, 0, 0, 1)})
		case dns.TypeAAAA:
			m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: net.IPv6loopback})
		}
	case nxName:
		m.Rcode = dns.RcodeNameError
	default:
		m.Rcode = dns.RcodeRefused
	}
	_ = w.WriteMsg(m)
}

// startServer serves on 127.0.0.1 until the test ends.
func startServer(t *testing.T) *testServer {
	t.Helper()
	s := &testServer{seen: map[string]int{}}
	var pc net.PacketConn
	var ln net.Listener
	for range 10 { // the TCP port may be taken; try a few UDP ports
		var err error
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("Listen UDP: %v", err)
		}
		ln, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
		pc = nil
	}
	if pc == nil {
		t.Fatal("No port free for both UDP and TCP on 127.0.0.1")
	}
	s.addr = pc.LocalAddr().String()
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: s}, {Listener: ln, Handler: s}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go func() { _ = srv.ActivateAndServe() }()
		select {
		case <-started:
		case <-time.After(5 * time.Second):
			t.Fatal("Test DNS server did not start")
		}
		t.Cleanup(func() { _ = srv.Shutdown() })
	}
	return s
}

// testConfig is a short run against s.
func testConfig(s *testServer, hosts ...string) Config {
	return Config{
		Hosts:       hosts,
		Concurrency: 4,
		Duration:    time.Second,
		Limit:       200 * time.Millisecond,
		Timeout:     3 * time.Second,
		Resolver:    resolverGo,
		Type:        typeA,
		Server:      s.addr,
	}
}

// runFor runs cfg and fails the test if it does not return in time.
func runFor(t *testing.T, ctx context.Context, cfg Config) *dnsload.Summary {
	t.Helper()
	start := time.Now()
	s, err := Run(ctx, cfg, nil)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if took := time.Since(start); took > cfg.Duration+cfg.Timeout+2*time.Second {
		t.Errorf("Run took %v, want at most -d %v plus -timeout %v", took, cfg.Duration, cfg.Timeout)
	}
	return s
}

func hostSummary(t *testing.T, s *dnsload.Summary, name string) dnsload.HostSummary {
	t.Helper()
	for _, h := range s.Hosts {
		if h.Name == name {
			return h
		}
	}
	t.Fatalf("No summary for host %s", name)
	return dnsload.HostSummary{}
}

func TestRunMixed(t *testing.T) {
	srv := startServer(t)
	s := runFor(t, context.Background(), testConfig(srv, fastName, slowName, nxName, refusedName))

	fast, slow := hostSummary(t, s, fastName), hostSummary(t, s, slowName)
	nx, refused := hostSummary(t, s, nxName), hostSummary(t, s, refusedName)
	if s.Requests == 0 || fast.Requests == 0 || slow.Requests == 0 || nx.Requests == 0 || refused.Requests == 0 {
		t.Fatalf("Some name was never looked up: %+v", s.Hosts)
	}
	if fast.Errors != 0 || slow.Errors != 0 {
		t.Errorf("Answered names failed: fast %d, slow %d errors", fast.Errors, slow.Errors)
	}
	if slow.AtOrAboveLimit != slow.Requests {
		t.Errorf("%d of %d lookups of the %v-delayed name counted at or above 200ms, want all", slow.AtOrAboveLimit, slow.Requests, slowDelay)
	}
	if s.AtOrAboveLimit < slow.Requests {
		t.Errorf("%d lookups at or above the limit, want at least the %d slow ones", s.AtOrAboveLimit, slow.Requests)
	}
	if s.ErrorKinds.NXDOMAIN != nx.Requests || nx.Errors != nx.Requests {
		t.Errorf("nxdomain errors = %d, want one per lookup of %s (%d)", s.ErrorKinds.NXDOMAIN, nxName, nx.Requests)
	}
	if s.ErrorKinds.Refused != refused.Requests {
		t.Errorf("refused errors = %d, want one per lookup of %s (%d); kinds %+v examples %v",
			s.ErrorKinds.Refused, refusedName, refused.Requests, s.ErrorKinds, s.ErrorExamples)
	}
	if s.Errors != nx.Requests+refused.Requests {
		t.Errorf("errors = %d, want %d", s.Errors, nx.Requests+refused.Requests)
	}
	if s.Latency.MaxMS < float64(slowDelay/time.Millisecond) || s.Latency.P99MS < float64(slowDelay/time.Millisecond) {
		t.Errorf("Latency %+v does not show the %v delay", s.Latency, slowDelay)
	}
	if s.Interrupted || s.Aborted != 0 {
		t.Errorf("Uninterrupted run reports interrupted=%v aborted=%d", s.Interrupted, s.Aborted)
	}
}

// TestRunOneResolverPerWorker checks the server sees every lookup: a shared
// net.Resolver would coalesce the concurrent lookups of the slow name into
// one query.
func TestRunOneResolverPerWorker(t *testing.T) {
	srv := startServer(t)
	cfg := testConfig(srv, slowName, fastName)
	cfg.Concurrency = 8
	s := runFor(t, context.Background(), cfg)
	for _, name := range []string{slowName, fastName} {
		h := hostSummary(t, s, name)
		got := uint64(srv.count(name, dns.TypeA))
		// A lost UDP packet would add a retry; a shared resolver would lose queries.
		if got < h.Requests || got > h.Requests+h.Requests/100+2 {
			t.Errorf("Server saw %d queries for %s, tool counted %d lookups", got, name, h.Requests)
		}
	}
	if s.Requests < uint64(cfg.Concurrency) {
		t.Errorf("Only %d lookups with %d workers", s.Requests, cfg.Concurrency)
	}
}

func TestRunTypes(t *testing.T) {
	tests := []struct {
		name       string
		typ        string
		tcp        bool
		perRequest map[uint16]int // queries the server sees per lookup
	}{
		{"A over UDP", typeA, false, map[uint16]int{dns.TypeA: 1, dns.TypeAAAA: 0}},
		{"AAAA over UDP", typeAAAA, false, map[uint16]int{dns.TypeA: 0, dns.TypeAAAA: 1}},
		{"ip over UDP", typeIP, false, map[uint16]int{dns.TypeA: 1, dns.TypeAAAA: 1}},
		{"ip over TCP", typeIP, true, map[uint16]int{dns.TypeA: 1, dns.TypeAAAA: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startServer(t)
			cfg := testConfig(srv, fastName)
			cfg.Type, cfg.TCP = tt.typ, tt.tcp
			cfg.Duration = 300 * time.Millisecond
			s := runFor(t, context.Background(), cfg)
			if s.Requests == 0 || s.Errors != 0 {
				t.Fatalf("requests %d errors %d (%v), want some and none", s.Requests, s.Errors, s.ErrorExamples)
			}
			for qtype, per := range tt.perRequest {
				got, want := srv.count(fastName, qtype), per*int(s.Requests)
				if got < want || got > want+want/100+2 {
					t.Errorf("Server saw %d %s queries for %d lookups, want %d", got, dns.TypeToString[qtype], s.Requests, want)
				}
			}
		})
	}
}

// TestRunUniqueNames checks that {n} gives every lookup a name of its own.
func TestRunUniqueNames(t *testing.T) {
	srv := startServer(t)
	host := "u-" + UniqueMark + wildSuffix
	cfg := testConfig(srv, host)
	cfg.Duration = 300 * time.Millisecond
	s := runFor(t, context.Background(), cfg)
	if s.Requests == 0 || s.Errors != 0 {
		t.Fatalf("requests %d errors %d (%v), want some and none", s.Requests, s.Errors, s.ErrorExamples)
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	distinct := 0
	for k, n := range srv.seen {
		if strings.HasSuffix(k, wildSuffix+" A") && !strings.Contains(k, UniqueMark) {
			distinct++
			if n != 1 {
				t.Errorf("Server saw %q %d times, want each name once", k, n)
			}
		}
	}
	if distinct != int(s.Requests) {
		t.Errorf("Server saw %d distinct names for %d lookups, want one per lookup", distinct, s.Requests)
	}
	if h := hostSummary(t, s, host); h.Requests != s.Requests {
		t.Errorf("Summary counts %d lookups under %q, want all %d", h.Requests, host, s.Requests)
	}
}

func TestRunRateLimit(t *testing.T) {
	srv := startServer(t)
	cfg := testConfig(srv, fastName)
	cfg.Rate = 50
	s := runFor(t, context.Background(), cfg)
	// 50/s for 1 s is about 50 lookups; the workers could do thousands.
	if s.Requests < 10 || s.Requests > 75 {
		t.Errorf("%d lookups in %v at -rate 50, want about 50", s.Requests, cfg.Duration)
	}
}

// TestRunInterrupted cancels the run as Ctrl-C does and expects a partial
// summary promptly, with the abandoned lookups not counted as errors.
func TestRunInterrupted(t *testing.T) {
	srv := startServer(t)
	cfg := testConfig(srv, slowName)
	cfg.Duration = 30 * time.Second
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(2*slowDelay+slowDelay/2, cancel)
	start := time.Now()
	s, err := Run(ctx, cfg, nil)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Interrupted run took %v to return", took)
	}
	if !s.Interrupted {
		t.Error("Summary not marked interrupted")
	}
	if s.Requests == 0 || s.Errors != 0 {
		t.Errorf("Partial summary: requests %d errors %d, want some requests and no errors", s.Requests, s.Errors)
	}
	if s.Aborted == 0 || s.Aborted > uint64(cfg.Concurrency) {
		t.Errorf("aborted = %d, want 1..%d (the lookups in flight)", s.Aborted, cfg.Concurrency)
	}
	var buf bytes.Buffer
	if err := writeText(&buf, s); err != nil || !strings.Contains(buf.String(), "partial summary") {
		t.Errorf("Text summary (err %v) does not say it is partial:\n%s", err, buf.String())
	}
}

// TestRunTimeout bounds in-flight lookups by -timeout and counts them as
// timeouts.
func TestRunTimeout(t *testing.T) {
	srv := startServer(t)
	cfg := testConfig(srv, slowName)
	cfg.Timeout = 100 * time.Millisecond
	cfg.Duration = 500 * time.Millisecond
	s := runFor(t, context.Background(), cfg)
	if s.Requests == 0 || s.ErrorKinds.Timeout != s.Requests {
		t.Errorf("timeouts = %d of %d lookups, want all (%v)", s.ErrorKinds.Timeout, s.Requests, s.ErrorExamples)
	}
	if s.Latency.MaxMS > 1000 {
		t.Errorf("Max latency %vms, want about the 100ms timeout", s.Latency.MaxMS)
	}
}

// TestSystemResolver resolves localhost through glibc (/etc/hosts, no
// network), or checks the error of a build without cgo.
func TestSystemResolver(t *testing.T) {
	cfg := Config{Hosts: []string{"localhost"}, Concurrency: 2, Duration: 200 * time.Millisecond,
		Limit: time.Second, Timeout: 2 * time.Second, Resolver: resolverSystem, Type: typeA}
	s, err := Run(context.Background(), cfg, nil)
	if systemUnavailable() != nil {
		if err == nil || !strings.Contains(err.Error(), "built without cgo") {
			t.Fatalf("Run without cgo: error %v, want one saying the binary was built without cgo", err)
		}
		return
	}
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if s.Requests == 0 || s.Errors != 0 {
		t.Errorf("glibc lookups of localhost: requests %d errors %d (%v)", s.Requests, s.Errors, s.ErrorExamples)
	}
}

// TestCommand runs the command as a user would, with -json to a file and to
// stdout.
func TestCommand(t *testing.T) {
	srv := startServer(t)
	path := filepath.Join(t.TempDir(), "out.json")
	base := []string{"-server", srv.addr, "-host", fastName + "," + nxName, "-c", "2", "-d", "1.2", "-l", "200", "-type", "A"}

	var stdout, stderr bytes.Buffer
	if rc := run(append(base, "-json", path), &stdout, &stderr); rc != 0 {
		t.Fatalf("Exit status %d, stderr:\n%s", rc, stderr.String())
	}
	// The count of slow lookups depends on the machine's load; only the line is checked.
	for _, want := range []string{"requests: ", "latency: min ", ">= 200ms: ", "errors: nxdomain="} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("Stdout lacks %q:\n%s", want, stdout.String())
		}
	}
	if !strings.Contains(stderr.String(), "lookups/s") {
		t.Errorf("No progress line on stderr:\n%s", stderr.String())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("Read JSON summary: %v", err)
	}
	var sum dnsload.Summary
	if err := json.Unmarshal(data, &sum); err != nil || sum.Requests == 0 || sum.ErrorKinds.NXDOMAIN == 0 {
		t.Errorf("JSON summary (err %v): requests %d nxdomain %d", err, sum.Requests, sum.ErrorKinds.NXDOMAIN)
	}

	stdout.Reset()
	stderr.Reset()
	if rc := run(append(base, "-d", "0.2", "-q", "-json", "-"), &stdout, &stderr); rc != 0 {
		t.Fatalf("Exit status %d, stderr:\n%s", rc, stderr.String())
	}
	if err := json.Unmarshal(stdout.Bytes(), &sum); err != nil {
		t.Errorf("-json - did not put JSON alone on stdout: %v\n%s", err, stdout.String())
	}
	if !strings.HasPrefix(stderr.String(), "requests: ") {
		t.Errorf("With -json - and -q, stderr should hold only the text summary:\n%s", stderr.String())
	}

	if rc := run([]string{"-type", "MX"}, &stdout, &stderr); rc != 2 {
		t.Errorf("Bad flag: exit status %d, want 2", rc)
	}
}
