package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
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

// ErrorCounts counts failed lookups per kind; see ErrorKind for what each
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

// newSummary builds the summary from the merged worker counts.
func newSummary(cfg Config, st *workerStats, started time.Time, elapsed time.Duration, interrupted bool) *Summary {
	h := st.hist
	s := &Summary{
		Started:     started.UTC(),
		DurationS:   elapsed.Seconds(),
		Interrupted: interrupted,
		Config: ConfigSummary{
			Resolver:    cfg.Resolver,
			Type:        cfg.Type,
			TCP:         cfg.TCP,
			Server:      cfg.Server,
			Concurrency: cfg.Concurrency,
			DurationS:   cfg.Duration.Seconds(),
			TimeoutS:    cfg.Timeout.Seconds(),
			Rate:        cfg.Rate,
			Hosts:       cfg.Hosts,
		},
		Requests:       h.Count(),
		Aborted:        st.aborted,
		LimitMS:        ms(cfg.Limit),
		AtOrAboveLimit: st.slow,
		Latency: LatencySummary{
			MinMS:  ms(h.Min()),
			AvgMS:  ms(h.Mean()),
			MaxMS:  ms(h.Max()),
			P50MS:  ms(h.Quantile(0.50)),
			P90MS:  ms(h.Quantile(0.90)),
			P99MS:  ms(h.Quantile(0.99)),
			P999MS: ms(h.Quantile(0.999)),
		},
		ErrorKinds: ErrorCounts{
			Timeout:   st.kinds[KindTimeout],
			NXDOMAIN:  st.kinds[KindNXDOMAIN],
			Refused:   st.kinds[KindRefused],
			ServFail:  st.kinds[KindServFail],
			Temporary: st.kinds[KindTemporary],
			Other:     st.kinds[KindOther],
		},
		ErrorExamples: map[string]string{},
		Histogram: HistogramData{
			Unit:          "us",
			RelativeWidth: 1.0 / subCount,
			Buckets:       h.Buckets(),
		},
	}
	for k, n := range st.kinds {
		s.Errors += n
		if n > 0 {
			s.ErrorExamples[ErrorKind(k).String()] = st.examples[k]
		}
	}
	window := min(elapsed, cfg.Duration)
	s.WindowS = window.Seconds()
	if window > 0 {
		s.LookupsPerS = float64(s.Requests) / window.Seconds()
	}
	for i, name := range cfg.Hosts {
		hs := st.hosts[i]
		s.Hosts = append(s.Hosts, HostSummary{Name: name, Requests: hs.requests, Errors: hs.errors, AtOrAboveLimit: hs.slow})
	}
	return s
}

// kindCounts returns the error counts in ErrorKind order.
func (c ErrorCounts) kindCounts() [numKinds]uint64 {
	return [numKinds]uint64{c.Timeout, c.NXDOMAIN, c.Refused, c.ServFail, c.Temporary, c.Other}
}

// WriteText prints the human-readable summary.
func (s *Summary) WriteText(w io.Writer) error {
	var b strings.Builder
	if s.Interrupted {
		fmt.Fprintf(&b, "interrupted after %.1fs: partial summary (%d in-flight lookups aborted)\n", s.DurationS, s.Aborted)
	}
	fmt.Fprintf(&b, "requests: %d  errors: %d  lookups/s: %.1f\n", s.Requests, s.Errors, s.LookupsPerS)
	l := s.Latency
	fmt.Fprintf(&b, "latency: min %s avg %s max %s  p50 %s p90 %s p99 %s p99.9 %s\n",
		fmtFloatMS(l.MinMS), fmtFloatMS(l.AvgMS), fmtFloatMS(l.MaxMS),
		fmtFloatMS(l.P50MS), fmtFloatMS(l.P90MS), fmtFloatMS(l.P99MS), fmtFloatMS(l.P999MS))
	fmt.Fprintf(&b, ">= %s: %d\n", fmtFloatMS(s.LimitMS), s.AtOrAboveLimit)
	b.WriteString("errors:")
	if s.Errors == 0 {
		b.WriteString(" none")
	}
	for k, n := range s.ErrorKinds.kindCounts() {
		if n > 0 {
			fmt.Fprintf(&b, " %s=%d", ErrorKind(k), n)
		}
	}
	b.WriteString("\n")
	for k := range numKinds {
		if ex, ok := s.ErrorExamples[k.String()]; ok {
			fmt.Fprintf(&b, "  e.g. %s: %s\n", k, ex)
		}
	}
	if len(s.Hosts) > 1 {
		for _, h := range s.Hosts {
			fmt.Fprintf(&b, "host %s: requests %d errors %d >= %s: %d\n",
				h.Name, h.Requests, h.Errors, fmtFloatMS(s.LimitMS), h.AtOrAboveLimit)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
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

// ms converts a duration to fractional milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// fmtMS formats a duration as milliseconds, see fmtFloatMS.
func fmtMS(d time.Duration) string { return fmtFloatMS(ms(d)) }

// fmtFloatMS formats milliseconds with about three significant digits for
// small values and whole milliseconds from 100 ms up: 0.123ms, 1.23ms,
// 12.3ms, 5004ms.
func fmtFloatMS(v float64) string {
	prec := 0
	switch {
	case v == 0:
	case v < 1:
		prec = 3
	case v < 10:
		prec = 2
	case v < 100:
		prec = 1
	}
	return strconv.FormatFloat(v, 'f', prec, 64) + "ms"
}
