package bench

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"testing"
)

func TestRoundRatios(t *testing.T) {
	// Round 2 of the peer is missing, round 3 of the baseline is 0: only
	// rounds 1 and 4 compare.
	s := RoundRatios([]float64{10, math.NaN(), 5, 9}, []float64{5, 4, 0, 3})
	if s.N != 2 || s.Min != 2 || s.Max != 3 || s.Median != 2.5 {
		t.Errorf("Got %+v, want 2 rounds, min 2, median 2.5, max 3", s)
	}
}

// baselineReport is two peers over three rounds, where the peer's CPU per
// hit is about twice the baseline's in each round even though both vary.
func baselineReport() *Report {
	r := &Report{Rounds: 3, Peers: []Peer{{Key: "this", Name: "this build"}, {Key: "unbound", Name: "unbound"}}}
	cpu := r.Metric("hit_cpu_us", "cache hits: CPU per answered query", "µs", "lower")
	cpu.Samples = map[string][]float64{"this": {20, 30, 16}, "unbound": {10, 15, 8}}
	busy := r.Metric("hit_busy", "cache hits: server CPU busy", "%", "lower")
	busy.Samples = map[string][]float64{"this": {99, 99.5, 98}, "unbound": {80, 70, 97}}
	r.Baseline = &Baseline{Peer: "unbound", Metrics: []string{"hit_cpu_us", "not_measured"}}
	r.Summarise()
	return r
}

func TestBaseline(t *testing.T) {
	r := baselineReport()
	got := r.Baseline.Ratios["hit_cpu_us"]
	if s := got["this"]; s.N != 3 || s.Min != 2 || s.Max != 2 {
		t.Errorf("This build ÷ unbound per round: %+v, want 2× in each of 3 rounds", s)
	}
	if s := got["unbound"]; s.Median != 1 {
		t.Errorf("Unbound ÷ itself: %+v, want 1×", s)
	}
	if _, ok := r.Baseline.Ratios["not_measured"]; ok {
		t.Errorf("A metric nobody measured has ratios: %v", r.Baseline.Ratios)
	}
	var md strings.Builder
	if err := r.WriteMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(md.String(), "÷ unbound's in the same round") || !strings.Contains(md.String(), "| cache hits: CPU per answered query (µs) | 2.00× | 1.00× |") {
		t.Errorf("The markdown lacks the ratios to unbound:\n%s", md.String())
	}
	var js bytes.Buffer
	if err := r.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || back.Baseline == nil || back.Baseline.Ratios["hit_cpu_us"]["this"].Median != 2 {
		t.Errorf("The JSON lost the ratios (%v):\n%s", err, js.String())
	}
}

func TestClientBound(t *testing.T) {
	r := baselineReport()
	notes := r.ClientBound(95, map[string]string{"hit_busy": "dnsperf on one core", "blast_busy": "dnsblast"})
	if len(notes) != 1 {
		t.Fatalf("Got %d notes, want 1 (dnsperf; no dnsblast figures): %q", len(notes), notes)
	}
	if !strings.Contains(notes[0], "dnsperf on one core") || !strings.Contains(notes[0], "unbound (80 %)") || strings.Contains(notes[0], "this build") {
		t.Errorf("Note %q: want dnsperf named as unbound's limit (median 80 %% busy), this build (99 %%) not", notes[0])
	}
}
