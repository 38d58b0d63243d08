// Command nodebench is `make bench`: it measures the node cache against what
// an operator would run instead, side by side in the node lab (internal/lab),
// and writes out/bench/bench.json, bench.md and latency.png.
//
// Peers: this build both ways users run it (bin/coredns with
// Corefile.example, and as a drop-in with node-cache's flags and the
// official template), with `failopen off` and without the hitpath fast
// path; unbound and dnsdist from
// Debian, configured as node caches (bench/peers); node-cache when a binary
// is given (-node-cache, or NODE_CACHE=path), started the DaemonSet way;
// stock CoreDNS v1.15.0 (installed once with `go install` into the cache
// directory) with Corefile.example minus the nodelocal and hitpath
// directives; the
// no-cache path (pod → kube-proxy DNAT → upstream CoreDNS pods) and a
// ceiling (bin/benchresponder, prebuilt answers).
//
// Cache hits are driven twice: by dnsperf, and by bin/dnsblast, whose
// batched socket I/O keeps the server's core busy where dnsperf's single
// core cannot; qps per core is answered hits per second of server CPU.
//
// Every server runs on CPU 0, every load generator on CPU 1. Rounds are
// interleaved (A B C D A B C D …) and every figure is reported as min /
// median / max over the rounds, with the ratio of this build's median to
// each peer's.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nodelocaldns/nodelocaldns/bench"
	"github.com/nodelocaldns/nodelocaldns/internal/dnsload"
	"github.com/nodelocaldns/nodelocaldns/internal/lab"
)

const (
	stockVersion = "v1.15.0"
	serverCPU    = "0"
	loadCPU      = "1"
	// baseline is the peer the report's per-core ratios are to.
	baseline = "unbound"
	// busyBound is the server core's busy share (%) under which a hit run's
	// qps is the load generator's.
	busyBound = 95
)

// options are the run's settings.
type options struct {
	root, out, cache   string
	rounds, workers    int
	hitD, missD, loadD time.Duration
	populate           []int // cached-name steps for the RSS figures
	outstanding        int   // dnsperf -q
	blastQ             int   // dnsblast -q
	blastSockets       int   // dnsblast -sockets, for peers that set none
	quick              bool
	budget             time.Duration // per peer and round; the run's bound is this × peers × rounds + 10 min
	nodeCache          string        // node-cache binary, "" when none was given
	only               string        // comma-separated peer keys, "" for all
	wait               time.Duration // how long to wait for other labs to end
	profile            bool          // perf profile of this build's hits
}

func main() {
	var o options
	flag.StringVar(&o.root, "root", ".", "repository root (bin/, Corefile.example)")
	flag.StringVar(&o.out, "out", "out/bench", "directory for bench.json, bench.md, latency.png and the raw outputs")
	flag.StringVar(&o.cache, "cache", defaultCache(), "directory where the comparison binaries are kept between runs")
	flag.IntVar(&o.rounds, "rounds", 0, "interleaved rounds (default 3, 2 with -quick)")
	flag.IntVar(&o.workers, "c", 200, "testdns workers in the users' experiment")
	flag.BoolVar(&o.quick, "quick", os.Getenv("BENCH_QUICK") == "1", "a first look in about 6 minutes: 2 rounds of short runs, RSS at 10k names only (also BENCH_QUICK=1)")
	flag.StringVar(&o.nodeCache, "node-cache", os.Getenv("NODE_CACHE"), "node-cache binary built from kubernetes/dns, measured as the official DaemonSet starts it (also NODE_CACHE=path)")
	flag.DurationVar(&o.wait, "wait", 5*time.Minute, "how long to wait for other labs on this machine to end before measuring anyway (the report then says so)")
	flag.BoolVar(&o.profile, "profile", true, "profile this build (perf) while it answers dnsblast's cache hits in the last round: out/bench/profile.txt")
	flag.IntVar(&o.blastSockets, "blast-sockets", 1, "source ports dnsblast asks from, for every peer but `this build, 2 CPUs` (which uses 4 so that its two sockets both get queries)")
	flag.StringVar(&o.only, "peers", "", "measure only these peers, comma-separated keys ("+strings.Join(peerKeys, ",")+")")
	flag.Parse()
	o.outstanding, o.blastQ = 100, 200
	if o.quick {
		o.hitD, o.missD, o.loadD, o.populate, o.budget = 2*time.Second, time.Second, 2*time.Second, []int{10000}, 90*time.Second
		if o.rounds == 0 {
			o.rounds = 2
		}
	} else {
		o.hitD, o.missD, o.loadD, o.populate, o.budget = 5*time.Second, 3*time.Second, 4*time.Second, []int{10000, 100000}, 3*time.Minute
	}
	if o.rounds == 0 {
		o.rounds = 3
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintf(os.Stderr, "nodebench: %v\n", err)
		os.Exit(1)
	}
}

