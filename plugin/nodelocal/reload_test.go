package nodelocal

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/reload"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

var directivesOnce sync.Once

// useTestDirectives gives the dnsserver the directives these tests use, in
// plugin.cfg's order.
func useTestDirectives(t *testing.T) {
	directivesOnce.Do(func() {
		if err := dnsserver.SetDirectives([]string{"reload", "bind", "errors", "nodelocal", "cache", "loop", "forward"}); err != nil {
			t.Fatal(err)
		}
	})
}

// fakeUpstream answers every A query with ip, on 127.0.0.1 UDP.
func fakeUpstream(t *testing.T, ip string) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		if q := r.Question[0]; q.Qtype == dns.TypeA {
			rr, _ := dns.NewRR(q.Name + " 5 IN A " + ip)
			m.Answer = append(m.Answer, rr)
		}
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

func freePort(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return strconv.Itoa(pc.LocalAddr().(*net.UDPAddr).Port)
}

func lookupA(server, name string) string {
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	c := &dns.Client{Timeout: 500 * time.Millisecond}
	r, _, err := c.Exchange(m, server)
	if err != nil || len(r.Answer) == 0 {
		return ""
	}
	if a, ok := r.Answer[0].(*dns.A); ok {
		return a.A.String()
	}
	return ""
}

func eventually(t *testing.T, what string, d time.Duration, ok func() bool) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if ok() {
			return
		}
	}
	t.Fatalf("%s: not within %s", what, d)
}

// A running CoreDNS follows edits of the mounted kube-dns ConfigMap, swapped
// the way kubelet swaps it, through the reload plugin and without a restart;
// a bad edit leaves it answering as before.
func TestReloadFollowsConfigMap(t *testing.T) {
	if testing.Short() {
		t.Skip("starts CoreDNS and waits for the reload plugin")
	}
	useTestDirectives(t)
	withFakeHost(t)

	up1, up2, stub := fakeUpstream(t, "198.18.1.1"), fakeUpstream(t, "198.18.1.2"), fakeUpstream(t, "198.18.1.3")
	port := freePort(t)
	server := net.JoinHostPort("127.0.0.1", port)

	dir := t.TempDir()
	tmpl, out, cm := filepath.Join(dir, "Corefile.base"), filepath.Join(dir, "Corefile"), filepath.Join(dir, "kube-dns")
	writeFile(t, tmpl, ".:"+port+" {\n    errors\n    reload 2s 1s\n    loop\n    bind 127.0.0.1\n    forward . __PILLAR__UPSTREAM__SERVERS__\n}\n")
	writeConfigMap(t, cm, map[string]string{keyUpstreams: `["` + up1 + `"]`})
	t.Setenv("KUBE_DNS_UPSTREAM_SERVICE_HOST", "198.18.0.11")

	// The node-cache flags of the DaemonSet; the local IP is only handed to
	// the fake host, the server binds loopback.
	l := newTemplateLoader(newTestFlags(t, "-localip", "198.18.0.10", "-conf", out, "-upstreamsvc", "kube-dns-upstream",
		"-basecorefile", tmpl, "-kubednscm", cm, "-metrics-listen-address", "", "-setupinterface=false", "-setupiptables=false"))
	l.resolvConf = filepath.Join(dir, "no-resolv.conf")
	loaderMu.Lock()
	saved := corefileLoader
	corefileLoader = l
	loaderMu.Unlock()
	t.Cleanup(func() { loaderMu.Lock(); corefileLoader = saved; loaderMu.Unlock() })

	// Every registered loader runs, coremain's "flag" loader included: only
	// one may return a Corefile.
	input, err := caddy.LoadCaddyfile("dns")
	if err != nil {
		t.Fatalf("LoadCaddyfile: %v", err)
	}
	inst, err := caddy.Start(input)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		for _, i := range caddy.Instances() {
			i.ShutdownCallbacks()
			i.Stop()
		}
	})
	_ = inst

	if got := lookupA(server, "www.example.test."); got != "198.18.1.1" {
		t.Fatalf("Before the edit: www.example.test A %q, want 198.18.1.1", got)
	}

	writeConfigMap(t, cm, map[string]string{
		keyUpstreams:   `["` + up2 + `"]`,
		keyStubDomains: `{"stub.test": ["` + stub + `"]}`,
	})
	eventually(t, "upstream change served", 15*time.Second, func() bool { return lookupA(server, "www.example.test.") == "198.18.1.2" })
	eventually(t, "stub domain served", 5*time.Second, func() bool { return lookupA(server, "www.stub.test.") == "198.18.1.3" })
	if b, _ := os.ReadFile(out); !strings.Contains(string(b), "stub.test:"+port+" {") {
		t.Errorf("The -conf file does not show the stub domain:\n%s", b)
	}

	rej := testutil.ToFloat64(configRejections)
	writeConfigMap(t, cm, map[string]string{keyUpstreams: `["` + up1 + `", "resolver.example"]`})
	eventually(t, "bad edit rejected", 10*time.Second, func() bool { return testutil.ToFloat64(configRejections) > rej })
	time.Sleep(3 * time.Second) // a reload check or two
	if got := lookupA(server, "www.example.test."); got != "198.18.1.2" {
		t.Errorf("After a bad edit: www.example.test A %q, want the last good answer 198.18.1.2", got)
	}
	if got := lookupA(server, "www.stub.test."); got != "198.18.1.3" {
		t.Errorf("After a bad edit: www.stub.test A %q, want the last good answer 198.18.1.3", got)
	}
}
