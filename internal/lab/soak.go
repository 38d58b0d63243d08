package lab

import (
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nodelocaldns/nodelocaldns/internal/dnsload"
)

// SoakSpec is a bounded soak of the node cache: mixed traffic for Duration
// while the Corefile is reloaded and the node tampered with, the cache's
// resources sampled throughout.
type SoakSpec struct {
	Duration    time.Duration
	SampleEvery time.Duration // resource samples
	ReloadEvery time.Duration // SIGUSR1 with an edited Corefile
	TamperEvery time.Duration // an address, the link or a rule chain taken away
	Rate        int           // lookups per second of each of the three clients
}

// SoakSpecFor scales the periods to the duration: about 30 samples, 10
// reloads and 20 tampers, whatever it is.
func SoakSpecFor(d time.Duration) SoakSpec {
	return SoakSpec{Duration: d, SampleEvery: d / 30, ReloadEvery: d / 10, TamperEvery: d / 20, Rate: 100}
}

// SoakSample is the cache's resources at one moment.
type SoakSample struct {
	At         time.Duration
	RSS        int64 // bytes
	Goroutines int
	FDs        int
}

// SoakResult is what a soak saw.
type SoakResult struct {
	Samples    []SoakSample
	SuperRSS   int64 // RSS of the supervising parent process, last sample
	Reloads    int   // reloads the cache logged as complete
	Tampers    int
	Repairs    float64 // coredns_nodelocal_repairs_total at the end
	Clients    map[string]*dnsload.Summary
	SampleErrs []string // samples that could not be taken
}

// soakCorefile is the node Corefile with a short sync, so tampering is
// repaired within the soak's rhythm, and a cache size the reloads edit.
func (l *Lab) soakCorefile(edit int) (string, error) {
	src, err := l.NodeCorefile()
	if err != nil {
		return "", err
	}
	src = strings.Replace(src, "nodelocal {", "nodelocal {\n        sync 1s", 1)
	// The last server block's cache capacity changes with each reload, so
	// every reload parses a new Corefile.
	i := strings.LastIndex(src, "cache 30")
	if i < 0 {
		return "", fmt.Errorf("Corefile.example has no `cache 30` for the soak's reloads to edit")
	}
	return src[:i] + "cache " + strconv.Itoa(30+edit%2) + src[i+len("cache 30"):], nil
}