func defaultCache() string {
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "nodelocaldns")
	}
	return filepath.Join(os.TempDir(), "nodelocaldns-cache")
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "nodebench %s: "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// peer is one server set-up under test.
type peer struct {
	bench.Peer
	start  func(ctx context.Context, l *lab.Lab) (*lab.Proc, time.Duration, error) // nil: nothing to start
	hold   bool                                                                    // the bench holds the local IPs for it
	cache  bool                                                                    // it caches: miss and RSS-with-names figures apply
	misses bool                                                                    // the miss figure applies
	// blastSockets is how many source ports dnsblast asks it from (0: the
	// run's -blast-sockets): a server with several sockets needs several.
	blastSockets int
}

func run(ctx context.Context, o options) error {
	t0 := time.Now()
	if os.Geteuid() != 0 {
		return errors.New("the benchmark runs in the node lab, which needs root (network namespaces, inside which only it changes anything): run sudo make bench")
	}
	root, err := filepath.Abs(o.root)
	if err != nil {
		return err
	}
	for _, b := range []string{"coredns", "dnsdelay", "testdns", "benchresponder", "dnsblast"} {
		if _, err := os.Stat(filepath.Join(root, "bin", b)); err != nil {
			return fmt.Errorf("bin/%s missing: run `make build lab-bins bin/benchresponder bin/dnsblast` first", b)
		}
	}
	rep := &bench.Report{Started: t0.UTC(), Quick: o.quick, Rounds: o.rounds, Machine: machine(), Settings: map[string]string{
		"hit_run":          o.hitD.String(),
		"miss_run":         o.missD.String(),
		"testdns_run":      o.loadD.String(),
		"testdns_workers":  strconv.Itoa(o.workers),
		"dnsperf_q":        strconv.Itoa(o.outstanding),
		"dnsblast_q":       strconv.Itoa(o.blastQ),
		"dnsblast_sockets": strconv.Itoa(o.blastSockets),
		"server_cpu":       serverCPU,
		"load_cpu":         loadCPU,
		"upstream_delay":   "1.5ms",
	}}
	pin := runtime.NumCPU() >= 2
	if !pin {
		rep.Notes = append(rep.Notes, "Fewer than 2 CPUs: servers and load generators were not pinned; the figures mix both.")
	}
	// Raw outputs of an earlier run would mix with this one's.
	if err := os.RemoveAll(filepath.Join(o.out, "raw")); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(o.out, "raw"), 0o755); err != nil {
		return err
	}

	want, err := selectPeers(o.only)
	if err != nil {
		return err
	}
	for _, c := range []string{"dnsperf", "unbound", "dnsdist"} {
		if _, err := exec.LookPath(c); err != nil && (c == "dnsperf" || want[c]) {
			return fmt.Errorf("%s missing: `make bench` installs it (Debian package %s)", c, c)
		}
	}
	drop := func(name, reason string) {
		rep.Dropped = append(rep.Dropped, bench.Dropped{Name: name, Reason: reason})
		logf("%s not measured: %s", name, reason)
	}
	stock := ""
	if want["stock"] {
		if stock, err = ensureStock(ctx, o.cache, o.quick); err != nil {
			drop("stock CoreDNS "+stockVersion, err.Error())
		}
	}
	if want["nodecache"] {
		if o.nodeCache == "" {
			drop("node-cache", "no binary given: build it from the kubernetes/dns repository (`go build -mod=vendor ./cmd/node-cache`, outside this one) and run NODE_CACHE=/path/to/node-cache make bench")
		} else {
			abs, err := filepath.Abs(o.nodeCache)
			if err != nil {
				return fmt.Errorf("NODE_CACHE %s: %w", o.nodeCache, err)
			}
			if _, err := os.Stat(abs); err != nil {
				return fmt.Errorf("NODE_CACHE: %w", err)
			}
			o.nodeCache = abs
		}
	}

	var peers []peer
	for _, p := range makePeers(root, stock, o.nodeCache) {
		if want[p.Key] {
			peers = append(peers, p)
			rep.Peers = append(rep.Peers, p.Peer)
		}
	}
	if len(peers) == 0 {
		return errors.New("no peer to measure")
	}
	if want[baseline] {
		rep.Baseline = &bench.Baseline{Peer: baseline, Metrics: []string{"hit_cpu_us", "hit_qps_core", "blast_qps", "blast_cpu_us", "blast_qps_core", "rss_idle", "rss_hits", "rss_10k", "rss_100k"}}
	}

	cfg := lab.DefaultConfig(root)
	cfg.Logf = func(string, ...any) {}
	if pin {
		cfg.ServerCPU = serverCPU
	}
	others, err := waitForOtherLabs(ctx, o.wait)
	if err != nil {
		return err
	}
	if others = labRuns(others); len(others) > 0 {
		logf("other labs still running after %v (%s …): measuring anyway, the report says so", o.wait, others[0])
		rep.Notes = append(rep.Notes, fmt.Sprintf("Other labs were running on this machine when the run started (%s): their load disturbs these figures; compare within a round (the ratios) rather than across runs.", strings.Join(others, ", ")))
	}
	l, err := lab.Up(ctx, cfg)
	if err != nil {
		return err
	}
	logf("lab %s up; servers on CPU %s, load on CPU %s; %d rounds of %d peers", l.ID, serverCPU, loadCPU, o.rounds, len(peers))
	defer func() {
		if cerr := l.Close(); cerr != nil {
			logf("clean up the lab: %v (run `bin/nodelab down`)", cerr)
		}
	}()
	if err := l.AddWildcardZone(ctx, benchZone, benchAddr); err != nil {
		return err
	}
	b := &bencher{o: o, l: l, rep: rep, pin: pin, data: filepath.Join(l.Dir, "bench"), raw: filepath.Join(o.out, "raw"), hists: map[string]map[string][][]dnsload.Bucket{}}
	if err := os.MkdirAll(b.data, 0o755); err != nil {
		return err
	}
	budget := o.budget*time.Duration(len(peers)*o.rounds) + 10*time.Minute
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	for r := 1; r <= o.rounds; r++ {
		for i := 0; i < len(peers); i++ {
			p := peers[i]
			logf("round %d/%d: %s", r, o.rounds, p.Name)
			if err := b.runPeer(ctx, p, r); err != nil {
				if ctx.Err() != nil {
					return fmt.Errorf("stopped in round %d at %s (time budget %v or interrupt): %w", r, p.Name, budget, err)
				}
				if errors.Is(err, errNoSetting) {
					drop(p.Name, err.Error())
					peers = slices.Delete(peers, i, i+1)
					rep.Peers = slices.DeleteFunc(rep.Peers, func(q bench.Peer) bool { return q.Key == p.Key })
					i--
					continue
				}
				return fmt.Errorf("round %d, %s: %w", r, p.Name, err)
			}
		}
	}
	rep.RuntimeS = time.Since(t0).Seconds()
	rep.Summarise()
	rep.Notes = append(rep.Notes, notes(o)...)
	rep.Notes = append(rep.Notes, rep.ClientBound(busyBound, map[string]string{"hit_busy": "dnsperf on one core", "blast_busy": "bin/dnsblast on one core"})...)
	return b.write(peers)
}

