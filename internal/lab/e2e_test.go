package lab_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/nodelocaldns/nodelocaldns/internal/dnsload"
	"github.com/nodelocaldns/nodelocaldns/internal/lab"
	"github.com/nodelocaldns/nodelocaldns/internal/lab/labtest"
	"github.com/nodelocaldns/nodelocaldns/internal/nstest"
)

// check is one query and what its answer must hold.
type check struct {
	name, qtype string
	rcode       int
	want        string // substring of the answer section, "" for none
}

var clusterChecks = []check{
	{"kubernetes.default.svc.cluster.local", "A", dns.RcodeSuccess, "198.18.0.1"},
	{"kubernetes.default.svc.cluster.local", "AAAA", dns.RcodeSuccess, "2001:2::1"},
	{"20.0.18.198.in-addr.arpa", "PTR", dns.RcodeSuccess, "web.default.svc.cluster.local."},
	{lab.SRVName, "SRV", dns.RcodeSuccess, "80 web.default.svc.cluster.local."},
	{"nope.default.svc.cluster.local", "A", dns.RcodeNameError, ""},
	{lab.OutsideName, "A", dns.RcodeSuccess, lab.OutsideAddr},
}

var stubCheck = check{lab.StubName, "A", dns.RcodeSuccess, lab.StubAddr}

func runChecks(t *testing.T, ns, server string, checks []check) {
	t.Helper()
	for _, tcp := range []bool{false, true} {
		proto := "udp"
		if tcp {
			proto = "tcp"
		}
		for _, c := range checks {
			r, err := lab.Query(ns, server, c.name, c.qtype, tcp)
			if err != nil {
				t.Errorf("%s %s %s @%s: %v", proto, c.qtype, c.name, server, err)
				continue
			}
			if r.Rcode != c.rcode {
				t.Errorf("%s %s %s @%s: rcode %s, want %s", proto, c.qtype, c.name, server, dns.RcodeToString[r.Rcode], dns.RcodeToString[c.rcode])
			}
			if c.want != "" && !strings.Contains(fmt.Sprint(r.Answer), c.want) {
				t.Errorf("%s %s %s @%s: answer %v, want %q in it", proto, c.qtype, c.name, server, r.Answer, c.want)
			}
		}
	}
}

func mustQuery(t *testing.T, ns, server, name, qtype string) *dns.Msg {
	t.Helper()
	r, err := lab.Query(ns, server, name, qtype, false)
	if err != nil {
		t.Fatalf("%s %s @%s from %s: %v", qtype, name, server, ns, err)
	}
	return r
}

