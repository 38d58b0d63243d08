package lab_test

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nodelocaldns/nodelocaldns/internal/cachesize"
	"github.com/nodelocaldns/nodelocaldns/internal/lab"
	"github.com/nodelocaldns/nodelocaldns/internal/lab/labtest"
)

// outageTTL is the cap the outage tests put on cached cluster answers (the
// Corefile's 30 s lowered) so that every cached name expires several times
// during the outage; a stale answer carries serve_stale's 30 s instead.
const (
	outageTTL = 5
	staleTTL  = 30
)

var clusterSuccess = regexp.MustCompile(`success (\S+) 30\b`)

// outageCorefile is Corefile.example with the cluster answers' TTL capped
// at outageTTL.
func outageCorefile(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(labtest.Root(t) + "/Corefile.example")
	if err != nil {
		t.Fatal(err)
	}
	if !clusterSuccess.Match(b) {
		t.Fatal("Corefile.example has no `success N 30` in its cluster cache block")
	}
	return clusterSuccess.ReplaceAllString(string(b), fmt.Sprintf("success ${1} %d", outageTTL))
}

// outageDuration is 25 s in CI; NODELOCAL_OUTAGE=full (make lab-outage)
// runs the 2 minutes.
func outageDuration() time.Duration {
	if os.Getenv("NODELOCAL_OUTAGE") == "full" {
		return 2 * time.Minute
	}
	return 25 * time.Second
}

func cachedNames() []string {
	var names []string
	for _, s := range lab.Services {
		names = append(names, s.Name)
	}
	for i := range 40 {
		names = append(names, fmt.Sprintf("c%d.%s", i, lab.WildDomain))
	}
	return names
}

var freshSeq atomic.Int64

func freshName() string {
	return fmt.Sprintf("f%d-%d.%s", time.Now().UnixNano()%1e6, freshSeq.Add(1), lab.WildDomain)
}

func metric(t *testing.T, c *lab.Cache, name string, labels ...string) float64 {
	t.Helper()
	body, err := c.Metrics()
	if err != nil {
		t.Fatalf("Cache metrics: %v", err)
	}
	return lab.SumMetric(body, name, labels...)
}

