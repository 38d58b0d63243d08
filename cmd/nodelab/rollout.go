package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/nodelocaldns/nodelocaldns/internal/lab"
)

// caseNames are the -cases names of the rollout cases.
var caseNames = map[string]lab.RolloutCase{
	"surge": lab.Surge, "restart": lab.Restart, "handoff": lab.HandoffRestart, "crash": lab.Crash, "reload": lab.Reload,
}

// runOrder runs the cases so that the cache is restarted least between
// them: the four on Corefile.example's node first, the IPVS-style one last.
var runOrder = []lab.RolloutCase{lab.Surge, lab.Restart, lab.Crash, lab.Reload, lab.HandoffRestart}

// rollout runs the rollout cases under a steady stream of pod lookups,
// with our shutdown behaviour and with node-cache's, and prints a table.
func rollout(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("nodelab rollout", flag.ContinueOnError)
	var c common
	c.register(fs)
	dur := fs.Duration("d", lab.DefaultRolloutStream.Duration, "stream length of each case; the change starts 2 s in")
	rate := fs.Float64("rate", lab.DefaultRolloutStream.Rate, "lookups/s over all pod clients (glibc UDP, Go UDP, Go TCP, a third each)")
	cases := fs.String("cases", "surge,restart,handoff,crash,reload", "cases to run, comma separated")
	behaviours := fs.String("behaviour", "ours,node-cache", "behaviours to run: ours, node-cache or both")
	if err := fs.Parse(args); err != nil {
		return err
	}
	want := map[lab.RolloutCase]bool{}
	for _, n := range strings.Split(*cases, ",") {
		rc, ok := caseNames[strings.TrimSpace(n)]
		if !ok {
			return fmt.Errorf("-cases: unknown case %q (want surge, restart, handoff, crash, reload)", n)
		}
		want[rc] = true
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
				logf("%s, %s behaviour: %.0f lookups/s for %v", rc, b, st.Rate, st.Duration)
				r, err := l.RunRollout(ctx, rc, b, st)
				if err != nil {
					return fmt.Errorf("%s, %s: %w", rc, b, err)
				}
				results = append(results, r)
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
		return results[i].Behaviour < results[j].Behaviour
	})
	fmt.Printf("\nRollout cases under %.0f lookups/s from pods for %v each (glibc UDP, Go UDP, Go TCP; a cached name and a\n"+
		"new name per lookup). Pods ask the kube-dns IP and 169.254.20.10, half each; only the kube-dns IP in the\n"+
		"iptables-mode restart, only 169.254.20.10 in IPVS style. >1 s: lookups that took a second or more;\n"+
		"longest gap: the longest time a pod's UDP probe (one query every 10 ms, no retries, 1 s timeout) got no answer.\n\n", st.Rate, st.Duration)
	lab.WriteRolloutTable(os.Stdout, results)
	for _, r := range results {
		if r.Case == lab.Crash {
			fmt.Printf("\n%s, %s: the new instance answered %v after its start", r.Case, r.Behaviour, r.Ready.Round(time.Millisecond))
		}
	}
	fmt.Println()
	return nil
}
