package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nodelocaldns/nodelocaldns/internal/dnsload"
)

// RolloutCase is one planned or unplanned change of the node cache, made
// while pods look names up.
type RolloutCase int

// The cases of issue 8, in its order.
const (
	// Surge: a second instance starts beside the first, turns ready, then
	// the first gets SIGTERM (DaemonSet maxSurge 1, maxUnavailable 0).
	Surge RolloutCase = iota + 1
	// Restart: SIGTERM, start again 2 s after the exit; pod1 asks the
	// kube-dns IP (kube-proxy iptables mode), which has kube-proxy's path
	// while no cache runs.
	Restart
	// HandoffRestart: the same in IPVS style: the cache holds only
	// 169.254.20.10 and pod2 asks only that.
	HandoffRestart
	// Crash: SIGKILL, start again 1 s later.
	Crash
	// Reload: the Corefile changes (cache TTL) and the reload plugin picks
	// it up.
	Reload
)

func (c RolloutCase) String() string {
	switch c {
	case Surge:
		return "surge upgrade"
	case Restart:
		return "restart (iptables mode)"
	case HandoffRestart:
		return "restart (IPVS style)"
	case Crash:
		return "SIGKILL, start 1 s later"
	case Reload:
		return "Corefile reload"
	}
	return fmt.Sprintf("case %d", int(c))
}

// Behaviour is whose shutdown behaviour the cache shows.
type Behaviour int

const (
	// Ours: Corefile.example as shipped: health lameduck 5s, instances see
	// each other through statedir, the kube-dns IP goes first on SIGTERM,
	// and in IPVS style `teardown handoff`.
	Ours Behaviour = iota
	// NodeCache emulates k8s-dns-node-cache with the directive's settings:
	// `teardown on`, `statedir none` (no instance knows of another, so the
	// old one tears the node down under the new one, and new queries are not
	// steered to the new one) and health without lameduck, as node-cache's
	// template has it. One thing is only
	// approximated: our SIGTERM still removes the kube-dns IP before the
	// rest, but without lameduck the rest follows within milliseconds,
	// which is node-cache's tear-everything-down-at-exit.
	NodeCache
)

func (b Behaviour) String() string {
	if b == NodeCache {
		return "node-cache"
	}
	return "ours"
}

// RolloutStream says how the pods look names up during a case.
type RolloutStream struct {
	Duration time.Duration // of the stream; the change starts 2 s in
	Rate     float64       // lookups/s over all clients
	Limit    time.Duration // lookups taking this long or longer count as slow
}

// DefaultRolloutStream is 500 lookups/s for 15 s, lookups of 1 s or more
// counted as slow (a lost UDP query costs a resolver 5 s).
var DefaultRolloutStream = RolloutStream{Duration: 15 * time.Second, Rate: 500, Limit: time.Second}

// rolloutLead is how long the stream runs before the change.
const rolloutLead = 2 * time.Second

// Client is one load process of a stream and what it measured.
type Client struct {
	Name string // e.g. "glibc udp"
	Load *dnsload.Summary
}

// RolloutResult is what the pods saw during one case.
type RolloutResult struct {
	Case      RolloutCase
	Behaviour Behaviour
	Pods      []string
	Lookups   uint64 // lookups by the resolvers (glibc, Go UDP, Go TCP)
	Failed    uint64
	Slow      uint64 // at or above the stream's limit
	Clients   []Client
	Probe     *ProbeResult  // single UDP queries every 10 ms from each pod, no retries; the longest gap of any pod
	Events    []string      // what was done when, relative to the stream's start
	Ready     time.Duration // Crash: from the new start to its readiness
}

// rolloutClients are the resolvers of a stream: glibc over UDP, Go over
// UDP and over TCP, each asking a cached name (a short name, through the
// pod's search path) and a name never asked before (a wildcard under
// WildDomain, so it exists and misses the cache every time).
var rolloutClients = []struct {
	name  string
	extra []string
	sys   bool
}{
	{"glibc udp", nil, true},
	{"go udp", nil, false},
	{"go tcp", []string{"-tcp"}, false},
}

