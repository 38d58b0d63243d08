package main

import (
	"math"
	"testing"
	"time"
)

func TestBucketBounds(t *testing.T) {
	for _, v := range []uint64{0, 1, 127, 128, 255, 256, 257, 1000, 4095, 4096, 5_000_000, 5_000_123, 1 << 35, maxValueUS} {
		i := bucketIndex(v)
		lo, hi := bucketBounds(i)
		if v < lo || v > hi {
			t.Errorf("Value %d in bucket %d [%d, %d]", v, i, lo, hi)
		}
		if width := float64(hi-lo+1) / float64(max(lo, 1)); lo >= 2*subCount && width > 1.0/subCount {
			t.Errorf("Bucket %d [%d, %d] is %.4f of its lower bound wide, want at most %.4f", i, lo, hi, width, 1.0/subCount)
		}
		if i < 0 || i >= numBuckets {
			t.Errorf("Value %d maps to bucket %d, outside [0, %d)", v, i, numBuckets)
		}
	}
	// Buckets tile the range: each starts right after the previous one ends.
	for i := 1; i < numBuckets; i++ {
		_, prevHi := bucketBounds(i - 1)
		lo, _ := bucketBounds(i)
		if lo != prevHi+1 {
			t.Fatalf("Bucket %d starts at %d, previous ends at %d", i, lo, prevHi)
		}
	}
	if i := bucketIndex(math.MaxUint64); i != numBuckets-1 {
		t.Errorf("Huge value maps to bucket %d, want the last, %d", i, numBuckets-1)
	}
}

// spread returns n latencies evenly spaced from step to n*step.
func spread(n int, step time.Duration) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = time.Duration(i+1) * step
	}
	return out
}

func TestHistogramQuantiles(t *testing.T) {
	tests := []struct {
		name   string
		values []time.Duration
		q      float64
		want   time.Duration
	}{
		{"empty", nil, 0.5, 0},
		{"single", []time.Duration{3 * time.Millisecond}, 0.5, 3 * time.Millisecond},
		{"single p99.9", []time.Duration{3 * time.Millisecond}, 0.999, 3 * time.Millisecond},
		{"uniform p50", spread(1000, time.Millisecond), 0.50, 500 * time.Millisecond},
		{"uniform p90", spread(1000, time.Millisecond), 0.90, 900 * time.Millisecond},
		{"uniform p99", spread(1000, time.Millisecond), 0.99, 990 * time.Millisecond},
		{"uniform p99.9", spread(1000, time.Millisecond), 0.999, 999 * time.Millisecond},
		{"microseconds exact", spread(100, time.Microsecond), 0.5, 50*time.Microsecond + 999},
		{"max", spread(10, time.Second), 1, 10 * time.Second},
		{"min", spread(10, time.Second), 0, time.Second},
		{"one stall in a thousand", append(spread(999, time.Microsecond), 5*time.Second), 0.999, 999*time.Microsecond + 999},
		{"stall above p99.9", append(spread(998, time.Microsecond), 5*time.Second, 5*time.Second), 0.999, 5 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHistogram()
			for _, v := range tt.values {
				h.Record(v)
			}
			got := h.Quantile(tt.q)
			// A quantile is its bucket's upper bound: at most 1/128 high, never low.
			if got < tt.want || float64(got) > float64(tt.want)*(1+1.0/subCount)+float64(time.Microsecond) {
				t.Errorf("Quantile(%v) = %v, want %v (up to 0.8%% above)", tt.q, got, tt.want)
			}
		})
	}
}

func TestHistogramStatsAndMerge(t *testing.T) {
	a, b, all := newHistogram(), newHistogram(), newHistogram()
	for i, v := range spread(500, 37*time.Microsecond) {
		all.Record(v)
		if i%3 == 0 {
			a.Record(v)
		} else {
			b.Record(v)
		}
	}
	a.Merge(b)
	a.Merge(newHistogram()) // merging nothing changes nothing
	if a.Count() != 500 || a.Min() != all.Min() || a.Max() != all.Max() || a.Mean() != all.Mean() {
		t.Errorf("Merged count/min/max/mean = %d/%v/%v/%v, want %d/%v/%v/%v",
			a.Count(), a.Min(), a.Max(), a.Mean(), all.Count(), all.Min(), all.Max(), all.Mean())
	}
	if want := 37 * time.Microsecond * 501 / 2; a.Mean() != want {
		t.Errorf("Mean = %v, want %v", a.Mean(), want)
	}
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		if a.Quantile(q) != all.Quantile(q) {
			t.Errorf("Merged Quantile(%v) = %v, recorded together %v", q, a.Quantile(q), all.Quantile(q))
		}
	}
	var n uint64
	for _, bk := range a.Buckets() {
		if bk.Count == 0 || bk.LoUS > bk.HiUS {
			t.Errorf("Bad bucket %+v", bk)
		}
		n += bk.Count
	}
	if n != 500 {
		t.Errorf("Buckets hold %d values, want 500", n)
	}
	empty := newHistogram()
	if empty.Mean() != 0 || empty.Min() != 0 || len(empty.Buckets()) != 0 {
		t.Errorf("Empty histogram: mean %v min %v buckets %d, want zeros", empty.Mean(), empty.Min(), len(empty.Buckets()))
	}
}
