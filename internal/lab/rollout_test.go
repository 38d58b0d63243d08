package lab_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/nodelocaldns/nodelocaldns/internal/lab"
	"github.com/nodelocaldns/nodelocaldns/internal/lab/labtest"
)

// TestRollout makes each planned change of issue 8 to the node cache while
// pods look names up at 500/s (glibc over UDP, Go over UDP and TCP, cached
// names and names never asked before): not one lookup may fail or take a
// second. A SIGKILL cannot be free; its figures are logged (nodelab rollout
// prints them beside node-cache's behaviour).
func TestRollout(t *testing.T) {
	l := labtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	st := lab.DefaultRolloutStream
	var results []*lab.RolloutResult

	run := func(t *testing.T, c lab.RolloutCase, zeroLoss bool) *lab.RolloutResult {
		t.Helper()
		r, err := l.RunRollout(ctx, c, lab.Ours, st)
		if r != nil {
			for _, e := range r.Events {
				t.Log(e)
			}
			for _, cl := range r.Clients {
				if cl.Load != nil {
					t.Logf("%-9s %5d lookups, %d failed, %d ≥ %v, max %.0f ms %v", cl.Name, cl.Load.Requests, cl.Load.Errors, cl.Load.AtOrAboveLimit, st.Limit, cl.Load.Latency.MaxMS, cl.Load.ErrorExamples)
				}
			}
			if r.Probe != nil {
				t.Logf("probe: %d of %d answered, longest gap %v", r.Probe.Answered, r.Probe.Sent, r.Probe.LongestGap)
			}
		}
		if err != nil {
			t.Fatalf("%s: %v", c, err)
		}
		results = append(results, r)
		// A stream that barely ran would prove nothing.
		if want := uint64(st.Rate * st.Duration.Seconds() / 2); r.Lookups < want {
			t.Errorf("%s: the pods made %d lookups, want at least %d", c, r.Lookups, want)
		}
		if zeroLoss && (r.Failed != 0 || r.Slow != 0) {
			t.Errorf("%s: %d of %d lookups failed and %d took %v or more; want none", c, r.Failed, r.Lookups, r.Slow, st.Limit)
		}
		return r
	}

	t.Run("Surge", func(t *testing.T) {
		run(t, lab.Surge, true)
		// The old instance left the node to the new one: pods are still
		// answered by the cache, not by kube-proxy's DNAT.
		if n, err := l.PodDNSFlows(ctx); err != nil || n != 0 {
			t.Errorf("Conntrack holds %d pod DNS flows (%v) after the surge, want 0: traffic left the cache", n, err)
		}
		if l.Caches() != 1 {
			t.Errorf("%d cache instances run after the surge, want 1", l.Caches())
		}
	})
	t.Run("Restart", func(t *testing.T) {
		run(t, lab.Restart, true)
		if n, err := l.PodDNSFlows(ctx); err != nil || n == 0 {
			t.Errorf("Conntrack holds %d pod DNS flows (%v): the pods never took kube-proxy's path while the cache was away", n, err)
		}
	})
	t.Run("Crash", func(t *testing.T) {
		r := run(t, lab.Crash, false)
		t.Logf("SIGKILL: %d of %d lookups failed, %d took ≥ %v; longest gap %v; new instance ready %v after its start",
			r.Failed, r.Lookups, r.Slow, st.Limit, r.Probe.LongestGap, r.Ready)
		// For about a second nothing listens behind the node's rules: a
		// stream that noticed nothing would not be counting what pods see.
		if r.Failed+r.Slow == 0 {
			t.Errorf("No lookup failed or stalled across a SIGKILL and a restart 1 s later: the stream does not see outages")
		}
		runChecks(t, l.Pod1, lab.KubeDNSIP, clusterChecks[:2])
	})
	t.Run("Reload", func(t *testing.T) {
		run(t, lab.Reload, true)
		// The edit is live: a name cached from now on is held 10 s, not 30 s.
		name := "cache.default.svc.cluster.local"
		mustQuery(t, l.Pod1, lab.KubeDNSIP, name, "A")
		r := mustQuery(t, l.Pod1, lab.KubeDNSIP, name, "A")
		if len(r.Answer) == 0 || r.Answer[0].Header().Ttl > 10 {
			t.Errorf("After the reload %s has answer %v, want a TTL of at most 10 s", name, r.Answer)
		}
	})
	t.Run("HandoffRestart", func(t *testing.T) {
		run(t, lab.HandoffRestart, true)
		nat, err := l.NodeRun(ctx, "iptables-save", "-t", "nat")
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(nat, "\n") {
			if strings.HasPrefix(line, "-A") && strings.Contains(line, lab.LocalIP) {
				t.Errorf("A nat rule for %s is left after the restart (the handoff path must go): %s", lab.LocalIP, line)
			}
		}
		if r := mustQuery(t, l.Pod2, lab.LocalIP, "web.default.svc.cluster.local", "A"); r.Rcode != dns.RcodeSuccess {
			t.Errorf("Pod2 after the restart: rcode %s", dns.RcodeToString[r.Rcode])
		}
	})

	var b strings.Builder
	lab.WriteRolloutTable(&b, results)
	t.Logf("\n%s", b.String())
}