// RunSoak starts a cache and soaks it (see SoakSpec); the cache is stopped
// at the end. Lookups from three clients run throughout: pod1's glibc
// resolver asking cached cluster names over UDP (hits), pod2's Go resolver
// asking names never asked before (misses, to the upstream, which answers
// every name under WildDomain), and pod2's Go
// resolver asking cached names over TCP.
func (l *Lab) RunSoak(ctx context.Context, s SoakSpec) (*SoakResult, error) {
	conf, err := l.soakCorefile(0)
	if err != nil {
		return nil, err
	}
	c, err := l.StartCacheConf(ctx, conf)
	if err != nil {
		return nil, err
	}
	defer c.Stop()
	res := &SoakResult{Clients: map[string]*dnsload.Summary{}}
	rate := strconv.Itoa(s.Rate)
	clients := []struct {
		name string
		spec LoadSpec
	}{
		{"hits/udp", LoadSpec{Pod: l.Pod1, Resolver: "system", Concurrency: 4, Hosts: []string{Services[0].Name}, Extra: []string{"-rate", rate}}},
		{"misses/udp", LoadSpec{Pod: l.Pod2, Resolver: "go", Concurrency: 4, Hosts: []string{"soak-{n}." + WildDomain}, Extra: []string{"-rate", rate}}},
		{"hits/tcp", LoadSpec{Pod: l.Pod2, Resolver: "go", Concurrency: 4, Hosts: []string{Services[0].Name}, Extra: []string{"-rate", rate, "-tcp"}}},
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var loadErrs []string
	for _, cl := range clients {
		cl.spec.Duration = s.Duration
		wg.Add(1)
		go func() {
			defer wg.Done()
			sum, err := l.RunLoad(ctx, cl.spec)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				loadErrs = append(loadErrs, fmt.Sprintf("%s: %v", cl.name, err))
				return
			}
			res.Clients[cl.name] = sum
		}()
	}

	start := time.Now()
	sample, reload, tamper := time.NewTicker(s.SampleEvery), time.NewTicker(s.ReloadEvery), time.NewTicker(s.TamperEvery)
	defer sample.Stop()
	defer reload.Stop()
	defer tamper.Stop()
	end := time.After(s.Duration)
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-end:
			break loop
		case <-sample.C:
			sm, super, err := l.sampleCache(c)
			if err != nil {
				res.SampleErrs = append(res.SampleErrs, err.Error())
				continue
			}
			sm.At = time.Since(start)
			res.Samples = append(res.Samples, sm)
			res.SuperRSS = super
		case <-reload.C:
			res.Reloads++ // counted again from the log below
			conf, err := l.soakCorefile(res.Reloads)
			if err == nil {
				err = os.WriteFile(c.Conf, []byte(l.withStatedir(conf)), 0o644)
			}
			if err == nil {
				err = c.Signal(syscall.SIGUSR1)
			}
			if err != nil {
				return nil, fmt.Errorf("reload: %w", err)
			}
		case <-tamper.C:
			l.soakTamper(ctx, res.Tampers)
			res.Tampers++
		}
	}
	wg.Wait()
	if len(loadErrs) > 0 {
		return res, fmt.Errorf("load: %s", strings.Join(loadErrs, "; "))
	}
	if body, err := c.Metrics(); err == nil {
		res.Repairs = SumMetric(body, "coredns_nodelocal_repairs_total")
	}
	res.Reloads = strings.Count(readFile(c.Proc.Log), "Reloading complete")
	return res, ctx.Err()
}

// soakTamper takes something away from the node as another program would:
// in turn the kube-dns IP's address, the link's up state, and the rules of
// the raw table (both iptables backends; the one not in use fails).
func (l *Lab) soakTamper(ctx context.Context, n int) {
	switch n % 3 {
	case 0:
		l.NodeRun(ctx, "ip", "addr", "del", KubeDNSIP+"/32", "dev", "nodelocaldns")
	case 1:
		l.NodeRun(ctx, "ip", "link", "set", "nodelocaldns", "down")
	case 2:
		for _, ipt := range []string{"iptables-nft", "iptables-legacy"} {
			l.NodeRun(ctx, ipt, "-t", "raw", "-F", "NODELOCALDNS-PREROUTING")
		}
	}
}

// sampleCache reads the server's RSS and open files from /proc and its
// goroutines from its metrics. The lab starts the binary, which is the
// supervising parent; the server is its child. The parent's RSS is
// returned beside.
func (l *Lab) sampleCache(c *Cache) (SoakSample, int64, error) {
	super, pid := c.Proc.PID(), c.Proc.ServerPID()
	var sm SoakSample
	rss, err := vmRSS(pid)
	if err != nil {
		return sm, 0, err
	}
	sm.RSS = rss
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return sm, 0, err
	}
	sm.FDs = len(fds)
	body, err := c.Metrics()
	if err != nil {
		return sm, 0, fmt.Errorf("metrics: %w", err)
	}
	sm.Goroutines = int(SumMetric(body, "go_goroutines"))
	superRSS := int64(0)
	if pid != super {
		superRSS, _ = vmRSS(super)
	}
	return sm, superRSS, nil
}

