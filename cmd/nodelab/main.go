// Command nodelab runs the node lab (package internal/lab): a Kubernetes node,
// its pods, kube-proxy's DNS Services and two upstream CoreDNS pods in
// network namespaces on this machine, and the node DNS cache in front.
//
//	nodelab demo [-c 200] [-d 20s]  # the experiment: pod lookups without, then with the cache
//	nodelab up [-cache|-flags MODE] # build the lab and keep it until Ctrl-C
//	nodelab down                    # remove leftovers of a run that could not clean up
//	nodelab rollout [-d 15s]        # restarts and upgrades under load, ours and node-cache's behaviour
//
// Every run removes what it made, also on failure and Ctrl-C. It needs root;
// all its network changes happen inside its own namespaces (nl-<runid>-…),
// with addresses from 198.18.0.0/15 and 169.254.20.10 only.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/nodelocaldns/nodelocaldns/internal/dnsload"
	"github.com/nodelocaldns/nodelocaldns/internal/lab"
)

func main() {
	if len(os.Args) < 2 {
		usage(os.Stderr)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "demo":
		err = demo(ctx, os.Args[2:])
	case "up":
		err = up(ctx, os.Args[2:])
	case "down":
		err = down(os.Args[2:])
	case "rollout":
		err = rollout(ctx, os.Args[2:])
	case "-h", "-help", "--help", "help":
		usage(os.Stdout)
		return
	default:
		usage(os.Stderr)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "nodelab: %v\n", err)
		os.Exit(1)
	}
}

func usage(w io.Writer) {
	fmt.Fprint(w, `Usage: nodelab demo|up|down|rollout [flags]

  demo   build the lab, run the pod lookup experiment without and with the
         node cache, print the comparison, remove the lab
  up     build the lab (with -cache also start the node cache; with -flags
         iptables|ipvs start it as the official DaemonSet does), print how
         to use it, keep it until Ctrl-C
  down   remove leftovers of an earlier run (namespaces nl-*, /etc/netns/nl-*,
         their processes)
  rollout  surge upgrade, restarts, SIGKILL and reload of the cache under a
         stream of pod lookups, with our behaviour and node-cache's; prints a table

Run "nodelab SUBCOMMAND -h" for flags. Needs root.
`)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "nodelab: "+format+"\n", args...)
}

// common are the flags of demo and up.
type common struct {
	root     string
	delay    time.Duration
	inflight int
	qps      float64
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.root, "root", ".", "repository root (bin/coredns, bin/dnsdelay, bin/testdns, Corefile.example)")
	fs.DurationVar(&c.delay, "delay", 1500*time.Microsecond, "delay each upstream DNS pod adds to its answers (cross-node hop)")
	fs.IntVar(&c.inflight, "inflight", 64, "queries each upstream DNS pod works on at once")
	fs.Float64Var(&c.qps, "qps", 0, "queries/s each upstream DNS pod answers at most (0: no cap)")
}

// config is the lab's configuration from the flags. The lab needs root,
// which is checked here, before any work.
func (c *common) config() (lab.Config, error) {
	if os.Geteuid() != 0 {
		return lab.Config{}, errors.New("the node lab needs root: it makes network namespaces, veth links and iptables rules (inside those namespaces only); run it with sudo (make demo: sudo make demo)")
	}
	root, err := filepath.Abs(c.root)
	if err != nil {
		return lab.Config{}, err
	}
	cfg := lab.DefaultConfig(root)
	cfg.Delay, cfg.Inflight, cfg.QPS, cfg.Logf = c.delay, c.inflight, c.qps, logf
	return cfg, nil
}

// withLab builds a lab, runs fn and always removes the lab, also when fn
// fails or the run is interrupted.
func withLab(ctx context.Context, cfg lab.Config, fn func(*lab.Lab) error) (err error) {
	l, err := lab.Up(ctx, cfg)
	if err != nil {
		return err
	}
	logf("lab %s up (namespaces %s-*, files in %s)", l.ID, lab.Prefix+l.ID, l.Dir)
	defer func() {
		logf("removing lab %s", l.ID)
		if cerr := l.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("clean up: %w (run `nodelab down`)", cerr))
		}
	}()
	err = fn(l)
	if ctx.Err() != nil {
		return errors.New("interrupted")
	}
	return err
}