func TestNodeLab(t *testing.T) {
	l := labtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	t.Run("KubeProxyPath", func(t *testing.T) {
		runChecks(t, l.Pod1, lab.KubeDNSIP, append(clusterChecks, stubCheck))
		if out, err := lab.PodRun(ctx, l.Pod1, "dig", "+tcp", "+short", "+tries=1", "+time=2", "web.default.svc.cluster.local"); err != nil || !strings.Contains(out, "198.18.0.20") {
			t.Errorf("Dig +tcp in the pod: %q, %v", out, err)
		}
		if n, err := l.PodDNSFlows(ctx); err != nil || n == 0 {
			t.Errorf("Conntrack holds %d pod DNS flows (%v), want some on the DNAT path", n, err)
		}
	})

	cache, err := l.StartCache(ctx)
	if err != nil {
		t.Fatalf("Start the node cache: %v", err)
	}

	t.Run("CachePath", func(t *testing.T) {
		runChecks(t, l.Pod1, lab.KubeDNSIP, clusterChecks)
		runChecks(t, l.Pod2, lab.LocalIP, clusterChecks)
	})

	t.Run("CacheAnswers", func(t *testing.T) {
		before, err := cache.Metrics()
		if err != nil {
			t.Fatalf("Cache metrics: %v", err)
		}
		up0, err := l.UpstreamQueries()
		if err != nil {
			t.Fatalf("Upstream metrics: %v", err)
		}
		// Names nobody asked yet: the first query of each goes upstream,
		// the rest are hits, within the TTL.
		names := []check{
			{"db.default.svc.cluster.local", "A", dns.RcodeSuccess, "198.18.0.22"},
			{"cache.default.svc.cluster.local", "AAAA", dns.RcodeSuccess, "2001:2::17"},
			{"gone-" + l.ID + ".default.svc.cluster.local", "A", dns.RcodeNameError, ""},
		}
		const repeats = 10
		for i := 0; i < repeats; i++ {
			for _, c := range names {
				if r := mustQuery(t, l.Pod1, lab.KubeDNSIP, c.name, c.qtype); r.Rcode != c.rcode {
					t.Fatalf("%s %s: rcode %s, want %s", c.qtype, c.name, dns.RcodeToString[r.Rcode], dns.RcodeToString[c.rcode])
				}
			}
		}
		after, err := cache.Metrics()
		if err != nil {
			t.Fatal(err)
		}
		up1, _ := l.UpstreamQueries()
		if d := up1 - up0; d != float64(len(names)) {
			t.Errorf("Upstreams saw %v queries for %d names asked %d times each, want one per name", d, len(names), repeats)
		}
		hits := lab.SumMetric(after, "coredns_cache_hits_total") - lab.SumMetric(before, "coredns_cache_hits_total")
		if want := float64(len(names) * (repeats - 1)); hits < want {
			t.Errorf("Cache hits rose by %v, want at least %v", hits, want)
		}
		denial := lab.SumMetric(after, "coredns_cache_hits_total", `type="denial"`) - lab.SumMetric(before, "coredns_cache_hits_total", `type="denial"`)
		if denial < repeats-1 {
			t.Errorf("Denial cache hits rose by %v, want the NXDOMAIN cached (%d)", denial, repeats-1)
		}
	})

	t.Run("Glibc", func(t *testing.T) {
		for _, p := range []string{l.Pod1, l.Pod2} {
			// Short names: the pod's search path and ndots:5 apply.
			out, err := lab.PodRun(ctx, p, "getent", "ahostsv4", "web")
			if err != nil || !strings.Contains(out, "198.18.0.20") {
				t.Errorf("Getent ahostsv4 web in %s: %q, %v", p, out, err)
			}
			out, err = lab.PodRun(ctx, p, "getent", "hosts", "kubernetes.default")
			if err != nil || !strings.Contains(out, "kubernetes.default.svc.cluster.local") {
				t.Errorf("Getent hosts kubernetes.default in %s: %q, %v", p, out, err)
			}
		}
	})

	t.Run("LoadNoConntrack", func(t *testing.T) {
		if err := l.FlushConntrack(ctx); err != nil {
			t.Fatal(err)
		}
		for _, res := range []string{"go", "system"} {
			ld, err := l.RunLoad(ctx, lab.LoadSpec{Pod: l.Pod1, Resolver: res, Concurrency: 8, Duration: 2 * time.Second,
				Hosts: []string{"kubernetes.default", "web", lab.OutsideName}})
			if err != nil {
				t.Fatalf("Testdns -resolver %s: %v", res, err)
			}
			if ld.Requests == 0 || ld.Errors != 0 {
				t.Errorf("Testdns -resolver %s: %d lookups, %d errors (%v), want many and none", res, ld.Requests, ld.Errors, ld.ErrorExamples)
			}
		}
		if n, err := l.PodDNSFlows(ctx); err != nil || n != 0 {
			t.Errorf("Conntrack holds %d pod DNS flows (%v) while the cache runs, want 0", n, err)
		}
	})

	t.Run("StopFallBackStartTakeOver", func(t *testing.T) {
		// A slow stream of glibc lookups runs through the whole stop and start.
		type result struct {
			ld  *dnsload.Summary
			err error
		}
		res := make(chan result, 1)
		go func() {
			ld, err := l.RunLoad(ctx, lab.LoadSpec{Pod: l.Pod1, Resolver: "system", Concurrency: 2, Duration: 20 * time.Second,
				Hosts: []string{"kubernetes.default", "web"}, Extra: []string{"-rate", "20"}})
			res <- result{ld, err}
		}()
		time.Sleep(3 * time.Second)
		if err := cache.Stop(); err != nil {
			t.Errorf("Stop the cache: %v", err)
		}
		// Through kube-proxy again: answered, and conntracked (while the
		// cache ran there were none, CachePath checked). No flush here: it
		// would drop the NAT entries of lookups in flight, whose replies
		// then come back from a CoreDNS pod's address, are ignored and cost
		// the stream a 5 s timeout that the cache did not cause.
		if r := mustQuery(t, l.Pod1, lab.KubeDNSIP, "api.default.svc.cluster.local", "A"); r.Rcode != dns.RcodeSuccess {
			t.Errorf("After stop: rcode %s", dns.RcodeToString[r.Rcode])
		}
		if n, _ := l.PodDNSFlows(ctx); n == 0 {
			t.Errorf("After stop the pod's query left no conntrack entry: it did not take the kube-proxy path")
		}
		time.Sleep(2 * time.Second)
		cache, err = l.StartCache(ctx)
		if err != nil {
			t.Fatalf("Start the cache again: %v", err)
		}
		r := <-res
		if r.err != nil {
			t.Fatalf("Slow stream: %v", r.err)
		}
		if r.ld.Requests < 100 || r.ld.Errors != 0 || r.ld.AtOrAboveLimit != 0 {
			t.Errorf("Slow stream through stop and start: %d lookups, %d errors, %d ≥ 5 s (%v); want no failure", r.ld.Requests, r.ld.Errors, r.ld.AtOrAboveLimit, r.ld.ErrorExamples)
		}
	})

	t.Run("UpstreamsDown", func(t *testing.T) {
		if r := mustQuery(t, l.Pod1, lab.KubeDNSIP, "metrics-server.kube-system.svc.cluster.local", "A"); r.Rcode != dns.RcodeSuccess {
			t.Fatalf("Warm-up: rcode %s", dns.RcodeToString[r.Rcode])
		}
		if err := l.StopUpstreams(); err != nil {
			t.Fatalf("Stop upstreams: %v", err)
		}
		r := mustQuery(t, l.Pod1, lab.KubeDNSIP, "metrics-server.kube-system.svc.cluster.local", "A")
		if r.Rcode != dns.RcodeSuccess || !strings.Contains(fmt.Sprint(r.Answer), "198.18.0.30") {
			t.Errorf("Cached name with the upstreams gone: %s %v", dns.RcodeToString[r.Rcode], r.Answer)
		}
	})
}

