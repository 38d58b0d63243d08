package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nodelocaldns/nodelocaldns/internal/lab"
)

// caseNames are the -cases names of the rollout cases.
var caseNames = map[string]lab.RolloutCase{
	"surge": lab.Surge, "restart": lab.Restart, "handoff": lab.HandoffRestart, "crash": lab.Crash, "reload": lab.Reload,
	"crashloop": lab.CrashLoop, "surgekill": lab.SurgeKill, "oomkill": lab.OOMKill,
}

// runOrder runs the cases so that the cache is restarted least between
// them: the planned ones on Corefile.example's node first, the SIGKILLs
// per node mode (-nodes), the IPVS-style restart last.
var runOrder = []lab.RolloutCase{lab.Surge, lab.Restart, lab.Reload, lab.Crash, lab.CrashLoop, lab.SurgeKill, lab.OOMKill, lab.HandoffRestart}

// rollout runs the rollout cases under a steady stream of pod lookups,
// with our shutdown behaviour and with node-cache's, and prints a table.
func rollout(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("nodelab rollout", flag.ContinueOnError)
	var c common
	c.register(fs)
	dur := fs.Duration("d", lab.DefaultRolloutStream.Duration, "stream length of each case; the change starts 2 s in")
	rate := fs.Float64("rate", lab.DefaultRolloutStream.Rate, "lookups/s over all pod clients (glibc UDP, Go UDP, Go TCP, a third each)")
	cases := fs.String("cases", "surge,restart,handoff,crash,reload", "cases to run, comma separated (also crashloop, surgekill, oomkill)")
	nodes := fs.String("nodes", "iptables", "node modes the SIGKILL cases run on: iptables, iptables-legacy, nftables, ipvs")
	behaviours := fs.String("behaviour", "ours,node-cache", "behaviours to run: ours, node-cache or both")
	if err := fs.Parse(args); err != nil {
		return err
	}
	want := map[lab.RolloutCase]bool{}
	for _, n := range strings.Split(*cases, ",") {
		rc, ok := caseNames[strings.TrimSpace(n)]
		if !ok {
			return fmt.Errorf("-cases: unknown case %q (want surge, restart, handoff, crash, reload, crashloop, surgekill, oomkill)", n)
		}
		want[rc] = true
	}
	var modes []lab.NodeMode
	for _, n := range strings.Split(*nodes, ",") {
		m := lab.NodeMode(strings.TrimSpace(n))
		if !slices.Contains(lab.NodeModes, m) {
			return fmt.Errorf("-nodes: unknown node mode %q (want iptables, iptables-legacy, nftables, ipvs)", n)
		}
		modes = append(modes, m)
	}
	var bs []lab.Behaviour
	for _, n := range strings.Split(*behaviours, ",") {
		switch strings.TrimSpace(n) {
		case "ours":
			bs = append(bs, lab.Ours)
		case "node-cache":
			bs = append(bs, lab.NodeCache)
		default:
			return fmt.Errorf("-behaviour: unknown %q (want ours, node-cache)", n)
		}
	}
	cfg, err := c.config()
	if err != nil {
		return err
	}
	st := lab.DefaultRolloutStream
	st.Duration, st.Rate = *dur, *rate
	var results []*lab.RolloutResult
	err = withLab(ctx, cfg, func(l *lab.Lab) error {
		for _, b := range bs {
			for _, rc := range runOrder {
				if !want[rc] {
					continue
				}
				on := []lab.NodeMode{lab.NodeIptables}
				switch {
				case rc == lab.HandoffRestart:
					on = []lab.NodeMode{lab.NodeIPVS}
				case rc.Killing():
					on = modes
				}
				for _, m := range on {
					logf("%s on %s, %s behaviour: %.0f lookups/s", rc, m, b, st.Rate)
					r, err := l.RunRolloutOn(ctx, rc, b, m, st)
					if err != nil {
						return fmt.Errorf("%s on %s, %s: %w", rc, m, b, err)
					}
					results = append(results, r)
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	sort.SliceStable(results, func(i, j int) bool {
		if results[i].Case != results[j].Case {
			return results[i].Case < results[j].Case
		}
		if results[i].Node != results[j].Node {
			return results[i].Node < results[j].Node
		}
		return results[i].Behaviour < results[j].Behaviour
	})
	fmt.Printf("\nRollout cases under %.0f lookups/s from pods for %v each (glibc UDP, Go UDP, Go TCP; a cached name and a\n"+
		"new name per lookup). Pods ask the kube-dns IP and 169.254.20.10, half each; only the kube-dns IP in the\n"+
		"iptables-mode restart, only 169.254.20.10 in IPVS style. >1 s: lookups that took a second or more;\n"+
		"longest gap: the longest time a pod's UDP probe (one query every 10 ms, no retries, 1 s timeout) got no answer;\n"+
		"held: the queries a SIGKILLed process held (UDP queries delivered to it and never answered, TCP connections reset).\n\n", st.Rate, st.Duration)
	lab.WriteRolloutTable(os.Stdout, results)
	for _, r := range results {
		if r.Case == lab.Crash {
			fmt.Printf("\n%s, %s: the new instance answered %v after its start", r.Case, r.Behaviour, r.Ready.Round(time.Millisecond))
		}
	}
	fmt.Println()
	return nil
}
