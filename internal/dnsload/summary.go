// Package dnsload is the result of a DNS lookup load run: the JSON summary
// cmd/testdns writes with -json, and what the node lab (internal/lab) and
// the benchmark (cmd/nodebench, bench) read back from it. One type serves
// the writer and every reader, so a field added to it reaches them all.
package dnsload

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"
)

// Summary is the outcome of a run: printed as text, and written as JSON by
// -json. The JSON field names are stable; benchmarks may rely on them.
//
// Latencies cover every completed lookup, answered or failed (a lookup that
// times out after 10 s is a 10 s observation); lookups abandoned because the
// run was interrupted are only counted in "aborted". Latencies in the
// "latency" object are milliseconds; percentiles come from the histogram and
// are at most 0.8 % above the true value, min/avg/max are exact.
type Summary struct {
	// Started is when the run began ("started", RFC 3339).
	Started time.Time `json:"started"`
	// DurationS is the wall time of the run in seconds ("duration_s"): from
	// the start to the end of the last lookup, so it can exceed -d by up to
	// -timeout while in-flight lookups finish.
	DurationS float64 `json:"duration_s"`
	// Interrupted is true when Ctrl-C or SIGTERM stopped the run early and
	// the figures are partial ("interrupted").
	Interrupted bool `json:"interrupted"`
	// Config echoes the settings of the run ("config").
	Config ConfigSummary `json:"config"`
	// Requests is the number of completed lookups, answered or failed
	// ("requests").
	Requests uint64 `json:"requests"`
	// Errors is the number of failed lookups ("errors"); ErrorKinds splits it.
	Errors uint64 `json:"errors"`
	// Aborted counts lookups cut short by an interrupt ("aborted"); they
	// are not in Requests.
	Aborted uint64 `json:"aborted"`
	// WindowS is the time in seconds during which lookups were started
	// ("window_s"): -d, or less if the run was interrupted.
	WindowS float64 `json:"window_s"`
	// LookupsPerS is Requests divided by WindowS ("lookups_per_s"), so the
	// stragglers that finish after -d do not dilute the rate.
	LookupsPerS float64 `json:"lookups_per_s"`
	// LimitMS is the -l limit in milliseconds ("limit_ms").
	LimitMS float64 `json:"limit_ms"`
	// AtOrAboveLimit counts lookups that took LimitMS or longer
	// ("at_or_above_limit").
	AtOrAboveLimit uint64 `json:"at_or_above_limit"`
	// Latency holds min/avg/max and percentiles ("latency").
	Latency LatencySummary `json:"latency"`
	// ErrorKinds counts errors per kind; every kind is present
	// ("error_kinds").
	ErrorKinds ErrorCounts `json:"error_kinds"`
	// ErrorExamples holds the first error message seen of each kind that
	// occurred, keyed by kind name ("error_examples").
	ErrorExamples map[string]string `json:"error_examples"`
	// Hosts breaks the counts down per name, in -host order ("hosts").
	Hosts []HostSummary `json:"hosts"`
	// Histogram is the latency distribution ("histogram").
	Histogram HistogramData `json:"histogram"`
}

// ConfigSummary echoes the settings a run used.
type ConfigSummary struct {
	Resolver    string   `json:"resolver"`    // "go" or "system"
	Type        string   `json:"type"`        // "A", "AAAA" or "ip"
	TCP         bool     `json:"tcp"`         // Go resolver over TCP
	Server      string   `json:"server"`      // -server, "" for resolv.conf's
	Concurrency int      `json:"concurrency"` // workers
	DurationS   float64  `json:"duration_s"`  // -d
	TimeoutS    float64  `json:"timeout_s"`   // -timeout
	Rate        float64  `json:"rate_limit"`  // -rate, 0 for none
	Hosts       []string `json:"hosts"`       // -host
}

// LatencySummary holds latency statistics in milliseconds.
type LatencySummary struct {
	MinMS  float64 `json:"min_ms"`
	AvgMS  float64 `json:"avg_ms"`
	MaxMS  float64 `json:"max_ms"`
	P50MS  float64 `json:"p50_ms"`
	P90MS  float64 `json:"p90_ms"`
	P99MS  float64 `json:"p99_ms"`
	P999MS float64 `json:"p99_9_ms"`
}

// ErrorCounts counts failed lookups per kind; see cmd/testdns's ErrorKind for what each
// kind holds.
type ErrorCounts struct {
	Timeout   uint64 `json:"timeout"`
	NXDOMAIN  uint64 `json:"nxdomain"`
	Refused   uint64 `json:"refused"`
	ServFail  uint64 `json:"servfail"`
	Temporary uint64 `json:"temporary"`
	Other     uint64 `json:"other"`
}

// HostSummary counts the completed lookups of one name.
type HostSummary struct {
	Name           string `json:"name"`
	Requests       uint64 `json:"requests"`
	Errors         uint64 `json:"errors"`
	AtOrAboveLimit uint64 `json:"at_or_above_limit"`
}

// HistogramData is the latency distribution: the non-empty buckets of a
// log-linear histogram, in ascending order. Each bucket spans at most
// RelativeWidth of its lower bound (values below 256 µs are exact to the
// microsecond), so the data can be charted as is or re-binned.
type HistogramData struct {
	Unit          string   `json:"unit"`           // always "us" (microseconds)
	RelativeWidth float64  `json:"relative_width"` // 1/128
	Buckets       []Bucket `json:"buckets"`
}

// Bucket is one non-empty histogram bucket, as written to the JSON summary.
type Bucket struct {
	// LoUS is the smallest latency the bucket holds, in microseconds.
	LoUS uint64 `json:"lo_us"`
	// HiUS is the largest latency the bucket holds, in microseconds
	// (inclusive; a latency of HiUS+0.999 µs still falls in it).
	HiUS uint64 `json:"hi_us"`
	// Count is the number of lookups whose latency fell in the bucket.
	Count uint64 `json:"count"`
}

// WriteJSON writes the summary as indented JSON.
func (s *Summary) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(s); err != nil {
		return fmt.Errorf("encode summary as JSON: %w", err)
	}
	return nil
}

// Parse reads a JSON summary. A summary without the microsecond histogram
// testdns always writes is not one of testdns's.
func Parse(b []byte) (*Summary, error) {
	var s Summary
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("testdns summary: %w", err)
	}
	if s.Histogram.Unit != "us" {
		return nil, fmt.Errorf("testdns summary: histogram unit %q, want \"us\"", s.Histogram.Unit)
	}
	return &s, nil
}

// ReadFile reads and parses the JSON summary in file path.
func ReadFile(path string) (*Summary, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read testdns summary: %w", err)
	}
	s, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}