// TestOutage takes every upstream CoreDNS pod off the network (packets to
// them dropped, the hardest case) under a mixed stream of cached names and
// names never asked before, and puts them back.
func TestOutage(t *testing.T) {
	l := labtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	c, err := l.StartCacheConf(ctx, outageCorefile(t))
	if err != nil {
		t.Fatal(err)
	}
	cached := cachedNames()
	for _, n := range cached {
		if _, err := lab.Query(l.Pod1, lab.KubeDNSIP, n, "A", false); err != nil {
			t.Fatalf("Warm %s: %v", n, err)
		}
	}
	outage := outageDuration()
	const before, after = 3 * time.Second, 15 * time.Second
	spec := lab.MixedSpec{
		Pod: l.Pod1, Server: lab.KubeDNSIP, Cached: cached, Fresh: freshName, FreshShare: 0.2,
		Rate: 100, Duration: before + outage + after, Timeout: 5 * time.Second,
	}
	staleBefore := metric(t, c, "coredns_cache_served_stale_total")
	type streamResult struct {
		as  []lab.Answer
		err error
	}
	done := make(chan streamResult, 1)
	go func() {
		as, err := lab.MixedStream(spec)
		done <- streamResult{as, err}
	}()
	time.Sleep(before)
	if err := l.BlockUpstreams(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.UnblockUpstreams(context.Background()) })
	const settle = 5 * time.Second
	time.Sleep(settle)
	syn0, _, _, err := l.UpstreamDropped(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dials0 := metric(t, c, "coredns_proxy_conn_cache_misses_total", `to="`+lab.KubeDNSUpIP+`:53"`)
	time.Sleep(outage - settle)
	syn, tcp, udp, err := l.UpstreamDropped(ctx)
	if err != nil {
		t.Fatal(err)
	}
	budget := metric(t, c, "coredns_nodelocal_upstream_budget_exceeded_total")
	dials := metric(t, c, "coredns_proxy_conn_cache_misses_total", `to="`+lab.KubeDNSUpIP+`:53"`) - dials0
	staleDuring := metric(t, c, "coredns_cache_served_stale_total") - staleBefore
	broken := metric(t, c, "coredns_forward_healthcheck_broken_total")
	rejects := metric(t, c, "coredns_forward_max_concurrent_rejects_total")
	if err := l.UnblockUpstreams(ctx); err != nil {
		t.Fatal(err)
	}
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	down := func(a lab.Answer) bool { return a.At >= before && a.At < before+outage }
	cachedDown := lab.Stats(res.as, func(a lab.Answer) bool { return down(a) && !a.Fresh })
	freshDown := lab.Stats(res.as, func(a lab.Answer) bool { return down(a) && a.Fresh })
	var staleSeen int
	var lastStale time.Duration
	for _, a := range res.as {
		if a.Fresh || a.TTL != staleTTL {
			continue
		}
		staleSeen++
		if a.At > lastStale {
			lastStale = a.At
		}
	}
	s := outage.Seconds()
	t.Logf("outage of %v, %d cached names, %.0f queries/s, %.0f%% never asked before", outage, len(cached), spec.Rate, spec.FreshShare*100)
	t.Logf("cached names while down: %v", cachedDown)
	t.Logf("new names while down:    %v", freshDown)
	t.Logf("stale answers: %.0f served (coredns_cache_served_stale_total), %d seen by the pod (TTL %d)", staleDuring, staleSeen, staleTTL)
	steady := float64(syn-syn0) / (outage - settle).Seconds()
	t.Logf("forward's new connections (coredns_proxy_conn_cache_misses_total) after the first %v: %.0f (%.1f/s)", settle, dials, dials/(outage-settle).Seconds())
	t.Logf("upstream while down: %d connection attempts (%.1f/s; %.1f/s after the first %v), %d other TCP packets (%.1f/s), %d UDP (%.1f/s); healthcheck_broken %.0f, max_concurrent rejects %.0f, upstream budget exceeded %.0f",
		syn, float64(syn)/s, steady, settle, tcp, float64(tcp)/s, udp, float64(udp)/s, broken, rejects, budget)
	if lastStale > before+outage {
		t.Logf("last stale answer %v after the pods came back", (lastStale - before - outage).Round(time.Millisecond))
	} else {
		t.Logf("no stale answer after the pods came back")
	}

	// Every cached name kept answering, with its address.
	if cachedDown.Answered != cachedDown.N || cachedDown.N == 0 {
		t.Errorf("Cached names while the upstream was down: %v; want every one answered", cachedDown)
	}
	if staleDuring == 0 || staleSeen == 0 {
		t.Errorf("No stale answer served (metric %.0f, seen %d): the cached names never expired during the outage?", staleDuring, staleSeen)
	}
	// Names never seen get an answer (SERVFAIL) inside the client's
	// timeout, not silence: forward fails fast once its health checks mark
	// the upstream down, and nodelocal's upstream budget bounds the rest.
	if freshDown.NoAnswer != 0 || freshDown.ServFail == 0 {
		t.Errorf("New names while the upstream was down: %v; want SERVFAIL for each, none unanswered", freshDown)
	}
	// Fresh answers within one TTL of the Corefile (30 s) after the pods are
	// back: in the stream's last 3 s no cached name is answered stale.
	end := spec.Duration - 3*time.Second
	for _, a := range res.as {
		if !a.Fresh && a.At >= end && (a.TTL == staleTTL || a.Answers == 0) {
			t.Errorf("Cached name at %v, %v after the pods came back: rcode %d, TTL %d; want a fresh answer", a.At, a.At-before-outage, a.Rcode, a.TTL)
			break
		}
	}
	freshAfter := lab.Stats(res.as, func(a lab.Answer) bool { return a.Fresh && a.At >= end })
	if freshAfter.Answered != freshAfter.N {
		t.Errorf("New names %v after the pods came back: %v; want all answered", end-before-outage, freshAfter)
	}
}

// outageLab starts a lab whose cache runs outageCorefile, with the cached
// names asked once.
func outageLab(t *testing.T) (*lab.Lab, *lab.Cache, []string) {
	t.Helper()
	l := labtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := l.StartCacheConf(ctx, outageCorefile(t))
	if err != nil {
		t.Fatal(err)
	}
	cached := cachedNames()
	for _, n := range cached {
		if _, err := lab.Query(l.Pod1, lab.KubeDNSIP, n, "A", false); err != nil {
			t.Fatalf("Warm %s: %v", n, err)
		}
	}
	return l, c, cached
}

// streamWhile runs the mixed stream for d while during runs beside it.
func streamWhile(t *testing.T, l *lab.Lab, cached []string, d time.Duration, during func()) []lab.Answer {
	t.Helper()
	spec := lab.MixedSpec{
		Pod: l.Pod1, Server: lab.KubeDNSIP, Cached: cached, Fresh: freshName, FreshShare: 0.2,
		Rate: 100, Duration: d, Timeout: 5 * time.Second,
	}
	type result struct {
		as  []lab.Answer
		err error
	}
	done := make(chan result, 1)
	go func() {
		as, err := lab.MixedStream(spec)
		done <- result{as, err}
	}()
	during()
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	return res.as
}

