// Command nodebench is `make bench`: it measures the node cache against what
// an operator would run instead, side by side in the node lab (internal/lab),
// and writes out/bench/bench.json, bench.md and latency.png.
//
// Peers: this build (bin/coredns with Corefile.example), stock CoreDNS
// v1.15.0 (installed once with `go install` into the cache directory) with
// the same Corefile minus the nodelocal directive, the no-cache path (pod →
// kube-proxy DNAT → upstream CoreDNS pods) and a ceiling (bin/benchresponder,
// prebuilt answers). node-cache is tried through the Go module proxy and
// dropped with the reason when it cannot be had.
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
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nodelocaldns/nodelocaldns/bench"
	"github.com/nodelocaldns/nodelocaldns/internal/dnsload"
	"github.com/nodelocaldns/nodelocaldns/internal/lab"
)

const (
	stockVersion     = "v1.15.0"
	nodeCacheVersion = "1.26.8"
	serverCPU        = "0"
	loadCPU          = "1"
)

// options are the run's settings.
type options struct {
	root, out, cache   string
	rounds, workers    int
	hitD, missD, loadD time.Duration
	populate           []int // cached-name steps for the RSS figures
	outstanding        int   // dnsperf -q
	quick              bool
	budget             time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.root, "root", ".", "repository root (bin/, Corefile.example)")
	flag.StringVar(&o.out, "out", "out/bench", "directory for bench.json, bench.md, latency.png and the raw outputs")
	flag.StringVar(&o.cache, "cache", defaultCache(), "directory where the comparison binaries are kept between runs")
	flag.IntVar(&o.rounds, "rounds", 0, "interleaved rounds (default 3, 2 with -quick)")
	flag.IntVar(&o.workers, "c", 200, "testdns workers in the users' experiment")
	flag.BoolVar(&o.quick, "quick", os.Getenv("BENCH_QUICK") == "1", "a first look in about 3 minutes: 2 rounds of short runs, RSS at 10k names only (also BENCH_QUICK=1)")
	flag.Parse()
	o.outstanding = 100
	if o.quick {
		o.hitD, o.missD, o.loadD, o.populate, o.budget = 2*time.Second, time.Second, 2*time.Second, []int{10000}, 6*time.Minute
		if o.rounds == 0 {
			o.rounds = 2
		}
	} else {
		o.hitD, o.missD, o.loadD, o.populate, o.budget = 5*time.Second, 3*time.Second, 4*time.Second, []int{10000, 100000}, 15*time.Minute
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
	for _, b := range []string{"coredns", "dnsdelay", "testdns", "benchresponder"} {
		if _, err := os.Stat(filepath.Join(root, "bin", b)); err != nil {
			return fmt.Errorf("bin/%s missing: run `make build lab-bins bin/benchresponder` first", b)
		}
	}
	if _, err := exec.LookPath("dnsperf"); err != nil {
		return errors.New("dnsperf missing: `make bench` installs it (Debian package dnsperf)")
	}
	rep := &bench.Report{Started: t0.UTC(), Quick: o.quick, Rounds: o.rounds, Machine: machine(), Settings: map[string]string{
		"hit_run":         o.hitD.String(),
		"miss_run":        o.missD.String(),
		"testdns_run":     o.loadD.String(),
		"testdns_workers": strconv.Itoa(o.workers),
		"dnsperf_q":       strconv.Itoa(o.outstanding),
		"server_cpu":      serverCPU,
		"load_cpu":        loadCPU,
		"upstream_delay":  "1.5ms",
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

	stock, err := ensureStock(ctx, o.cache)
	if err != nil {
		rep.Dropped = append(rep.Dropped, bench.Dropped{Name: "stock CoreDNS " + stockVersion, Reason: err.Error()})
		logf("stock CoreDNS dropped: %v", err)
	}
	if reason := tryNodeCache(ctx, o.cache); reason != "" {
		rep.Dropped = append(rep.Dropped, bench.Dropped{Name: "node-cache " + nodeCacheVersion, Reason: reason})
		logf("node-cache dropped: %s", reason)
	}

	peers := makePeers(root, stock)
	for _, p := range peers {
		rep.Peers = append(rep.Peers, p.Peer)
	}

	cfg := lab.DefaultConfig(root)
	cfg.Logf = func(string, ...any) {}
	if pin {
		cfg.ServerCPU = serverCPU
	}
	if err := waitForOtherLabs(ctx, 5*time.Minute); err != nil {
		return err
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
	ctx, cancel := context.WithTimeout(ctx, o.budget)
	defer cancel()
	for r := 1; r <= o.rounds; r++ {
		for _, p := range peers {
			logf("round %d/%d: %s", r, o.rounds, p.Name)
			if err := b.runPeer(ctx, p, r); err != nil {
				if ctx.Err() != nil {
					return fmt.Errorf("stopped in round %d at %s (time budget %v or interrupt): %w", r, p.Name, o.budget, err)
				}
				return fmt.Errorf("round %d, %s: %w", r, p.Name, err)
			}
		}
	}
	rep.RuntimeS = time.Since(t0).Seconds()
	rep.Summarise()
	rep.Notes = append(rep.Notes, notes(o)...)
	return b.write(peers)
}

// makePeers lists the peers in column order; this build first, since the
// ratios are of it.
func makePeers(root, stock string) []peer {
	bin := func(n string) string { return filepath.Join(root, "bin", n) }
	ps := []peer{{
		Peer:  bench.Peer{Key: "this", Name: "this build", What: "bin/coredns, Corefile.example (nodelocal directive sets up link and rules)"},
		cache: true, misses: true,
		start: withNodeCorefile("bench-this", bin("coredns"), func(cf string) string { return cf }),
	}}
	if stock != "" {
		ps = append(ps, peer{
			Peer:  bench.Peer{Key: "stock", Name: "stock CoreDNS " + stockVersion, What: "the same Corefile without the nodelocal directive; the bench holds the local IPs and NOTRACK rules"},
			cache: true, misses: true, hold: true,
			start: withNodeCorefile("bench-stock", stock, withoutNodelocal),
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
	return func(ctx context.Context, l *lab.Lab) (*lab.Proc, time.Duration, error) {
		cf, err := l.NodeCorefile()
		if err != nil {
			return nil, 0, err
		}
		conf := filepath.Join(l.Dir, name+".Corefile")
		if err := os.WriteFile(conf, []byte(edit(cf)), 0o644); err != nil {
			return nil, 0, err
		}
		return startServer(ctx, l, name, lab.StockEnv(), 20*time.Second, bin, "-conf", conf)
	}
}

// withoutNodelocal removes the nodelocal directive (a block or a single
// line) from a Corefile, for a CoreDNS that does not have it.
func withoutNodelocal(cf string) string {
	var out []string
	depth := 0
	for _, line := range strings.Split(cf, "\n") {
		code, _, _ := strings.Cut(line, "#")
		f := strings.Fields(code)
		switch {
		case depth > 0:
			depth += strings.Count(code, "{") - strings.Count(code, "}")
			continue
		case len(f) > 0 && f[0] == "nodelocal":
			depth = strings.Count(code, "{") - strings.Count(code, "}")
			continue
		}
		out = append(out, line)
	}
	return strings.Join(out, "\n")
}

// ensureStock returns the cached stock CoreDNS, installing it through the
// Go module proxy the first time (several minutes; the binary is kept).
func ensureStock(ctx context.Context, cache string) (string, error) {
	dir := filepath.Join(cache, "stock-coredns-"+stockVersion)
	bin := filepath.Join(dir, "coredns")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	logf("installing stock CoreDNS %s into %s (go install; about 6 minutes, once)", stockVersion, dir)
	ctx, cancel := context.WithTimeout(ctx, 20*time.Minute)
	defer cancel()
	if err := goInstall(ctx, dir, "github.com/coredns/coredns@"+stockVersion); err != nil {
		return "", err
	}
	return bin, nil
}

// tryNodeCache tries once per run to install k8s-dns-node-cache through the
// Go module proxy and returns why the peer is left out ("" never happens
// yet: running it needs its own flags and template, which this harness
// does not drive).
func tryNodeCache(ctx context.Context, cache string) string {
	dir := filepath.Join(cache, "node-cache-"+nodeCacheVersion)
	bin := filepath.Join(dir, "node-cache")
	if _, err := os.Stat(bin); err == nil {
		return "installed at " + bin + ", but this harness does not drive node-cache's own flags and template yet"
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := goInstall(ctx, dir, "k8s.io/dns/cmd/node-cache@"+nodeCacheVersion); err != nil {
		return "go install k8s.io/dns/cmd/node-cache@" + nodeCacheVersion + " failed: " + err.Error()
	}
	return "installed at " + bin + ", but this harness does not drive node-cache's own flags and template yet"
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
		fmt.Sprintf("Cache hits: dnsperf from a pod to the kube-dns IP, %d queries outstanding, %v per run; CPU is the server's utime+stime (/proc/PID/stat) over the answered queries. dnsperf on one core tops out near 65–70k qps, so past that compare CPU per query.", o.outstanding, o.hitD),
		fmt.Sprintf("Cache misses: dnsperf over names never asked before (a wildcard zone upstream), forwarded over TCP to kube-dns-upstream, whose pods add 1.5 ms; %v per run.", o.missD),
		fmt.Sprintf("Users' experiment: bin/testdns in the pod (resolv.conf: kube-dns IP, ndots:5), %d workers, Go and glibc resolvers, %v per run, one lookup ≥ 5 s is one resolver timeout.", o.workers, o.loadD),
		"RSS with N names: after dnsperf asked N new names (answered upstream); the node Corefile's cluster.local cache holds at most 9984 answers, so past that RSS measures what that size costs.",
		"Start to first answer: from starting the process (ip netns exec, taskset) to the first A answer on 169.254.20.10, asked every 2 ms.",
	}
	return n
}

// waitForOtherLabs waits while another lab (a test or demo on this machine)
// is running: its load would skew the figures. Leftovers of ended runs are
// the lab's own business (it refuses to start and says why).
func waitForOtherLabs(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for said := false; ; said = true {
		left := lab.Running(lab.Prefix)
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("another lab is still running after %v: %s", limit, strings.Join(left, ", "))
		}
		if !said {
			logf("another lab is running (%s …); waiting up to %v for it to end", left[0], limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}
