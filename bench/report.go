package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strings"
	"time"
)

// Report is the outcome of one `make bench` run.
type Report struct {
	Started  time.Time         `json:"started"`
	RuntimeS float64           `json:"runtime_s"`
	Quick    bool              `json:"quick"`
	Machine  Machine           `json:"machine"`
	Rounds   int               `json:"rounds"`
	Settings map[string]string `json:"settings"`
	Peers    []Peer            `json:"peers"`   // in column order; Peers[0] is the one the ratios are of
	Dropped  []Dropped         `json:"dropped"` // peers that could not be measured
	Metrics  []*Metric         `json:"metrics"` // in row order
	Baseline *Baseline         `json:"baseline,omitempty"`
	Notes    []string          `json:"notes"`
}

// Machine says where the figures were taken.
type Machine struct {
	CPU    string `json:"cpu"`
	CPUs   int    `json:"cpus"`
	Kernel string `json:"kernel"`
	Load   string `json:"loadavg_at_start"`
}

// Peer is one server set-up under test.
type Peer struct {
	Key  string `json:"key"`
	Name string `json:"name"`
	What string `json:"what"`
}

// Dropped is a peer left out, and why.
type Dropped struct {
	Name   string `json:"name"`
	Reason string `json:"reason"`
}

// Metric is one row: a figure per peer per round. Samples hold NaN for a
// round where the figure could not be taken; a peer without the figure at
// all is absent.
type Metric struct {
	Key     string               `json:"key"`
	Title   string               `json:"title"`
	Unit    string               `json:"unit"`
	Better  string               `json:"better"` // "higher" or "lower"
	Samples map[string][]float64 `json:"samples"`
	Spread  map[string]Spread    `json:"spread"`
}

// Add records one round's value of the figure for a peer.
func (m *Metric) Add(peer string, v float64) {
	if m.Samples == nil {
		m.Samples = map[string][]float64{}
	}
	m.Samples[peer] = append(m.Samples[peer], v)
}

// Metric returns the row with key, adding it when new.
func (r *Report) Metric(key, title, unit, better string) *Metric {
	if m := r.find(key); m != nil {
		return m
	}
	m := &Metric{Key: key, Title: title, Unit: unit, Better: better}
	r.Metrics = append(r.Metrics, m)
	return m
}

// Summarise computes every metric's spread per peer.
func (r *Report) Summarise() {
	for _, m := range r.Metrics {
		m.Spread = map[string]Spread{}
		for p, v := range m.Samples {
			m.Spread[p] = NewSpread(v)
		}
	}
	r.summariseBaseline()
}

// WriteJSON writes the report as indented JSON; NaN (not measured) becomes
// null.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(jsonSafe{r})
}

type jsonSafe struct{ r *Report }

func (j jsonSafe) MarshalJSON() ([]byte, error) {
	type plain Report
	c := plain(*j.r)
	c.Metrics = nil
	for _, m := range j.r.Metrics {
		mc := *m
		mc.Samples = map[string][]float64{}
		for p, vs := range m.Samples {
			out := make([]float64, len(vs))
			for i, v := range vs {
				out[i] = nanToNeg(v)
			}
			mc.Samples[p] = out
		}
		mc.Spread = map[string]Spread{}
		for p, s := range m.Spread {
			mc.Spread[p] = Spread{N: s.N, Min: nanToNeg(s.Min), Median: nanToNeg(s.Median), Max: nanToNeg(s.Max)}
		}
		c.Metrics = append(c.Metrics, &mc)
	}
	return json.Marshal(c)
}

// nanToNeg maps "not measured" to -1 in JSON, which has no NaN; every
// figure the benchmark takes is otherwise zero or positive.
func nanToNeg(v float64) float64 {
	if math.IsNaN(v) {
		return -1
	}
	return v
}

// WriteMarkdown writes the table: one row per metric, per peer
// "median (min–max)", then the ratios of Peers[0]'s medians to each other
// peer's.
func (r *Report) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%d interleaved rounds, median (min–max) per peer; %s, %d CPUs, kernel %s; load average at start %s.\n\n",
		r.Rounds, r.Machine.CPU, r.Machine.CPUs, r.Machine.Kernel, r.Machine.Load)
	b.WriteString("| figure |")
	for _, p := range r.Peers {
		fmt.Fprintf(&b, " %s |", p.Name)
	}
	b.WriteString("\n|---|")
	for range r.Peers {
		b.WriteString("---:|")
	}
	b.WriteString("\n")
	for _, m := range r.Metrics {
		fmt.Fprintf(&b, "| %s |", m.label())
		for _, p := range r.Peers {
			fmt.Fprintf(&b, " %s |", formatSpread(m.Spread[p.Key]))
		}
		b.WriteString("\n")
	}
	if len(r.Peers) > 1 {
		fmt.Fprintf(&b, "\nRatio of %s's median to each peer's (", r.Peers[0].Name)
		b.WriteString("for qps and lookups/s higher is better, for the rest lower is better):\n\n| figure |")
		for _, p := range r.Peers[1:] {
			fmt.Fprintf(&b, " ÷ %s |", p.Name)
		}
		b.WriteString("\n|---|")
		for range r.Peers[1:] {
			b.WriteString("---:|")
		}
		b.WriteString("\n")
		for _, m := range r.Metrics {
			fmt.Fprintf(&b, "| %s |", m.label())
			for _, p := range r.Peers[1:] {
				fmt.Fprintf(&b, " %s |", formatRatio(Ratio(m.Spread[r.Peers[0].Key], m.Spread[p.Key])))
			}
			b.WriteString("\n")
		}
	}
	r.writeBaseline(&b)
	if len(r.Dropped) > 0 {
		b.WriteString("\nNot measured:\n")
		for _, d := range r.Dropped {
			fmt.Fprintf(&b, "- %s: %s\n", d.Name, d.Reason)
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "\n%s\n", n)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func (m *Metric) label() string {
	if m.Unit == "" {
		return m.Title
	}
	return m.Title + " (" + m.Unit + ")"
}

// formatSpread prints "median (min–max)" with about three significant
// digits, "—" when not measured.
func formatSpread(s Spread) string {
	if s.N == 0 {
		return "—"
	}
	if s.N == 1 || s.Min == s.Max {
		return num(s.Median)
	}
	return fmt.Sprintf("%s (%s–%s)", num(s.Median), num(s.Min), num(s.Max))
}

func formatRatio(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "—"
	}
	return fmt.Sprintf("%.2f×", v)
}

// num prints v with about three significant digits, integers as integers.
func num(v float64) string {
	a := math.Abs(v)
	switch {
	case v == math.Trunc(v) && a < 1e9:
		return fmt.Sprintf("%.0f", v)
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}
