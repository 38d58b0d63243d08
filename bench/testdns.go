package bench

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
)

// Testdns is the part of cmd/testdns's -json summary the benchmark uses.
type Testdns struct {
	Requests       uint64  `json:"requests"`
	Errors         uint64  `json:"errors"`
	LookupsPerS    float64 `json:"lookups_per_s"`
	AtOrAboveLimit uint64  `json:"at_or_above_limit"`
	Latency        struct {
		MinMS  float64 `json:"min_ms"`
		AvgMS  float64 `json:"avg_ms"`
		MaxMS  float64 `json:"max_ms"`
		P50MS  float64 `json:"p50_ms"`
		P99MS  float64 `json:"p99_ms"`
		P999MS float64 `json:"p99_9_ms"`
	} `json:"latency"`
	ErrorExamples map[string]string `json:"error_examples"`
	Histogram     struct {
		Unit    string   `json:"unit"`
		Buckets []Bucket `json:"buckets"`
	} `json:"histogram"`
}

// Bucket is one histogram bucket of testdns: lookups whose latency fell in
// [LoUS, HiUS] microseconds.
type Bucket struct {
	LoUS  uint64 `json:"lo_us"`
	HiUS  uint64 `json:"hi_us"`
	Count uint64 `json:"count"`
}

// ParseTestdns reads testdns's -json output.
func ParseTestdns(b []byte) (Testdns, error) {
	var t Testdns
	if err := json.Unmarshal(b, &t); err != nil {
		return t, fmt.Errorf("testdns summary: %w", err)
	}
	if t.Histogram.Unit != "us" {
		return t, fmt.Errorf("testdns summary: histogram unit %q, want \"us\"", t.Histogram.Unit)
	}
	return t, nil
}

// MergeBuckets adds histograms bucket by bucket (testdns buckets have fixed
// bounds, so equal bounds are the same bucket), in ascending order.
func MergeBuckets(hs ...[]Bucket) []Bucket {
	sum := map[[2]uint64]uint64{}
	for _, h := range hs {
		for _, b := range h {
			sum[[2]uint64{b.LoUS, b.HiUS}] += b.Count
		}
	}
	out := make([]Bucket, 0, len(sum))
	for k, n := range sum {
		out = append(out, Bucket{LoUS: k[0], HiUS: k[1], Count: n})
	}
	slices.SortFunc(out, func(a, b Bucket) int { return cmp.Compare(a.LoUS, b.LoUS) })
	return out
}
