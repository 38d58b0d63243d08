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
	// CrashLoop: SIGKILL, and no instance for 10 s (kubelet's back-off in
	// a crash loop), then a start.
	CrashLoop
	// SurgeKill: a second instance starts beside the first and is
	// SIGKILLed once ready; it starts again 1 s later, then the first gets
	// SIGTERM (a surge whose new pod crashes once).
	SurgeKill
	// OOMKill: SIGKILL in the middle of a burst of lookups on top of the
	// stream (the OOM killer strikes under load), start 1 s later.
	OOMKill
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
	case CrashLoop:
		return "SIGKILL, 10 s without cache"
	case SurgeKill:
		return "SIGKILL of the surge pod"
	case OOMKill:
		return "SIGKILL under a burst"
	}
	return fmt.Sprintf("case %d", int(c))
}

// Killing reports whether the case SIGKILLs a cache instance: the pods
// then lose at most the queries the killed process held.
func (c RolloutCase) Killing() bool {
	return c == Crash || c == CrashLoop || c == SurgeKill || c == OOMKill
}

// stream is the case's stream: the SIGKILL cases are shorter (what they
// show happens within a few seconds of the kill), except the crash loop,
// which needs its 10 s without cache. They count a lookup as slow from 4 s:
// a query lost in the killed process costs its resolver the 5 s timeout,
// and a busy machine's CPU waits of a second or two are not what they
// measure.
func (c RolloutCase) stream(st RolloutStream) RolloutStream {
	if c.Killing() {
		st.Limit = max(st.Limit, killLimit)
	}
	switch c {
	case Crash, OOMKill:
		st.Duration = min(st.Duration, 8*time.Second)
	case SurgeKill:
		st.Duration = min(st.Duration, 10*time.Second)
	case CrashLoop:
		st.Duration = max(st.Duration, 15*time.Second)
	}
	return st
}

// killLimit is the SIGKILL cases' slow-lookup threshold.
const killLimit = 4 * time.Second

// NodeMode is the kind of node a case runs on: kube-proxy's mode and the
// cache's rules, and what the pods ask.
type NodeMode string

// The node modes of the rollout cases.
const (
	// NodeIptables: kube-proxy iptables mode through the nft backend; the
	// cache holds 169.254.20.10 and the kube-dns IP (Corefile.example).
	NodeIptables NodeMode = "iptables"
	// NodeIptablesLegacy: the same through iptables-legacy (the cache's
	// `rules iptables auto` finds kube-proxy's rules there).
	NodeIptablesLegacy NodeMode = "iptables-legacy"
	// NodeNftables: kube-proxy nftables mode (table ip kube-proxy); the
	// cache with `rules nftables`.
	NodeNftables NodeMode = "nftables"
	// NodeIPVS: IPVS style: the cache holds only 169.254.20.10 (with
	// `teardown handoff` in our behaviour); kube-proxy's rules stay
	// iptables (no IPVS in the lab's kernel).
	NodeIPVS NodeMode = "ipvs"
)

// NodeModes lists every node mode.
var NodeModes = []NodeMode{NodeIptables, NodeIptablesLegacy, NodeNftables, NodeIPVS}

func (m NodeMode) kubeProxy() KubeProxyMode {
	switch m {
	case NodeIptablesLegacy:
		return KubeProxyIptablesLegacy
	case NodeNftables:
		return KubeProxyNftables
	}
	return KubeProxyIptables
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
	Node      NodeMode
	Stream    RolloutStream // as run
	Pods      []string
	Lookups   uint64 // lookups by the resolvers (glibc, Go UDP, Go TCP)
	Failed    uint64
	Slow      uint64 // at or above the stream's limit
	Clients   []Client
	Probe     *ProbeResult  // single UDP queries every 10 ms from each pod, no retries; the longest gap of any pod
	Events    []string      // what was done when, relative to the stream's start
	Ready     time.Duration // Crash: from the new start to its readiness
	// Held is, for the SIGKILL cases, how many queries the ended processes
	// held: the UDP queries the node's rules delivered to the cache's
	// sockets (their NOTRACK rule's counter) that got no reply (the reply
	// rule's counter), from the start of the stream to just after the last
	// instance ended (the killed one; in a surge, the old one after it),
	// plus the TCP resets the node sent across each end (Tcp OutRsts).
	Held uint64
	// HeldUDP and HeldTCP split Held.
	HeldUDP, HeldTCP uint64
	stop             func(*Cache) error // SIGTERM, counting what the instance held
	// UpstreamDrops are the UDP queries the DNS pods' full sockets dropped
	// during the stream (UdpRcvbufErrors of their namespaces): the losses
	// of the path without cache, which a node with no cache has as well.
	UpstreamDrops uint64
}