func up(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("nodelab up", flag.ContinueOnError)
	var c common
	c.register(fs)
	withCache := fs.Bool("cache", false, "also start the node cache")
	flagsMode := fs.String("flags", "", "also start the node cache the official DaemonSet's way, with node-cache's flags after the manifest's sed for `MODE` (iptables or ipvs); the kube-dns ConfigMap holds the lab's stub domain")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := c.config()
	if err != nil {
		return err
	}
	return withLab(ctx, cfg, func(l *lab.Lab) error {
		switch {
		case *flagsMode != "":
			c, err := l.StartNodeCacheFlags(ctx, lab.FlagsOptions{Mode: lab.Mode(*flagsMode),
				KubeDNS: map[string]string{"stubDomains": fmt.Sprintf(`{%q: [%q]}`, lab.StubDomain, lab.StubIP)}})
			if err != nil {
				return err
			}
			fmt.Printf("Node cache: bin/coredns %s\n  rendered Corefile %s, kube-dns ConfigMap %s, metrics %s (in %s)\n",
				strings.Join(c.Args, " "), c.Conf, c.KubeDNS, lab.NodeCacheMetrics, l.Node)
		case *withCache:
			if _, err := l.StartCache(ctx); err != nil {
				return err
			}
		}
		fmt.Printf(`Lab %s is up. Try:
  ip netns exec %s dig kubernetes.default.svc.cluster.local      # pod → kube-dns %s
  ip netns exec %s getent hosts web                              # glibc, search path, ndots:5
  ip netns exec %s dig @%s web.default.svc.cluster.local
  ip netns exec %s conntrack -L -p udp --dport 53
Corefiles and logs: %s
Ctrl-C removes the lab.
`, l.ID, l.Pod1, lab.KubeDNSIP, l.Pod1, l.Pod2, lab.LocalIP, l.Node, l.Dir)
		<-ctx.Done()
		return nil
	})
}

func down(args []string) error {
	fs := flag.NewFlagSet("nodelab down", flag.ContinueOnError)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("the node lab needs root")
	}
	left := lab.Leftovers(lab.Prefix)
	if len(left) == 0 {
		logf("nothing to remove")
		return nil
	}
	return lab.Clean(lab.Prefix, 10*time.Second, logf)
}

// row is one column of the demo table: one run.
type row struct {
	ld    *dnsload.Summary
	flows int
	drops uint64 // UDP datagrams dropped on full server socket buffers
}