// rolloutHosts are the names each client asks in turn.
var rolloutHosts = []string{"web", "u-{n}." + WildDomain + "."}

// RolloutCorefile is Corefile.example turned into the case's Corefile: the
// reload plugin checks every 2 s (so the reload case is quick), IPVS style
// holds only 169.254.20.10, and the behaviour's settings.
func (l *Lab) RolloutCorefile(c RolloutCase, b Behaviour) (string, error) {
	src, err := l.exampleCorefile()
	if err != nil {
		return "", err
	}
	return rolloutCorefile(src, c, b)
}

var (
	reloadLine   = regexp.MustCompile(`(?m)^(\s*)reload\b.*$`)
	healthBlock  = regexp.MustCompile(`(?m)^(\s*)health (\S+)\s*\{[^}]*\}`)
	nodelocalTop = regexp.MustCompile(`nodelocal \{`)
)

func rolloutCorefile(src string, c RolloutCase, b Behaviour) (string, error) {
	if !reloadLine.MatchString(src) || !healthBlock.MatchString(src) || !nodelocalTop.MatchString(src) {
		return "", errors.New("the Corefile (Corefile.example) has no reload, health { } or nodelocal { }: the rollout cases need them")
	}
	s := reloadLine.ReplaceAllString(src, "${1}reload 2s 1s")
	var settings []string
	if c == HandoffRestart {
		pair := LocalIP + " " + KubeDNSIP
		if !strings.Contains(s, pair) {
			return "", fmt.Errorf("the Corefile (Corefile.example) has no %q to reduce to the link-local IP", pair)
		}
		s = strings.ReplaceAll(s, pair, LocalIP)
		if b == Ours {
			settings = append(settings, "teardown handoff")
		}
	}
	if b == NodeCache {
		settings = append(settings, "teardown on", "statedir none")
		s = healthBlock.ReplaceAllString(s, "${1}health ${2}")
	}
	if len(settings) > 0 {
		s = strings.Replace(s, "nodelocal {", "nodelocal {\n        "+strings.Join(settings, "\n        "), 1)
	}
	return s, nil
}

// podServer is a pod and the nameserver of its resolv.conf.
type podServer struct{ pod, server string }

// rolloutPods are the pods a case streams from. The iptables-mode cases
// have pods of both kinds, those asking the kube-dns IP and those
// configured for 169.254.20.10, except the plain restart: in iptables mode
// only the kube-dns IP has a path while no cache runs. IPVS style has only
// the link-local kind.
func (l *Lab) rolloutPods(c RolloutCase) []podServer {
	switch c {
	case HandoffRestart:
		return []podServer{{l.Pod2, LocalIP}}
	case Restart:
		return []podServer{{l.Pod1, KubeDNSIP}}
	}
	return []podServer{{l.Pod1, KubeDNSIP}, {l.Pod2, LocalIP}}
}