// TestOutageFlapping: the upstream pods drop every packet for 5 s, answer
// for 5 s, three times over.
func TestOutageFlapping(t *testing.T) {
	l, c, cached := outageLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	t.Cleanup(func() { l.UnblockUpstreams(context.Background()) })
	const period = 5 * time.Second
	staleBefore := metric(t, c, "coredns_cache_served_stale_total")
	as := streamWhile(t, l, cached, 6*period+2*time.Second, func() {
		for range 3 {
			if err := l.BlockUpstreams(ctx); err != nil {
				t.Error(err)
			}
			time.Sleep(period)
			if err := l.UnblockUpstreams(ctx); err != nil {
				t.Error(err)
			}
			time.Sleep(period)
		}
	})
	stale := metric(t, c, "coredns_cache_served_stale_total") - staleBefore
	cachedS := lab.Stats(as, func(a lab.Answer) bool { return !a.Fresh })
	freshS := lab.Stats(as, func(a lab.Answer) bool { return a.Fresh })
	t.Logf("flapping (down %v, up %v, 3 times): cached names: %v", period, period, cachedS)
	t.Logf("new names: %v", freshS)
	t.Logf("stale answers served %.0f", stale)
	if cachedS.Answered != cachedS.N {
		t.Errorf("Cached names while the upstream flapped: %v; want every one answered", cachedS)
	}
	if freshS.NoAnswer != 0 || freshS.Answered == 0 {
		t.Errorf("New names while the upstream flapped: %v; want each answered or SERVFAIL, none unanswered, some answered", freshS)
	}
}

// TestOutageSlow: the upstream pods answer after 2 s (forward's read
// timeout), for 20 s.
func TestOutageSlow(t *testing.T) {
	l, c, cached := outageLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	staleBefore := metric(t, c, "coredns_cache_served_stale_total")
	const slow = 20 * time.Second
	var slowFrom, slowTo time.Duration
	start := time.Now()
	as := streamWhile(t, l, cached, slow+5*time.Second, func() {
		slowFrom = time.Since(start)
		if err := l.SetUpstreamDelay(ctx, 2*time.Second); err != nil {
			t.Error(err)
		}
		time.Sleep(slow)
		if err := l.SetUpstreamDelay(ctx, 1500*time.Microsecond); err != nil {
			t.Error(err)
		}
		slowTo = time.Since(start)
	})
	stale := metric(t, c, "coredns_cache_served_stale_total") - staleBefore
	in := func(a lab.Answer) bool { return a.At >= slowFrom && a.At < slowTo }
	cachedS := lab.Stats(as, func(a lab.Answer) bool { return in(a) && !a.Fresh })
	freshS := lab.Stats(as, func(a lab.Answer) bool { return in(a) && a.Fresh })
	t.Logf("upstream at 2 s for %v: cached names: %v", slowTo-slowFrom, cachedS)
	t.Logf("new names: %v", freshS)
	t.Logf("stale answers served %.0f", stale)
	if cachedS.Answered != cachedS.N {
		t.Errorf("Cached names with a slow upstream: %v; want every one answered", cachedS)
	}
	if freshS.NoAnswer != 0 {
		t.Errorf("New names with a slow upstream: %v; want each answered or SERVFAIL, none unanswered", freshS)
	}
}