func demo(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("nodelab demo", flag.ContinueOnError)
	var c common
	c.register(fs)
	conc := fs.Int("c", 200, "concurrent lookups in the pod")
	dur := fs.Duration("d", 20*time.Second, "duration of each run")
	resolver := fs.String("resolver", "system", "pod resolver: system (glibc getaddrinfo, as C programs) or go")
	host := fs.String("host", "kubernetes.default.svc.cluster.local", "name the pod looks up (search path and ndots:5 apply)")
	pin := fs.Bool("pin", true, "servers on CPU 0, the load generator on CPU 1 (when there are 2 CPUs or more)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := c.config()
	if err != nil {
		return err
	}
	loadCPU := ""
	if *pin && numCPU() >= 2 {
		cfg.ServerCPU, loadCPU = "0", "1"
	}
	var without, with row
	err = withLab(ctx, cfg, func(l *lab.Lab) error {
		spec := lab.LoadSpec{Pod: l.Pod1, Resolver: *resolver, Concurrency: *conc, Duration: *dur, Hosts: []string{*host}, CPU: loadCPU}
		servers := []string{l.Node, l.DNS1, l.DNS2}
		measure := func(r *row, what string) error {
			if err := l.FlushConntrack(ctx); err != nil {
				return err
			}
			drops0, err := l.UDPRcvbufErrors(ctx, servers...)
			if err != nil {
				return err
			}
			logf("%s: %d concurrent %s lookups of %s for %v from %s …", what, *conc, *resolver, *host, *dur, l.Pod1)
			ld, err := l.RunLoad(ctx, spec)
			if err != nil {
				return err
			}
			r.ld = ld
			drops1, err := l.UDPRcvbufErrors(ctx, servers...)
			if err != nil {
				return err
			}
			r.drops = drops1 - drops0
			r.flows, err = l.PodDNSFlows(ctx)
			return err
		}
		if err := measure(&without, "without the cache (kube-proxy DNAT to the CoreDNS pods)"); err != nil {
			return err
		}
		if _, err := l.StartCache(ctx); err != nil {
			return err
		}
		if err := measure(&with, "with the node cache"); err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	printTable(os.Stdout, *conc, *dur, *resolver, *host, without, with)
	return nil
}

func printTable(w io.Writer, conc int, dur time.Duration, resolver, host string, a, b row) {
	fmt.Fprintf(w, "\n%d concurrent %s lookups of %s for %v from a pod (nameserver %s, ndots:5)\n\n", conc, resolver, host, dur, lab.KubeDNSIP)
	fmt.Fprintf(w, "%-34s %18s %18s\n", "", "kube-proxy DNAT", "node cache")
	line := func(name, f string, x, y any) {
		fmt.Fprintf(w, "%-34s %18s %18s\n", name, fmt.Sprintf(f, x), fmt.Sprintf(f, y))
	}
	line("lookups", "%d", a.ld.Requests, b.ld.Requests)
	line("lookups/s", "%.0f", a.ld.LookupsPerS, b.ld.LookupsPerS)
	line("errors", "%d", a.ld.Errors, b.ld.Errors)
	line("latency min (ms)", "%.2f", a.ld.Latency.MinMS, b.ld.Latency.MinMS)
	line("latency avg (ms)", "%.2f", a.ld.Latency.AvgMS, b.ld.Latency.AvgMS)
	line("latency p99 (ms)", "%.2f", a.ld.Latency.P99MS, b.ld.Latency.P99MS)
	line("latency max (ms)", "%.1f", a.ld.Latency.MaxMS, b.ld.Latency.MaxMS)
	line("lookups >= 5 s", "%d", a.ld.AtOrAboveLimit, b.ld.AtOrAboveLimit)
	line("conntrack entries, pod DNS", "%d", a.flows, b.flows)
	line("UDP drops, full server sockets", "%d", a.drops, b.drops)
	fmt.Fprintln(w)
	fmt.Fprintln(w, verdict(a, b))
	for _, r := range []struct {
		name string
		r    row
	}{{"without", a}, {"with", b}} {
		for kind, ex := range r.r.ld.ErrorExamples {
			fmt.Fprintf(w, "  first %s error %s: %s\n", r.name, kind, ex)
		}
	}
}

// verdict says in one line what the table shows.
func verdict(a, b row) string {
	speed := b.ld.LookupsPerS / max(a.ld.LookupsPerS, 1)
	var parts []string
	parts = append(parts, fmt.Sprintf("The node cache answered %.1f× the lookups/s", speed))
	if a.ld.AtOrAboveLimit > 0 || b.ld.AtOrAboveLimit > 0 {
		parts = append(parts, fmt.Sprintf("with %d instead of %d lookups stalled ≥ 5 s", b.ld.AtOrAboveLimit, a.ld.AtOrAboveLimit))
	} else {
		parts = append(parts, "no lookup stalled ≥ 5 s in either run")
	}
	parts = append(parts, fmt.Sprintf("%d instead of %d errors", b.ld.Errors, a.ld.Errors))
	parts = append(parts, fmt.Sprintf("and pod DNS left %d conntrack entries instead of %d (NOTRACK: no DNAT, no conntrack race)", b.flows, a.flows))
	s := strings.Join(parts, ", ") + "."
	if b.ld.AtOrAboveLimit > 0 && b.drops > 0 {
		s += fmt.Sprintf(" The remaining ≥ 5 s stalls are queries dropped on the cache's own full UDP socket buffer (%d drops): the cache's core is saturated.", b.drops)
	}
	return s
}

func numCPU() int { return runtime.NumCPU() }
