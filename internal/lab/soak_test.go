package lab_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nodelocaldns/nodelocaldns/internal/lab"
	"github.com/nodelocaldns/nodelocaldns/internal/lab/labtest"
)

// soakDuration is SOAK from the environment (`make soak` sets 10m); 60 s
// when unset, as `make test` runs it.
func soakDuration(t *testing.T) time.Duration {
	v := os.Getenv("SOAK")
	if v == "" {
		return time.Minute
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 30*time.Second {
		t.Fatalf("SOAK=%q: want a duration of at least 30s", v)
	}
	return d
}

// TestSoak (issue 18): mixed hits, misses and TCP lookups for SOAK while the
// Corefile is reloaded and the node tampered with; the cache's RSS,
// goroutines and open files must stay flat (lab.Trend), every reload must
// complete and every tamper be repaired. The figures go to the test log and
// to out/soak/soak.txt.
func TestSoak(t *testing.T) {
	d := soakDuration(t)
	l := labtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), d+3*time.Minute)
	defer cancel()
	spec := lab.SoakSpecFor(d)
	r, err := l.RunSoak(ctx, spec)
	if r != nil {
		var b strings.Builder
		lab.WriteSoak(&b, r)
		t.Logf("soak of %v:\n%s", d, b.String())
		dir := filepath.Join(labtest.Root(t), "out", "soak")
		if os.MkdirAll(dir, 0o755) == nil {
			os.WriteFile(filepath.Join(dir, "soak.txt"), []byte(b.String()), 0o644)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	trends, err := r.Trends()
	if err != nil {
		t.Fatal(err)
	}
	for _, tr := range trends {
		if !tr.Flat() {
			t.Errorf("Not flat: %v (allowed: %.0f%% + %.0f above the middle third)", tr, tr.Tolerance.Frac*100, tr.Tolerance.Slack)
		}
	}
	if want := int(d / spec.ReloadEvery); r.Reloads < want/2 {
		t.Errorf("%d reloads completed, want about %d", r.Reloads, want)
	}
	if r.Repairs < float64(r.Tampers)/2 {
		t.Errorf("%v repairs counted for %d tampers", r.Repairs, r.Tampers)
	}
	// The load tools share two loaded cores with the lab: a soak that
	// barely ran would prove nothing, but the rate itself is not the point.
	for name, s := range r.Clients {
		if s.Requests < uint64(float64(spec.Rate)*d.Seconds()/10) {
			t.Errorf("%s made %d lookups in %v, want at least a tenth of %d/s", name, s.Requests, d, spec.Rate)
		}
	}
}

// TestTrendFlat: a leak that keeps growing is caught, a warm-up that
// settles and noise around a level are not.
func TestTrendFlat(t *testing.T) {
	mk := func(f func(i int) int64) *lab.SoakResult {
		r := &lab.SoakResult{}
		for i := range 30 {
			r.Samples = append(r.Samples, lab.SoakSample{RSS: f(i) << 20, Goroutines: 50, FDs: 30})
		}
		return r
	}
	tests := []struct {
		name string
		rss  func(i int) int64
		flat bool
	}{
		{"level", func(int) int64 { return 30 }, true},
		{"warm-up then level", func(i int) int64 { return 20 + min(int64(i), 10) }, true},
		{"noise", func(i int) int64 { return 30 + int64(i%3) }, true},
		{"steady leak", func(i int) int64 { return 30 + int64(i) }, false},
	}
	for _, tc := range tests {
		trends, err := mk(tc.rss).Trends()
		if err != nil {
			t.Fatal(err)
		}
		if got := trends[0].Flat(); got != tc.flat {
			t.Errorf("%s: %v, want flat %v", tc.name, trends[0], tc.flat)
		}
	}
	if _, err := (&lab.SoakResult{Samples: make([]lab.SoakSample, 3)}).Trends(); err == nil {
		t.Error("Trends of 3 samples: no error")
	}
}
