package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nodelocaldns/nodelocaldns/bench"
	"github.com/nodelocaldns/nodelocaldns/internal/dnsload"
	"github.com/nodelocaldns/nodelocaldns/internal/lab"
)

// bencher runs the rounds and collects the figures.
type bencher struct {
	o     options
	l     *lab.Lab
	rep   *bench.Report
	pin   bool
	data  string                                   // dnsperf data files
	raw   string                                   // raw outputs kept under out/bench/raw
	hists map[string]map[string][][]dnsload.Bucket // resolver → peer → testdns histograms
	names int                                      // unique names handed out so far
}

// hitFile is the one cached name dnsperf asks for.
func (b *bencher) hitFile() (string, error) {
	p := filepath.Join(b.data, "hit.txt")
	return p, os.WriteFile(p, []byte(lab.Services[0].Name+" A\n"), 0o644)
}

// uniqueFile writes n names no server has been asked before.
func (b *bencher) uniqueFile(tag string, n int) (string, error) {
	var s strings.Builder
	for i := 0; i < n; i++ {
		b.names++
		fmt.Fprintf(&s, "n%d.%s A\n", b.names, benchZone)
	}
	p := filepath.Join(b.data, tag+".txt")
	return p, os.WriteFile(p, []byte(s.String()), 0o644)
}

// loadArgs prefixes a command run in the pod with the load CPU pinning.
func (b *bencher) loadArgs(name string, args ...string) (string, []string) {
	if !b.pin {
		return name, args
	}
	return "taskset", append([]string{"-c", loadCPU, name}, args...)
}

// dnsperf runs dnsperf from pod1 at the kube-dns IP and keeps its output.
func (b *bencher) dnsperf(ctx context.Context, tag, file string, d time.Duration, outstanding int, once bool) (bench.Dnsperf, error) {
	args := []string{"-s", lab.KubeDNSIP, "-d", file, "-l", strconv.FormatFloat(d.Seconds(), 'f', -1, 64),
		"-q", strconv.Itoa(outstanding), "-t", "2"}
	if once {
		args = append(args, "-n", "1")
	}
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	name, argv := b.loadArgs("dnsperf", args...)
	out, err := lab.PodRun(ctx, b.l.Pod1, name, argv...)
	os.WriteFile(filepath.Join(b.raw, tag+".dnsperf.txt"), []byte(out), 0o644)
	if err != nil {
		return bench.Dnsperf{}, err
	}
	return bench.ParseDnsperf(out)
}

// testdns runs the users' experiment from pod1 and keeps its JSON.
func (b *bencher) testdns(ctx context.Context, tag, resolver string) (*dnsload.Summary, error) {
	spec := lab.LoadSpec{Pod: b.l.Pod1, Resolver: resolver, Concurrency: b.o.workers, Duration: b.o.loadD,
		Hosts: []string{lab.Services[0].Name}, JSON: filepath.Join(b.raw, tag+".testdns.json")}
	if b.pin {
		spec.CPU = loadCPU
	}
	return b.l.RunLoad(ctx, spec)
}

// cpu sums the CPU time of the processes.
func cpu(ps []*lab.Proc) (time.Duration, error) {
	var sum time.Duration
	for _, p := range ps {
		t, err := bench.CPUTime(p.ServerPID())
		if err != nil {
			return 0, err
		}
		sum += t
	}
	return sum, nil
}

func mib(p *lab.Proc) float64 {
	v, err := bench.RSS(p.ServerPID())
	if err != nil {
		return math.NaN()
	}
	return float64(v) / (1 << 20)
}

// blast runs bin/dnsblast from pod1 at the kube-dns IP, asking the one
// cached name from sockets source ports, and keeps its output.
func (b *bencher) blast(ctx context.Context, tag string, d time.Duration, outstanding, sockets int) (bench.Dnsperf, error) {
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	name, argv := b.loadArgs(b.l.Bin("dnsblast"), "-s", lab.KubeDNSIP, "-name", lab.Services[0].Name,
		"-q", strconv.Itoa(outstanding), "-d", d.String(), "-sockets", strconv.Itoa(sockets))
	out, err := lab.PodRun(ctx, b.l.Pod1, name, argv...)
	os.WriteFile(filepath.Join(b.raw, tag+".dnsblast.json"), []byte(out), 0o644)
	if err != nil {
		return bench.Dnsperf{}, err
	}
	var res bench.Dnsperf
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		return res, fmt.Errorf("dnsblast's output: %w", err)
	}
	return res, nil
}