// peerKeys are the keys of every peer makePeers knows, for -peers.
var peerKeys = []string{"this", "twocpu", "nohitpath", "dropin", "failopen", "unbound", "dnsdist", "nodecache", "stock", "nocache", "ceiling"}

// selectPeers turns -peers into a set of keys; empty means every peer.
func selectPeers(only string) (map[string]bool, error) {
	want := map[string]bool{}
	if only == "" {
		for _, k := range peerKeys {
			want[k] = true
		}
		return want, nil
	}
	for _, k := range strings.Split(only, ",") {
		k = strings.TrimSpace(k)
		if !slices.Contains(peerKeys, k) {
			return nil, fmt.Errorf("-peers: unknown peer %q (known: %s)", k, strings.Join(peerKeys, ", "))
		}
		want[k] = true
	}
	return want, nil
}

// makePeers lists the peers in column order; this build first, since the
// ratios are of it. stock and nodeCache are binaries, "" when there are
// none.
func makePeers(root, stock, nodeCache string) []peer {
	bin := func(n string) string { return filepath.Join(root, "bin", n) }
	ps := []peer{{
		Peer:  bench.Peer{Key: "this", Name: "this build", What: "bin/coredns, Corefile.example (nodelocal directive sets up link and rules)"},
		cache: true, misses: true,
		start: withNodeCorefile("bench-this", bin("coredns"), func(cf string) string { return cf }),
	}, {
		Peer:  bench.Peer{Key: "twocpu", Name: "this build, 2 CPUs", What: "as this build, with `multisocket 2` in every server block and both CPUs to run on (the load generator shares CPU 1 with it): qps per core against this build's on one; dnsblast asks from 4 source ports, so the kernel's reuseport hash spreads them over both sockets"},
		cache: true, blastSockets: 4,
		start: withNodeCorefileOn("bench-twocpu", bin("coredns"), "0,1", inEveryBlock("multisocket 2")),
	}, {
		Peer:  bench.Peer{Key: "nohitpath", Name: "this build, hitpath off", What: "as this build, without the hitpath directive: every query through the CoreDNS chain"},
		cache: true, misses: true,
		start: withNodeCorefile("bench-nohitpath", bin("coredns"), without("hitpath")),
	}, {
		Peer:  bench.Peer{Key: "dropin", Name: "this build, drop-in", What: "bin/coredns as node-cache's drop-in: the official DaemonSet's args (-localip, -conf, -upstreamsvc) and Corefile template"},
		cache: true, misses: true,
		start: withNodeCacheFlags("bench-dropin", bin("coredns")),
	}, {
		Peer:  bench.Peer{Key: "failopen", Name: "this build, failopen off", What: "as this build, with `failopen off` in the nodelocal block (no socket guard on the NOTRACK rules)"},
		cache: true, misses: true,
		start: needsSetting("failopen", withNodeCorefile("bench-failopen", bin("coredns"), withFailopen("off"))),
	}, {
		Peer:  bench.Peer{Key: "unbound", Name: "unbound", What: "unbound " + strings.TrimPrefix(version("unbound", "-V"), "Version ") + " (Debian), " + peerDir + "/unbound.conf: 1 thread, forward over TCP to kube-dns-upstream, cache-max-ttl 30, cache-max-negative-ttl 5; the bench holds the local IPs and rules"},
		cache: true, misses: true, hold: true,
		start: withPeerConf(root, "bench-unbound", "unbound.conf", "unbound", "-d", "-c", "{}"),
	}, {
		Peer:  bench.Peer{Key: "dnsdist", Name: "dnsdist", What: strings.TrimSpace(strings.Split(version("dnsdist", "--version"), "(")[0]) + " (Debian), " + peerDir + "/dnsdist.conf: packet cache (9984 entries, maxTTL 30, maxNegativeTTL 5), TCP-only backend kube-dns-upstream, 1 TCP worker; the bench holds the local IPs and rules"},
		cache: true, misses: true, hold: true,
		start: withPeerConf(root, "bench-dnsdist", "dnsdist.conf", "dnsdist", "--supervised", "--disable-syslog", "-C", "{}"),
	}}
	if nodeCache != "" {
		ps = append(ps, peer{
			Peer:  bench.Peer{Key: "nodecache", Name: "node-cache", What: nodeCache + " with the official DaemonSet's args and Corefile template; it cannot make its dummy interface on this kernel, so the bench holds the local IPs (on a bridge) and rules for it too"},
			cache: true, misses: true, hold: true,
			start: withNodeCacheFlags("bench-nodecache", nodeCache),
		})
	}
	if stock != "" {
		ps = append(ps, peer{
			Peer:  bench.Peer{Key: "stock", Name: "stock CoreDNS " + stockVersion, What: "the same Corefile without the nodelocal and hitpath directives; the bench holds the local IPs and NOTRACK rules"},
			cache: true, misses: true, hold: true,
			start: withNodeCorefile("bench-stock", stock, without("nodelocal", "hitpath")),
		})
	}
	ps = append(ps,
		peer{Peer: bench.Peer{Key: "nocache", Name: "no cache", What: "pod → kube-proxy DNAT → 2 upstream CoreDNS pods (each behind a 1.5 ms delaying proxy); CPU and RSS are theirs"}, misses: true},
		peer{
			Peer: bench.Peer{Key: "ceiling", Name: "ceiling", What: "bin/benchresponder: prebuilt answers, no cache"},
			hold: true,
			start: func(ctx context.Context, l *lab.Lab) (*lab.Proc, time.Duration, error) {
				return startServer(ctx, l, "bench-ceiling", nil, 10*time.Second, bin("benchresponder"), "-listen", lab.LocalIP+":53,"+lab.KubeDNSIP+":53")
			},
		})
	return ps
}

