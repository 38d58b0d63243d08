package bench

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
)

// Baseline asks for figures as ratios to one peer's, round by round: two
// peers measured in the same round share the machine's state, so their
// ratio is steadier than either figure.
type Baseline struct {
	Peer    string   `json:"peer"`    // the peer's key
	Metrics []string `json:"metrics"` // metric keys, in row order
	// Ratios maps metric key → peer key → the spread over rounds of the
	// peer's figure divided by Peer's in the same round. Summarise fills it.
	Ratios map[string]map[string]Spread `json:"ratios"`
}

// RoundRatios divides each of a's samples by b's of the same round and
// returns the spread; rounds where either is missing (NaN) or b is 0 are
// left out.
func RoundRatios(a, b []float64) Spread {
	var v []float64
	for i := 0; i < len(a) && i < len(b); i++ {
		if b[i] != 0 && !math.IsNaN(a[i]) && !math.IsNaN(b[i]) {
			v = append(v, a[i]/b[i])
		}
	}
	return NewSpread(v)
}

// summariseBaseline fills r.Baseline.Ratios.
func (r *Report) summariseBaseline() {
	bl := r.Baseline
	if bl == nil {
		return
	}
	bl.Ratios = map[string]map[string]Spread{}
	for _, key := range bl.Metrics {
		m := r.find(key)
		if m == nil {
			continue
		}
		base, ok := m.Samples[bl.Peer]
		if !ok {
			continue
		}
		bl.Ratios[key] = map[string]Spread{}
		for _, p := range r.Peers {
			if v, ok := m.Samples[p.Key]; ok {
				if s := RoundRatios(v, base); s.N > 0 { // NaN has no JSON
					bl.Ratios[key][p.Key] = s
				}
			}
		}
	}
}

func (r *Report) find(key string) *Metric {
	for _, m := range r.Metrics {
		if m.Key == key {
			return m
		}
	}
	return nil
}

func (r *Report) peerName(key string) string {
	for _, p := range r.Peers {
		if p.Key == key {
			return p.Name
		}
	}
	return key
}

// writeBaseline writes the ratios to the baseline peer as a table, one row
// per metric, "median (min–max)" of the per-round ratios.
func (r *Report) writeBaseline(b *strings.Builder) {
	bl := r.Baseline
	if bl == nil || len(bl.Ratios) == 0 {
		return
	}
	fmt.Fprintf(b, "\nEach peer's figure ÷ %s's in the same round, median (min–max) over the rounds:\n\n| figure |", r.peerName(bl.Peer))
	for _, p := range r.Peers {
		fmt.Fprintf(b, " %s |", p.Name)
	}
	b.WriteString("\n|---|")
	for range r.Peers {
		b.WriteString("---:|")
	}
	b.WriteString("\n")
	for _, key := range bl.Metrics {
		ratios, ok := bl.Ratios[key]
		if !ok {
			continue
		}
		fmt.Fprintf(b, "| %s |", r.find(key).label())
		for _, p := range r.Peers {
			cell := "—"
			if s, ok := ratios[p.Key]; ok {
				cell = formatRatioSpread(s)
			}
			fmt.Fprintf(b, " %s |", cell)
		}
		b.WriteString("\n")
	}
}

func formatRatioSpread(s Spread) string {
	if s.N == 1 || s.Min == s.Max {
		return fmt.Sprintf("%.2f×", s.Median)
	}
	return fmt.Sprintf("%.2f× (%.2f–%.2f)", s.Median, s.Min, s.Max)
}

// ClientBound says, for each peer and each load generator (the metric key
// of the server's CPU busy share while it ran), when the server's core was
// less than limit percent busy (median over the rounds): then the load
// generator, not the server, set the qps, and only CPU per query compares.
// busy maps a busy metric key to the load generator's name.
func (r *Report) ClientBound(limit float64, busy map[string]string) []string {
	var out []string
	for _, key := range slices.Sorted(maps.Keys(busy)) {
		m := r.find(key)
		if m == nil {
			continue
		}
		var bound []string
		for _, p := range r.Peers {
			s := NewSpread(m.Samples[p.Key])
			if s.N > 0 && s.Median < limit {
				bound = append(bound, fmt.Sprintf("%s (%.0f %%)", p.Name, s.Median))
			}
		}
		if len(bound) > 0 {
			out = append(out, fmt.Sprintf("Driven by %s, these servers' cores were under %.0f %% busy: %s. Their qps is what the load side (the load generator, or other load on the machine) sent, not what they can answer; compare CPU per query and qps per core.",
				busy[key], limit, strings.Join(bound, ", ")))
		}
	}
	return out
}