// TestPluginHostSetup runs the cache with the nodelocal directive doing the
// node work itself: link, addresses and rules appear, kube-proxy's full
// restore of the filter table is repaired, SIGTERM removes everything and
// pods fall back to kube-proxy.
func TestPluginHostSetup(t *testing.T) {
	l := labtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	src, err := os.ReadFile(filepath.Join(labtest.Root(t), "Corefile.example"))
	if err != nil {
		t.Fatal(err)
	}
	corefile := string(src)
	cache, err := l.StartCacheConf(ctx, corefile)
	if err != nil {
		t.Fatalf("Start the cache with Corefile.example on a fresh node: %v", err)
	}
	addrs, _ := l.NodeRun(ctx, "ip", "-4", "addr", "show", "dev", "nodelocaldns")
	for _, ip := range []string{lab.LocalIP, lab.KubeDNSIP} {
		if !strings.Contains(addrs, ip+"/32") {
			t.Errorf("Link nodelocaldns lacks %s/32: %s", ip, addrs)
		}
	}
	raw, _ := l.NodeRun(ctx, "iptables-save", "-t", "raw")
	if !strings.Contains(raw, lab.KubeDNSIP) || !strings.Contains(raw, "NOTRACK") && !strings.Contains(raw, "--notrack") {
		t.Errorf("No NOTRACK rule for %s in the raw table:\n%s", lab.KubeDNSIP, raw)
	}
	if _, err := lab.HTTPGet(l.Node, "169.254.20.10:8181", "/ready"); err != nil {
		t.Errorf("Ready: %v", err)
	}
	runChecks(t, l.Pod1, lab.KubeDNSIP, clusterChecks[:2])
	if n, _ := l.PodDNSFlows(ctx); n != 0 {
		t.Errorf("Conntrack holds %d pod DNS flows with the plugin's rules, want 0", n)
	}

	// kube-proxy restoring the whole filter table wipes the cache's ACCEPT
	// rules; reconcile (sync 10s by default) must put them back.
	m0, _ := cache.Metrics()
	filter, err := l.NodeRun(ctx, "iptables-save", "-t", "filter")
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, line := range strings.Split(filter, "\n") {
		if strings.HasPrefix(line, "-A ") && !strings.Contains(line, "KUBE-") {
			continue // everything not kube-proxy's goes, as a full restore does
		}
		kept = append(kept, line)
	}
	if _, err := l.NodeRunInput(ctx, strings.Join(kept, "\n")+"\n", "iptables-restore", "-w", "5", "-T", "filter"); err != nil {
		t.Fatal(err)
	}
	nstest.Eventually(t, "a repair counted after the filter table was restored without the cache's rules", 25*time.Second, func() bool {
		m, _ := cache.Metrics()
		return lab.SumMetric(m, "coredns_nodelocal_repairs_total") > lab.SumMetric(m0, "coredns_nodelocal_repairs_total")
	})

	if err := cache.Stop(); err != nil {
		t.Errorf("Stop: %v", err)
	}
	if out, err := l.NodeRun(ctx, "ip", "addr", "show", "nodelocaldns"); err == nil {
		t.Errorf("Link nodelocaldns still there after SIGTERM (teardown on removes it):\n%s", out)
	}
	raw, _ = l.NodeRun(ctx, "iptables-save", "-t", "raw")
	if strings.Contains(raw, lab.KubeDNSIP) {
		t.Errorf("Rules for %s still in the raw table after SIGTERM:\n%s", lab.KubeDNSIP, raw)
	}
	runChecks(t, l.Pod1, lab.KubeDNSIP, clusterChecks[:2])
}