// withNodeCorefile starts bin as server name with the lab's node Corefile,
// edited, as the DaemonSet would (KUBE_DNS_UPSTREAM_SERVICE_HOST set).
func withNodeCorefile(name, bin string, edit func(string) string) func(context.Context, *lab.Lab) (*lab.Proc, time.Duration, error) {
	return withNodeCorefileOn(name, bin, "", edit)
}

// withNodeCorefileOn is withNodeCorefile on the CPUs cpus (a taskset list;
// "": the server CPU).
func withNodeCorefileOn(name, bin, cpus string, edit func(string) string) func(context.Context, *lab.Lab) (*lab.Proc, time.Duration, error) {
	return func(ctx context.Context, l *lab.Lab) (*lab.Proc, time.Duration, error) {
		cf, err := l.NodeCorefile()
		if err != nil {
			return nil, 0, err
		}
		conf := filepath.Join(l.Dir, name+".Corefile")
		if err := os.WriteFile(conf, []byte(edit(cf)), 0o644); err != nil {
			return nil, 0, err
		}
		if cpus != "" {
			return startServerOn(ctx, l, name, cpus, lab.StockEnv(), 20*time.Second, bin, "-conf", conf)
		}
		return startServer(ctx, l, name, lab.StockEnv(), 20*time.Second, bin, "-conf", conf)
	}
}