// hits records one cache-hit run driven by load (metric keys start with
// key): qps, latency, lost queries, the servers' CPU per answered query,
// qps per core (answered queries per second of server CPU) and how busy
// the server's core was: below 100 % the qps is bound by the load
// generator, latency and scheduling, not by the server's CPU.
func (b *bencher) hits(peer string, procs []*lab.Proc, key, tool string, load func() (bench.Dnsperf, error)) error {
	r := b.rep
	c0, err := cpu(procs)
	if err != nil {
		return err
	}
	m0, err := bench.MachineCPUTime()
	if err != nil {
		return err
	}
	d, err := load()
	if err != nil {
		return fmt.Errorf("cache hits (%s): %w", tool, err)
	}
	m1, err := bench.MachineCPUTime()
	if err != nil {
		return err
	}
	c1, err := cpu(procs)
	if err != nil {
		return err
	}
	pre := "cache hits (" + tool + "): "
	r.Metric(key+"_qps", pre+"qps", "", "higher").Add(peer, d.QPS)
	r.Metric(key+"_lat", pre+"avg latency", "ms", "lower").Add(peer, d.AvgLatMS)
	r.Metric(key+"_lost", pre+"lost queries", "", "lower").Add(peer, float64(d.Lost))
	perQuery, perCore, busy := math.NaN(), math.NaN(), math.NaN()
	if used := (c1 - c0).Seconds(); d.Completed > 0 && used > 0 {
		perQuery = used * 1e6 / float64(d.Completed)
		perCore = float64(d.Completed) / used
	}
	if d.RunTimeS > 0 {
		busy = 100 * (c1 - c0).Seconds() / d.RunTimeS
	}
	r.Metric(key+"_cpu_us", pre+"CPU per answered query", "µs", "lower").Add(peer, perQuery)
	r.Metric(key+"_cpu_100k", pre+"CPU per 100k answered", "s", "lower").Add(peer, perQuery/10)
	r.Metric(key+"_qps_core", pre+"qps per core", "", "higher").Add(peer, perCore)
	r.Metric(key+"_busy", pre+"server CPU busy", "%", "lower").Add(peer, busy)
	machine := math.NaN()
	if d.Completed > 0 {
		machine = (m1 - m0).Seconds() * 1e6 / float64(d.Completed)
	}
	r.Metric(key+"_machine_us", pre+"machine CPU per answered query (server, load generator, kernel)", "µs", "lower").Add(peer, machine)
	return nil
}