// Slow counts the lookups of the result's clients asking server (all of
// them for "") that took the stream's limit or longer; Failed counts those
// that failed.
func (r *RolloutResult) SlowFailed(server string) (slow, failed uint64) {
	for _, cl := range r.Clients {
		if server == "" || strings.HasSuffix(cl.Name, "@"+server) {
			slow += cl.Load.AtOrAboveLimit
			failed += cl.Load.Errors
		}
	}
	return slow, failed
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
// holds only 169.254.20.10, nftables mode has `rules nftables`, and the
// behaviour's settings.
func (l *Lab) RolloutCorefile(c RolloutCase, b Behaviour, m NodeMode) (string, error) {
	src, err := l.exampleCorefile()
	if err != nil {
		return "", err
	}
	return rolloutCorefile(src, c, b, m)
}

var (
	reloadLine   = regexp.MustCompile(`(?m)^(\s*)reload\b.*$`)
	healthBlock  = regexp.MustCompile(`(?m)^(\s*)health (\S+)\s*\{[^}]*\}`)
	nodelocalTop = regexp.MustCompile(`nodelocal \{`)
)

func rolloutCorefile(src string, c RolloutCase, b Behaviour, m NodeMode) (string, error) {
	if !reloadLine.MatchString(src) || !healthBlock.MatchString(src) || !nodelocalTop.MatchString(src) {
		return "", errors.New("the Corefile (Corefile.example) has no reload, health { } or nodelocal { }: the rollout cases need them")
	}
	s := reloadLine.ReplaceAllString(src, "${1}reload 2s 1s")
	var settings []string
	if c == HandoffRestart || m == NodeIPVS {
		pair := LocalIP + " " + KubeDNSIP
		if !strings.Contains(s, pair) {
			return "", fmt.Errorf("the Corefile (Corefile.example) has no %q to reduce to the link-local IP", pair)
		}
		s = strings.ReplaceAll(s, pair, LocalIP)
		if b == Ours {
			settings = append(settings, "teardown handoff")
		}
	}
	if m == NodeNftables {
		settings = append(settings, "rules nftables")
	}
	if b == NodeCache {
		settings = append(settings, "teardown on", "statedir none", "failopen off")
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
func (l *Lab) rolloutPods(c RolloutCase, m NodeMode) []podServer {
	switch {
	case c == HandoffRestart, c == Restart && m == NodeIPVS:
		return []podServer{{l.Pod2, LocalIP}}
	case c == Restart:
		return []podServer{{l.Pod1, KubeDNSIP}}
	}
	return []podServer{{l.Pod1, KubeDNSIP}, {l.Pod2, LocalIP}}
}

// RunRollout runs one case on the lab's default node (NodeIptables; the
// IPVS-style restart on NodeIPVS), see RunRolloutOn.
func (l *Lab) RunRollout(ctx context.Context, c RolloutCase, b Behaviour, st RolloutStream) (*RolloutResult, error) {
	m := NodeIptables
	if c == HandoffRestart {
		m = NodeIPVS
	}
	return l.RunRolloutOn(ctx, c, b, m, st)
}

// RunRolloutOn runs one case on a node of mode m: it makes sure one cache
// instance runs the case's Corefile with kube-proxy in m's mode
// (restarting the cache when it runs another, or kube-proxy changes mode),
// deletes the pods' DNS flows from the node's conntrack table, starts the
// stream from the case's pods, makes the change 2 s in, and returns what
// the pods saw. The cache left running is the case's last instance.
func (l *Lab) RunRolloutOn(ctx context.Context, c RolloutCase, b Behaviour, m NodeMode, st RolloutStream) (*RolloutResult, error) {
	st = c.stream(st)
	corefile, err := l.RolloutCorefile(c, b, m)
	if err != nil {
		return nil, err
	}
	if l.KubeProxy() != m.kubeProxy() {
		if err := l.stopCaches(); err != nil {
			return nil, err
		}
		if err := l.SetKubeProxy(ctx, m.kubeProxy()); err != nil {
			return nil, err
		}
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
	pods := l.rolloutPods(c, m)
	res := &RolloutResult{Case: c, Behaviour: b, Node: m, Stream: st}
	for _, p := range pods {
		res.Pods = append(res.Pods, p.pod)
		// The cached name is in the cache before the stream starts.
		for _, qt := range []string{"A", "AAAA"} {
			if _, err := Query(p.pod, p.server, "web.default.svc.cluster.local", qt, false); err != nil {
				return nil, fmt.Errorf("warm-up query from %s: %w", p.pod, err)
			}
		}
	}

	var base dnsCounters
	var drops0 uint64
	if c.Killing() {
		if base, err = l.cacheDNSCounters(ctx, m); err != nil {
			return nil, err
		}
		if drops0, err = l.UDPRcvbufErrors(ctx, l.DNS1, l.DNS2); err != nil {
			return nil, err
		}
	}
	start := time.Now()
	var evMu sync.Mutex
	logEvent := func(format string, args ...any) {
		evMu.Lock()
		defer evMu.Unlock()
		e := fmt.Sprintf("%5.2fs ", time.Since(start).Seconds()) + fmt.Sprintf(format, args...)
		res.Events = append(res.Events, e)
		l.cfg.Logf("%s (%s): %s", c, m, e)
	}
	// ending ends an instance (SIGKILL, or the SIGTERM that ends a
	// surge) and counts what it held: the UDP queries never answered since
	// the stream began, and the TCP resets the node sent across its end.
	ending := func(victim *Cache, end func() error) error {
		rsts, err := l.tcpOutRsts(ctx)
		if err != nil {
			return err
		}
		if err := end(); err != nil {
			return err
		}
		after, err := l.cacheDNSCounters(ctx, m)
		if err != nil {
			return err
		}
		rsts2, err := l.tcpOutRsts(ctx)
		if err != nil {
			return err
		}
		res.HeldUDP, res.HeldTCP = after.held(base), res.HeldTCP+rsts2-rsts
		res.Held = res.HeldUDP + res.HeldTCP
		logEvent("pid %d gone; unanswered since the stream began: %d UDP queries (%d delivered to the cache, %d answered); %d TCP connections reset", victim.Proc.PID(), res.HeldUDP, after.in-base.in, after.out-base.out, rsts2-rsts)
		return nil
	}
	kill := func(victim *Cache) error {
		logEvent("SIGKILL (pid %d)", victim.Proc.PID())
		return ending(victim, victim.Kill)
	}
	res.stop = func(victim *Cache) error { return ending(victim, victim.Stop) }
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
	addClient := func(cl Client) {
		mu.Lock()
		defer mu.Unlock()
		res.Clients = append(res.Clients, cl)
	}
	last, eventErr := l.rolloutEvent(ctx, c, cur, corefile, res, logEvent, kill, addClient, pods, st)
	wg.Wait()
	if c.Killing() {
		drops, err := l.UDPRcvbufErrors(ctx, l.DNS1, l.DNS2)
		if err != nil {
			return res, err
		}
		res.UpstreamDrops = drops - drops0
	}
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
func (l *Lab) rolloutEvent(ctx context.Context, c RolloutCase, cur *Cache, corefile string, res *RolloutResult, logEvent func(string, ...any), kill func(*Cache) error, addClient func(Client), pods []podServer, st RolloutStream) (*Cache, error) {
	restartAfter := func(d time.Duration) (*Cache, error) {
		time.Sleep(d)
		logEvent("start again")
		t0 := time.Now()
		next, err := l.StartCacheConf(ctx, corefile)
		if err != nil {
			return nil, err
		}
		res.Ready = time.Since(t0)
		logEvent("new instance ready (pid %d) %v after its start", next.Proc.PID(), res.Ready.Round(time.Millisecond))
		return next, nil
	}
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
	case Crash, CrashLoop:
		if err := kill(cur); err != nil {
			return nil, err
		}
		if c == CrashLoop {
			return restartAfter(10 * time.Second)
		}
		return restartAfter(time.Second)
	case SurgeKill:
		logEvent("start a second instance")
		next, err := l.StartCacheConf(ctx, corefile)
		if err != nil {
			return nil, err
		}
		logEvent("second instance ready (pid %d)", next.Proc.PID())
		time.Sleep(500 * time.Millisecond)
		if err := kill(next); err != nil {
			return nil, err
		}
		next, err = restartAfter(time.Second)
		if err != nil {
			return nil, err
		}
		logEvent("SIGTERM to the first (pid %d)", cur.Proc.PID())
		if err := res.stop(cur); err != nil {
			return next, err
		}
		logEvent("first instance exited")
		return next, nil
	case OOMKill:
		const burst = 3 * time.Second
		logEvent("burst: 32 more Go UDP lookups in flight from each pod for %v", burst)
		var wg sync.WaitGroup
		var mu sync.Mutex
		var errs []error
		for _, p := range pods {
			wg.Go(func() {
				ld, err := l.RunLoad(ctx, LoadSpec{Pod: p.pod, Resolver: "go", Concurrency: 32, Duration: burst, Limit: st.Limit, Hosts: rolloutHosts})
				if err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("burst in %s: %w", p.pod, err))
					mu.Unlock()
					return
				}
				addClient(Client{Name: "burst go udp @" + p.server, Load: ld})
			})
		}
		time.Sleep(burst / 2)
		err := kill(cur)
		var next *Cache
		if err == nil {
			next, err = restartAfter(time.Second)
		}
		wg.Wait()
		return next, errors.Join(append(errs, err)...)
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

// stopCaches stops every cache instance, newest first.
func (l *Lab) stopCaches() error {
	l.mu.Lock()
	caches := append([]*Cache(nil), l.caches...)
	l.mu.Unlock()
	for i := len(caches) - 1; i >= 0; i-- {
		if err := caches[i].Stop(); err != nil {
			return err
		}
	}
	return nil
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
	if err := l.stopCaches(); err != nil {
		return nil, err
	}
	return l.StartCacheConf(ctx, corefile)
}

// WriteRolloutTable prints results as a markdown table, one row per result
// in the order given.
func WriteRolloutTable(w io.Writer, results []*RolloutResult) {
	fmt.Fprintf(w, "| %-27s | %-15s | %-10s | %7s | %6s | %5s | %4s | %11s | %12s |\n", "case", "node", "behaviour", "lookups", "failed", "slow", "held", "longest gap", "probes lost")
	fmt.Fprintf(w, "|%s|%s|%s|%s|%s|%s|%s|%s|%s|\n", strings.Repeat("-", 29), strings.Repeat("-", 17), strings.Repeat("-", 12), strings.Repeat("-", 9), strings.Repeat("-", 8), strings.Repeat("-", 7), strings.Repeat("-", 6), strings.Repeat("-", 13), strings.Repeat("-", 14))
	for _, r := range results {
		gap, lost := "-", "-"
		if r.Probe != nil {
			gap = r.Probe.LongestGap.Round(10 * time.Millisecond).String()
			lost = fmt.Sprintf("%d/%d", r.Probe.Sent-r.Probe.Answered, r.Probe.Sent)
		}
		held := "-"
		// Only the guard makes the counters mean "held": unguarded rules
		// also count what reaches the closed port after the kill.
		if r.Case.Killing() && r.Behaviour == Ours {
			held = fmt.Sprint(r.Held)
		}
		fmt.Fprintf(w, "| %-27s | %-15s | %-10s | %7d | %6d | %5d | %4s | %11s | %12s |\n", r.Case, r.Node, r.Behaviour, r.Lookups, r.Failed, r.Slow, held, gap, lost)
	}
}