// without returns an edit that removes the named directives (a block or a
// single line) from a Corefile, for a CoreDNS that does not have them or a
// run without them.
func without(names ...string) func(string) string {
	return func(cf string) string {
		var out []string
		depth := 0
		for _, line := range strings.Split(cf, "\n") {
			code, _, _ := strings.Cut(line, "#")
			f := strings.Fields(code)
			switch {
			case depth > 0:
				depth += strings.Count(code, "{") - strings.Count(code, "}")
				continue
			case len(f) > 0 && slices.Contains(names, f[0]):
				depth = strings.Count(code, "{") - strings.Count(code, "}")
				continue
			}
			out = append(out, line)
		}
		return strings.Join(out, "\n")
	}
}

// ensureStock returns the cached stock CoreDNS, installing it through the
// Go module proxy the first time (several minutes; the binary is kept),
// except in a quick run.
func ensureStock(ctx context.Context, cache string, quick bool) (string, error) {
	dir := filepath.Join(cache, "stock-coredns-"+stockVersion)
	bin := filepath.Join(dir, "coredns")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if quick {
		return "", fmt.Errorf("not installed in %s yet, and a quick run does not spend the 6 minutes: run `make bench` once", dir)
	}
	logf("installing stock CoreDNS %s into %s (go install; about 6 minutes, once)", stockVersion, dir)
	ctx, cancel := context.WithTimeout(ctx, 20*time.Minute)
	defer cancel()
	if err := goInstall(ctx, dir, "github.com/coredns/coredns@"+stockVersion); err != nil {
		return "", err
	}
	return bin, nil
}