// RunRollout runs one case: it makes sure one cache instance runs the
// case's Corefile (restarting the cache when it runs another), deletes the
// pods' DNS flows from the node's conntrack table, starts the
// stream from the case's pods, makes the change 2 s in, and returns what
// the pods saw. The cache left running is the case's last instance.
func (l *Lab) RunRollout(ctx context.Context, c RolloutCase, b Behaviour, st RolloutStream) (*RolloutResult, error) {
	corefile, err := l.RolloutCorefile(c, b)
	if err != nil {
		return nil, err
	}
	cur, err := l.ensureCache(ctx, corefile)
	if err != nil {
		return nil, err
	}
	// Conntrack entries of an earlier case (a handoff's DNAT flows live 30 s
	// and more) would answer some of this case's queries by themselves.
	if err := l.ForgetPodDNSFlows(ctx); err != nil {
		return nil, err
	}
	pods := l.rolloutPods(c)
	res := &RolloutResult{Case: c, Behaviour: b}
	for _, p := range pods {
		res.Pods = append(res.Pods, p.pod)
		// The cached name is in the cache before the stream starts.
		for _, qt := range []string{"A", "AAAA"} {
			if _, err := Query(p.pod, p.server, "web.default.svc.cluster.local", qt, false); err != nil {
				return nil, fmt.Errorf("warm-up query from %s: %w", p.pod, err)
			}
		}
	}

	start := time.Now()
	logEvent := func(format string, args ...any) {
		e := fmt.Sprintf("%5.2fs ", time.Since(start).Seconds()) + fmt.Sprintf(format, args...)
		res.Events = append(res.Events, e)
		l.cfg.Logf("%s: %s", c, e)
	}
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		errs   []error
		probes []*ProbeResult
	)
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		errs = append(errs, err)
	}
	rate := st.Rate / float64(len(rolloutClients)*len(pods))
	for _, p := range pods {
		for _, cl := range rolloutClients {
			resolver := "go"
			if cl.sys {
				resolver = "system"
			}
			wg.Go(func() {
				ld, err := l.RunLoad(ctx, LoadSpec{
					Pod: p.pod, Resolver: resolver, Concurrency: 16, Duration: st.Duration, Limit: st.Limit,
					Hosts: rolloutHosts, Extra: append([]string{"-rate", fmt.Sprint(rate)}, cl.extra...),
				})
				if err != nil {
					fail(fmt.Errorf("%s in %s: %w", cl.name, p.pod, err))
					return
				}
				mu.Lock()
				res.Clients = append(res.Clients, Client{Name: cl.name + " @" + p.server, Load: ld})
				mu.Unlock()
			})
		}
		wg.Go(func() {
			pr, err := Probe(p.pod, p.server, "web.default.svc.cluster.local", 10*time.Millisecond, time.Second, st.Duration)
			if err != nil {
				fail(fmt.Errorf("probe in %s: %w", p.pod, err))
				return
			}
			mu.Lock()
			probes = append(probes, pr)
			mu.Unlock()
		})
	}

	select {
	case <-time.After(rolloutLead):
	case <-ctx.Done():
	}
	last, eventErr := l.rolloutEvent(ctx, c, cur, corefile, res, logEvent)
	wg.Wait()
	logEvent("stream done")
	if err := errors.Join(append(errs, eventErr)...); err != nil {
		return res, err
	}
	sort.Slice(res.Clients, func(i, j int) bool { return res.Clients[i].Name < res.Clients[j].Name })
	res.Probe = &ProbeResult{}
	for _, pr := range probes {
		res.Probe.Sent += pr.Sent
		res.Probe.Answered += pr.Answered
		res.Probe.LongestGap = max(res.Probe.LongestGap, pr.LongestGap)
	}
	for _, cl := range res.Clients {
		res.Lookups += cl.Load.Requests
		res.Failed += cl.Load.Errors
		res.Slow += cl.Load.AtOrAboveLimit
	}
	if last != nil && last.Proc.Exited() {
		return res, fmt.Errorf("the cache (pid %d) exited during the stream; its log:\n%s", last.Proc.PID(), last.Proc.Tail(15))
	}
	return res, nil
}