// vmRSS reads a process's resident set from /proc/PID/status, in bytes.
func vmRSS(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// Flatness: the first third of a soak is warm-up (the caches fill to their
// capacity, the Go runtime and the listeners' pools grow to the load), so
// a resource is flat when the median of the last third is within a
// tolerance of the median of the middle third. A leak grows steadily and
// shows between those two; medians ignore the single sample a GC or a
// reload's second set of listeners lifts. The tolerance is relative plus
// an absolute slack, for small counts (a few goroutines per TCP client
// connection come and go).
var (
	FlatRSS        = Tolerance{Frac: 0.10, Slack: 4 << 20}
	FlatGoroutines = Tolerance{Frac: 0.10, Slack: 10}
	FlatFDs        = Tolerance{Frac: 0.10, Slack: 10}
)

// Tolerance is how far the last third's median may rise above the middle
// third's: Frac of it plus Slack.
type Tolerance struct {
	Frac  float64
	Slack float64
}

// Trend is one resource over a soak: the medians of its three thirds.
type Trend struct {
	Name                string
	First, Middle, Last float64
	Tolerance           Tolerance
}

// Flat says whether the last third stayed within the tolerance of the middle.
func (t Trend) Flat() bool {
	return t.Last <= t.Middle*(1+t.Tolerance.Frac)+t.Tolerance.Slack
}

func (t Trend) String() string {
	verdict := "flat"
	if !t.Flat() {
		verdict = "GROWING"
	}
	f := func(v float64) string {
		if t.Name == "RSS" {
			return fmt.Sprintf("%.1f MiB", v/(1<<20))
		}
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%-10s first third %s, middle %s, last %s: %s", t.Name, f(t.First), f(t.Middle), f(t.Last), verdict)
}

// Trends returns the RSS, goroutine and fd trends of the samples; an error
// when there are too few samples for thirds.
func (r *SoakResult) Trends() ([]Trend, error) {
	if len(r.Samples) < 6 {
		return nil, fmt.Errorf("%d samples, want at least 6", len(r.Samples))
	}
	pick := []struct {
		name string
		tol  Tolerance
		get  func(SoakSample) float64
	}{
		{"RSS", FlatRSS, func(s SoakSample) float64 { return float64(s.RSS) }},
		{"goroutines", FlatGoroutines, func(s SoakSample) float64 { return float64(s.Goroutines) }},
		{"fds", FlatFDs, func(s SoakSample) float64 { return float64(s.FDs) }},
	}
	n := len(r.Samples)
	var out []Trend
	for _, p := range pick {
		third := func(i int) float64 {
			var v []float64
			for _, s := range r.Samples[i*n/3 : (i+1)*n/3] {
				v = append(v, p.get(s))
			}
			return median(v)
		}
		out = append(out, Trend{Name: p.name, First: third(0), Middle: third(1), Last: third(2), Tolerance: p.tol})
	}
	return out, nil
}

func median(v []float64) float64 {
	v = slices.Clone(v)
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// WriteSoak writes a soak's figures: the samples, the trends, the traffic.
func WriteSoak(w io.Writer, r *SoakResult) {
	fmt.Fprintf(w, "%8s %9s %10s %5s\n", "at", "RSS MiB", "goroutines", "fds")
	for _, s := range r.Samples {
		fmt.Fprintf(w, "%8s %9.1f %10d %5d\n", s.At.Round(time.Second), float64(s.RSS)/(1<<20), s.Goroutines, s.FDs)
	}
	if trends, err := r.Trends(); err == nil {
		for _, t := range trends {
			fmt.Fprintln(w, t)
		}
	}
	fmt.Fprintf(w, "supervising parent RSS %.1f MiB; %d reloads, %d tampers, %.0f repairs\n", float64(r.SuperRSS)/(1<<20), r.Reloads, r.Tampers, r.Repairs)
	for _, name := range slices.Sorted(maps.Keys(r.Clients)) {
		s := r.Clients[name]
		fmt.Fprintf(w, "%-10s %7d lookups, %d failed, %d ≥ limit, max %.0f ms\n", name, s.Requests, s.Errors, s.AtOrAboveLimit, s.Latency.MaxMS)
	}
	if len(r.SampleErrs) > 0 {
		fmt.Fprintf(w, "%d samples failed, first: %s\n", len(r.SampleErrs), r.SampleErrs[0])
	}
}