// runPeer is one peer's turn in one round: start, every scenario, stop.
func (b *bencher) runPeer(ctx context.Context, p peer, round int) (err error) {
	r, k := b.rep, p.Key
	tag := fmt.Sprintf("r%d-%s", round, k)
	if p.hold {
		undo, err := holdLocalIPs(ctx, b.l)
		if err != nil {
			return err
		}
		defer func() { err = errors.Join(err, undo()) }()
	}
	var procs []*lab.Proc
	var server *lab.Proc
	if p.start != nil {
		proc, startup, err := p.start(ctx, b.l)
		if err != nil {
			return err
		}
		server = proc
		procs = []*lab.Proc{proc}
		defer func() {
			if serr := proc.Stop(20 * time.Second); serr != nil {
				err = errors.Join(err, serr)
			}
		}()
		r.Metric("start_ms", "start to first answer", "ms", "lower").Add(k, float64(startup)/float64(time.Millisecond))
		time.Sleep(500 * time.Millisecond)
		r.Metric("rss_idle", "RSS idle", "MiB", "lower").Add(k, mib(proc))
	} else {
		procs = b.l.UpstreamProcs()
	}

	// Cache hits.
	hit, err := b.hitFile()
	if err != nil {
		return err
	}
	if _, err := lab.Query(b.l.Pod1, lab.KubeDNSIP, lab.Services[0].Name, "A", false); err != nil {
		return fmt.Errorf("warm-up query: %w", err)
	}
	if err := b.hits(k, procs, "hit", "dnsperf", func() (bench.Dnsperf, error) {
		return b.dnsperf(ctx, tag+"-hits", hit, b.o.hitD, b.o.outstanding, false)
	}); err != nil {
		return err
	}
	sockets := b.o.blastSockets
	if p.blastSockets > 0 {
		sockets = p.blastSockets
	}
	blast := func() (bench.Dnsperf, error) { return b.blast(ctx, tag+"-blast", b.o.hitD, b.o.blastQ, sockets) }
	if b.o.profile && k == "this" && round == b.o.rounds && server != nil {
		run := blast
		blast = func() (d bench.Dnsperf, err error) {
			b.profiled(server.ServerPID(), b.o.hitD, func() error { d, err = run(); return err })
			return d, err
		}
	}
	if err := b.hits(k, procs, "blast", "dnsblast", blast); err != nil {
		return err
	}
	if server != nil {
		r.Metric("rss_hits", "RSS after the hit runs", "MiB", "lower").Add(k, mib(server))
	}

	// Cache misses.
	if p.misses {
		n := int(b.o.missD.Seconds() * 40000) // more than any peer answers
		file, err := b.uniqueFile(tag+"-miss", n)
		if err != nil {
			return err
		}
		d, err := b.dnsperf(ctx, tag+"-miss", file, b.o.missD, b.o.outstanding, true)
		if err != nil {
			return fmt.Errorf("cache misses: %w", err)
		}
		r.Metric("miss_qps", "cache misses: qps", "", "higher").Add(k, d.QPS)
		r.Metric("miss_lat", "cache misses: avg latency", "ms", "lower").Add(k, d.AvgLatMS)
		r.Metric("miss_lost", "cache misses: lost queries", "", "lower").Add(k, float64(d.Lost))
	}

	// The users' experiment.
	for _, res := range []struct{ key, name string }{{"go", "Go"}, {"system", "glibc"}} {
		drops0, err := b.l.UDPRcvbufErrors(ctx, b.l.Node, b.l.DNS1, b.l.DNS2)
		if err != nil {
			return err
		}
		t, err := b.testdns(ctx, tag+"-"+res.key, res.key)
		if err != nil {
			return fmt.Errorf("testdns %s: %w", res.key, err)
		}
		drops1, err := b.l.UDPRcvbufErrors(ctx, b.l.Node, b.l.DNS1, b.l.DNS2)
		if err != nil {
			return err
		}
		pre := fmt.Sprintf("%d %s lookups", b.o.workers, res.name)
		r.Metric(res.key+"_lps", pre+": lookups/s", "", "higher").Add(k, t.LookupsPerS)
		r.Metric(res.key+"_p50", pre+": p50", "ms", "lower").Add(k, t.Latency.P50MS)
		r.Metric(res.key+"_p99", pre+": p99", "ms", "lower").Add(k, t.Latency.P99MS)
		r.Metric(res.key+"_p999", pre+": p99.9", "ms", "lower").Add(k, t.Latency.P999MS)
		r.Metric(res.key+"_max", pre+": max", "ms", "lower").Add(k, t.Latency.MaxMS)
		r.Metric(res.key+"_slow", pre+": ≥ 5 s", "", "lower").Add(k, float64(t.AtOrAboveLimit))
		r.Metric(res.key+"_err", pre+": errors", "", "lower").Add(k, float64(t.Errors))
		r.Metric(res.key+"_drops", pre+": UDP receive-buffer drops", "", "lower").Add(k, float64(drops1-drops0))
		if b.hists[res.name] == nil {
			b.hists[res.name] = map[string][][]dnsload.Bucket{}
		}
		b.hists[res.name][k] = append(b.hists[res.name][k], t.Histogram.Buckets)
	}

	// Memory with cached names.
	if p.cache && server != nil {
		have := 0
		for _, n := range b.o.populate {
			file, err := b.uniqueFile(fmt.Sprintf("%s-fill%d", tag, n), n-have)
			if err != nil {
				return err
			}
			d, err := b.dnsperf(ctx, fmt.Sprintf("%s-fill%d", tag, n), file, 60*time.Second, b.o.outstanding, true)
			if err != nil {
				return fmt.Errorf("fill the cache with %d names: %w", n, err)
			}
			have = n
			v := mib(server)
			if d.Completed < uint64(float64(d.Sent)*0.99) {
				logf("%s: only %d of %d names answered while filling the cache", p.Name, d.Completed, d.Sent)
			}
			r.Metric(fmt.Sprintf("rss_%dk", n/1000), fmt.Sprintf("RSS after %dk names", n/1000), "MiB", "lower").Add(k, v)
		}
	}
	return nil
}