// rolloutEvent makes the case's change and returns the instance left running.
func (l *Lab) rolloutEvent(ctx context.Context, c RolloutCase, cur *Cache, corefile string, res *RolloutResult, logEvent func(string, ...any)) (*Cache, error) {
	switch c {
	case Surge:
		logEvent("start a second instance")
		next, err := l.StartCacheConf(ctx, corefile)
		if err != nil {
			return nil, err
		}
		logEvent("second instance ready (pid %d); SIGTERM to the first (pid %d)", next.Proc.PID(), cur.Proc.PID())
		if err := cur.Stop(); err != nil {
			return next, err
		}
		logEvent("first instance exited")
		return next, nil
	case Restart, HandoffRestart:
		logEvent("SIGTERM (pid %d)", cur.Proc.PID())
		if err := cur.Stop(); err != nil {
			return nil, err
		}
		logEvent("exited; starting again in 2 s")
		time.Sleep(2 * time.Second)
		next, err := l.StartCacheConf(ctx, corefile)
		if err != nil {
			return nil, err
		}
		logEvent("new instance ready (pid %d)", next.Proc.PID())
		return next, nil
	case Crash:
		logEvent("SIGKILL (pid %d)", cur.Proc.PID())
		if err := cur.Kill(); err != nil {
			return nil, err
		}
		time.Sleep(time.Second)
		logEvent("start again")
		t0 := time.Now()
		next, err := l.StartCacheConf(ctx, corefile)
		if err != nil {
			return nil, err
		}
		res.Ready = time.Since(t0)
		logEvent("new instance ready (pid %d) %v after its start", next.Proc.PID(), res.Ready.Round(time.Millisecond))
		return next, nil
	case Reload:
		before := strings.Count(readFile(cur.Proc.Log), reloadedLine)
		edited, err := editCacheTTL(corefile)
		if err != nil {
			return cur, err
		}
		logEvent("Corefile edited (cluster.local success TTL cap 30 s → 10 s)")
		if err := os.WriteFile(cur.Conf, []byte(edited), 0o644); err != nil {
			return cur, err
		}
		err = waitFor(ctx, 10*time.Second, func() error {
			if strings.Count(readFile(cur.Proc.Log), reloadedLine) > before {
				return nil
			}
			if cur.Proc.Exited() {
				return errExited
			}
			return errors.New("no reload yet")
		})
		if err != nil {
			return cur, fmt.Errorf("the reload plugin did not pick up the edit: %w; log:\n%s", err, cur.Proc.Tail(10))
		}
		logEvent("reloaded")
		cur.src = edited
		return cur, nil
	}
	return cur, fmt.Errorf("unknown case %d", int(c))
}

// reloadedLine is what caddy logs when a reload has completed.
const reloadedLine = "[INFO] Reloading complete"

var successCache = regexp.MustCompile(`success (\S+) 30\b`)

// editCacheTTL lowers the cap on cached answers' TTL in cluster.local from
// 30 s to 10 s, a change a pod can see in the TTLs it gets.
func editCacheTTL(corefile string) (string, error) {
	if !successCache.MatchString(corefile) {
		return "", errors.New("the Corefile (Corefile.example) has no `success N 30` in its cache block to edit")
	}
	return successCache.ReplaceAllString(corefile, "success ${1} 10"), nil
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// ensureCache leaves exactly one cache instance running, with corefile: the
// running one when it has it, else a new one after the others stopped.
func (l *Lab) ensureCache(ctx context.Context, corefile string) (*Cache, error) {
	l.mu.Lock()
	caches := append([]*Cache(nil), l.caches...)
	l.mu.Unlock()
	if len(caches) == 1 && caches[0].src == corefile && !caches[0].Proc.Exited() {
		return caches[0], nil
	}
	for i := len(caches) - 1; i >= 0; i-- {
		if err := caches[i].Stop(); err != nil {
			return nil, err
		}
	}
	return l.StartCacheConf(ctx, corefile)
}

// WriteRolloutTable prints results as a markdown table, one row per result
// in the order given.
func WriteRolloutTable(w io.Writer, results []*RolloutResult) {
	fmt.Fprintf(w, "| %-26s | %-10s | %7s | %6s | %5s | %11s | %12s |\n", "case", "behaviour", "lookups", "failed", ">1 s", "longest gap", "probes lost")
	fmt.Fprintf(w, "|%s|%s|%s|%s|%s|%s|%s|\n", strings.Repeat("-", 28), strings.Repeat("-", 12), strings.Repeat("-", 9), strings.Repeat("-", 8), strings.Repeat("-", 7), strings.Repeat("-", 13), strings.Repeat("-", 14))
	for _, r := range results {
		gap, lost := "-", "-"
		if r.Probe != nil {
			gap = r.Probe.LongestGap.Round(10 * time.Millisecond).String()
			lost = fmt.Sprintf("%d/%d", r.Probe.Sent-r.Probe.Answered, r.Probe.Sent)
		}
		fmt.Fprintf(w, "| %-26s | %-10s | %7d | %6d | %5d | %11s | %12s |\n", r.Case, r.Behaviour, r.Lookups, r.Failed, r.Slow, gap, lost)
	}
}
