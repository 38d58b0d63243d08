package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/nodelocaldns/nodelocaldns/internal/dnsload"
)

// newSummary builds the summary from the merged worker counts.
func newSummary(cfg Config, st *workerStats, started time.Time, elapsed time.Duration, interrupted bool) *dnsload.Summary {
	h := st.hist
	s := &dnsload.Summary{
		Started:     started.UTC(),
		DurationS:   elapsed.Seconds(),
		Interrupted: interrupted,
		Config: dnsload.ConfigSummary{
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
		Latency: dnsload.LatencySummary{
			MinMS:  ms(h.Min()),
			AvgMS:  ms(h.Mean()),
			MaxMS:  ms(h.Max()),
			P50MS:  ms(h.Quantile(0.50)),
			P90MS:  ms(h.Quantile(0.90)),
			P99MS:  ms(h.Quantile(0.99)),
			P999MS: ms(h.Quantile(0.999)),
		},
		ErrorKinds: dnsload.ErrorCounts{
			Timeout:   st.kinds[KindTimeout],
			NXDOMAIN:  st.kinds[KindNXDOMAIN],
			Refused:   st.kinds[KindRefused],
			ServFail:  st.kinds[KindServFail],
			Temporary: st.kinds[KindTemporary],
			Other:     st.kinds[KindOther],
		},
		ErrorExamples: map[string]string{},
		Histogram: dnsload.HistogramData{
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
		s.Hosts = append(s.Hosts, dnsload.HostSummary{Name: name, Requests: hs.requests, Errors: hs.errors, AtOrAboveLimit: hs.slow})
	}
	return s
}

// kindCounts returns the error counts in ErrorKind order.
func kindCounts(c dnsload.ErrorCounts) [numKinds]uint64 {
	return [numKinds]uint64{c.Timeout, c.NXDOMAIN, c.Refused, c.ServFail, c.Temporary, c.Other}
}

// writeText prints the human-readable summary.
func writeText(w io.Writer, s *dnsload.Summary) error {
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
	for k, n := range kindCounts(s.ErrorKinds) {
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