func goInstall(ctx context.Context, gobin, pkg string) error {
	if err := os.MkdirAll(gobin, 0o755); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "go", "install", pkg)
	cmd.Env = append(os.Environ(), "GOBIN="+gobin, "GOFLAGS=-mod=mod", "CGO_ENABLED=0")
	cmd.Dir = os.TempDir() // outside the module: no go.mod of ours applies
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %s", err, firstLines(string(out), 2))
	}
	return nil
}

func firstLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, " / ")
}

func machine() bench.Machine {
	m := bench.Machine{CPUs: runtime.NumCPU()}
	if out, err := exec.Command("lscpu").Output(); err == nil {
		sc := bufio.NewScanner(strings.NewReader(string(out)))
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "Model name:"); ok {
				m.CPU = strings.TrimSpace(v)
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		f := strings.Fields(string(b))
		if len(f) >= 3 {
			m.Load = strings.Join(f[:3], " ")
		}
	}
	return m
}

func notes(o options) []string {
	n := []string{
		fmt.Sprintf("Cache hits: one cached name asked from a pod at the kube-dns IP, %v per run, twice: by dnsperf (%d queries outstanding) and by bin/dnsblast (%d outstanding, sendmmsg/recvmmsg in batches of 32). CPU is the server's utime+stime (/proc/PID/stat) over the run; CPU per query divides it by the answered queries, qps per core divides the answered queries by it. dnsperf on one core tops out near 65–120k qps depending on the machine, so for fast servers its qps is its own; dnsblast's core keeps the server's busy.", o.hitD, o.outstanding, o.blastQ),
		fmt.Sprintf("Ratios to %s: each figure divided by %s's in the same round, then the median over the rounds.", baseline, baseline),
		fmt.Sprintf("Cache misses: dnsperf over names never asked before (a wildcard zone upstream), forwarded over TCP to kube-dns-upstream, whose pods add 1.5 ms; %v per run.", o.missD),
		fmt.Sprintf("Users' experiment: bin/testdns in the pod (resolv.conf: kube-dns IP, ndots:5), %d workers, Go and glibc resolvers, %v per run, one lookup ≥ 5 s is one resolver timeout.", o.workers, o.loadD),
		"RSS with N names: after dnsperf asked N new names (answered upstream); the node Corefile's cluster.local cache holds at most 9984 answers, so past that RSS measures what that size costs.",
		"Start to first answer: from starting the process (ip netns exec, taskset) to the first A answer on 169.254.20.10, asked every 2 ms.",
	}
	return n
}

// labRuns turns the paths of running labs' namespaces into their runs'
// names (nl-<runid>), once each.
func labRuns(paths []string) []string {
	var runs []string
	for _, p := range paths {
		base := filepath.Base(p)
		if i := strings.Index(base[len(lab.Prefix):], "-"); i > 0 {
			base = base[:len(lab.Prefix)+i]
		}
		if !slices.Contains(runs, base) {
			runs = append(runs, base)
		}
	}
	return runs
}

// waitForOtherLabs waits while another lab (a test or demo on this machine)
// is running: its load would skew the figures. After limit it gives up and
// returns the labs still running, so the report can say the figures are
// disturbed. Leftovers of ended runs are the lab's own business (it refuses
// to start and says why).
func waitForOtherLabs(ctx context.Context, limit time.Duration) ([]string, error) {
	deadline := time.Now().Add(limit)
	for said := false; ; said = true {
		left := lab.Running(lab.Prefix)
		if len(left) == 0 || time.Now().After(deadline) {
			return left, nil
		}
		if !said {
			logf("another lab is running (%s …); waiting up to %v for it to end", left[0], limit)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}