// TestStalePrefetch measures one popular name asked 100 times a second
// through three expiries of its 5 s TTL, from an upstream 50 ms away: with
// the cache block as shipped (serve_stale verify and prefetch), without
// prefetch, and with node-cache's plain cache. It logs the figures; it
// asserts only that prefetch ran.
func TestStalePrefetch(t *testing.T) {
	l := labtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	if err := l.SetUpstreamDelay(ctx, 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	shipped := outageCorefile(t)
	noPrefetch := regexp.MustCompile(`(?m)^\s*prefetch .*\n`).ReplaceAllString(shipped, "")
	plain := regexp.MustCompile(`(?m)^\s*(prefetch|serve_stale) .*\n`).ReplaceAllString(shipped, "")
	if noPrefetch == shipped || plain == noPrefetch {
		t.Fatal("Corefile.example's cluster cache block has no prefetch or serve_stale line to take out")
	}
	name := lab.Services[3].Name
	for _, tc := range []struct {
		name, corefile string
	}{{"shipped", shipped}, {"no prefetch", noPrefetch}, {"plain cache", plain}} {
		c, err := l.StartCacheConf(ctx, tc.corefile)
		if err != nil {
			t.Fatal(err)
		}
		as := streamWhile(t, l, []string{name}, 16*time.Second, func() {})
		st := lab.Stats(as, func(lab.Answer) bool { return true })
		var slow int
		lat := make([]time.Duration, 0, len(as))
		for _, a := range as {
			lat = append(lat, a.Latency)
			if a.Latency >= 25*time.Millisecond {
				slow++
			}
		}
		prefetches := metric(t, c, "coredns_cache_prefetch_total")
		stale := metric(t, c, "coredns_cache_served_stale_total")
		t.Logf("%-12s %v; p99.9 %v; %d ≥ 25 ms; prefetches %.0f, stale answers %.0f", tc.name, st, percentile(lat, 99.9), slow, prefetches, stale)
		if tc.name == "shipped" && prefetches == 0 {
			t.Errorf("No prefetch of a name asked 100 times a second through three expiries")
		}
		if err := c.Stop(); err != nil {
			t.Fatal(err)
		}
	}
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p/100))].Round(10 * time.Microsecond)
}

// TestStaleMemory fills the cluster cache with names never asked before:
// first with room for 40960 answers, measuring the RSS every 10k; then
// under a memory limit given by env (NODELOCAL_MEMORY_LIMIT=64Mi, as the
// cgroup would give it), with more names than the sized cache holds: the
// cache keeps to its computed capacity and the process stays under the
// limit. The million names would take minutes here; the figures
// per 10k extrapolate.
func TestStaleMemory(t *testing.T) {
	l := labtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	// TTL 300: no entry expires while the cache fills.
	corefile := clusterSuccess.ReplaceAllString(string(mustRead(t)), "success ${1} 300")
	run := 0
	fill := func(t *testing.T, c *lab.Cache, n int) {
		t.Helper()
		run++
		r := run
		got, err := lab.Fill(l.Node, lab.LocalIP, func(i int) string { return fmt.Sprintf("m%d-%d.%s", r, i, lab.WildDomain) }, n, 32, 2*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if got < n*9/10 {
			t.Fatalf("Only %d of %d names answered while filling the cache", got, n)
		}
	}
	rss := func(t *testing.T, c *lab.Cache) int64 {
		t.Helper()
		v, err := c.RSS()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}

	t.Run("PerEntry", func(t *testing.T) {
		c, err := l.StartCacheEnv(ctx, corefile, "NODELOCAL_CACHE_SUCCESS=40960")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Stop()
		prev := rss(t, c)
		t.Logf("RSS idle %.1f MiB", float64(prev)/(1<<20))
		for k := 1; k <= 3; k++ {
			fill(t, c, 10000)
			now := rss(t, c)
			entries := metric(t, c, "coredns_cache_entries", `type="success"`, `zones="cluster.local."`)
			t.Logf("after %dk names: %.0f entries, RSS %.1f MiB (+%.1f MiB, %.0f bytes per entry)", k*10, entries, float64(now)/(1<<20), float64(now-prev)/(1<<20), float64(now-prev)/10000)
			prev = now
		}
	})

	t.Run("Limited", func(t *testing.T) {
		const limit = 64 << 20
		want := cachesize.Compute(limit)
		c, err := l.StartCacheEnv(ctx, corefile, cachesize.EnvLimit+"=64Mi")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Stop()
		if !c.Proc.Logged(fmt.Sprintf("success %d, denial %d", want.Success, want.Denial)) {
			t.Errorf("The cache did not log the sizes for 64 MiB (success %d, denial %d):\n%s", want.Success, want.Denial, c.Proc.Tail(20))
		}
		var peak int64
		for range 4 {
			fill(t, c, 5000)
			peak = max(peak, rss(t, c))
		}
		entries := metric(t, c, "coredns_cache_entries", `type="success"`, `zones="cluster.local."`)
		t.Logf("limit 64 MiB: %.0f success entries (capacity %d) after 20k names, peak RSS %.1f MiB", entries, want.Success, float64(peak)/(1<<20))
		if entries > float64(want.Success) {
			t.Errorf("The cluster cache holds %.0f answers, more than its capacity %d for 64 MiB", entries, want.Success)
		}
		if peak >= limit {
			t.Errorf("RSS %d MiB reached the 64 MiB limit", peak>>20)
		}
	})
}

func mustRead(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(labtest.Root(t) + "/Corefile.example")
	if err != nil {
		t.Fatal(err)
	}
	return b
}