// write puts the report, the table and the chart under out/, and prints a
// summary.
func (b *bencher) write(peers []peer) error {
	r := b.rep
	jf, err := os.Create(filepath.Join(b.o.out, "bench.json"))
	if err != nil {
		return err
	}
	if err := r.WriteJSON(jf); err != nil {
		jf.Close()
		return err
	}
	if err := jf.Close(); err != nil {
		return err
	}
	var md strings.Builder
	if err := r.WriteMarkdown(&md); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(b.o.out, "bench.md"), []byte(md.String()), 0o644); err != nil {
		return err
	}
	var panels []bench.Panel
	for _, res := range []string{"glibc", "Go"} {
		pn := bench.Panel{Title: fmt.Sprintf("%d %s lookups from a pod, %d rounds", b.o.workers, res, r.Rounds)}
		for _, p := range peers {
			if hs := b.hists[res][p.Key]; len(hs) > 0 {
				pn.Peers = append(pn.Peers, p.Name)
				pn.Hists = append(pn.Hists, bench.MergeBuckets(hs...))
			}
		}
		panels = append(panels, pn)
	}
	pf, err := os.Create(filepath.Join(b.o.out, "latency.png"))
	if err != nil {
		return err
	}
	if err := bench.WriteChart(pf, panels); err != nil {
		pf.Close()
		return err
	}
	if err := pf.Close(); err != nil {
		return err
	}
	summary(r)
	fmt.Printf("\nFull table in %s/bench.md; wrote %s/bench.json and latency.png too (raw outputs in %s); %.0f s.\n", b.o.out, b.o.out, b.raw, r.RuntimeS)
	return nil
}

// summary prints the figures the targets are about, as medians,
// with this build's ratio to each peer.
func summary(r *bench.Report) {
	keys := []string{"hit_qps", "hit_cpu_us", "blast_qps", "blast_cpu_us", "blast_qps_core", "blast_busy", "rss_idle", "rss_hits", "rss_100k", "rss_10k", "start_ms", "system_slow", "go_slow", "system_err"}
	fmt.Printf("\n%d rounds, medians; (×) is this build's ratio to the peer\n%-40s", r.Rounds, "")
	for _, p := range r.Peers {
		fmt.Printf(" %22s", p.Name)
	}
	fmt.Println()
	for _, k := range keys {
		var m *bench.Metric
		for _, x := range r.Metrics {
			if x.Key == k {
				m = x
			}
		}
		if m == nil {
			continue
		}
		title := m.Title
		if m.Unit != "" {
			title += " (" + m.Unit + ")"
		}
		fmt.Printf("%-40s", title)
		this := m.Spread[r.Peers[0].Key]
		for i, p := range r.Peers {
			s := m.Spread[p.Key]
			cell := "—"
			if s.N > 0 {
				cell = strconv.FormatFloat(s.Median, 'f', 1, 64)
				if ratio := bench.Ratio(this, s); i > 0 && !math.IsNaN(ratio) && !math.IsInf(ratio, 0) {
					cell += fmt.Sprintf(" (%.2f×)", ratio)
				}
			}
			fmt.Printf(" %22s", cell)
		}
		fmt.Println()
	}
	if bl := r.Baseline; bl != nil {
		fmt.Printf("\nper core, ÷ %s in the same round (median)\n", bl.Peer)
		for _, k := range []string{"blast_cpu_us", "blast_qps_core", "hit_cpu_us"} {
			ratios, ok := bl.Ratios[k]
			if !ok {
				continue
			}
			title := k
			for _, m := range r.Metrics {
				if m.Key == k {
					title = m.Title
				}
			}
			fmt.Printf("%-40s", title)
			for _, p := range r.Peers {
				cell := "—"
				if s, ok := ratios[p.Key]; ok {
					cell = fmt.Sprintf("%.2f×", s.Median)
				}
				fmt.Printf(" %22s", cell)
			}
			fmt.Println()
		}
	}
	for _, d := range r.Dropped {
		fmt.Printf("not measured: %s: %s\n", d.Name, d.Reason)
	}
	for _, n := range r.Notes {
		if strings.HasPrefix(n, "Driven by ") {
			fmt.Println(n)
		}
	}
}
