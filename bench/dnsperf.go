package bench

import (
	"bufio"
	"fmt"
	"strconv"
	"strings"
)

// Dnsperf is what one dnsperf run reports in its "Statistics:" section.
type Dnsperf struct {
	Sent      uint64  `json:"sent"`
	Completed uint64  `json:"completed"`
	Lost      uint64  `json:"lost"`
	RunTimeS  float64 `json:"run_time_s"`
	QPS       float64 `json:"qps"`
	AvgLatMS  float64 `json:"avg_latency_ms"`
	MinLatMS  float64 `json:"min_latency_ms"`
	MaxLatMS  float64 `json:"max_latency_ms"`
	StdDevMS  float64 `json:"stddev_latency_ms"`
	NoError   uint64  `json:"noerror"`
	Responses string  `json:"response_codes"` // as dnsperf prints them
}

// ParseDnsperf reads dnsperf 2.x output (stdout). Lines it does not know are
// skipped; a report without "Queries sent" and "Queries completed" is an
// error, since nothing could be measured.
func ParseDnsperf(out string) (Dnsperf, error) {
	var d Dnsperf
	var seen int
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		key, val, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		var err error
		switch key {
		case "Queries sent":
			d.Sent, err = firstUint(val)
			seen++
		case "Queries completed":
			d.Completed, err = firstUint(val)
			seen++
		case "Queries lost":
			d.Lost, err = firstUint(val)
		case "Run time (s)":
			d.RunTimeS, err = strconv.ParseFloat(val, 64)
		case "Queries per second":
			d.QPS, err = strconv.ParseFloat(val, 64)
		case "Response codes":
			d.Responses = val
			d.NoError = rcodeCount(val, "NOERROR")
		case "Average Latency (s)":
			// 0.000531 (min 0.000012, max 0.002516)
			var avg, lo, hi float64
			if _, err = fmt.Sscanf(val, "%g (min %g, max %g)", &avg, &lo, &hi); err == nil {
				d.AvgLatMS, d.MinLatMS, d.MaxLatMS = avg*1e3, lo*1e3, hi*1e3
			}
		case "Latency StdDev (s)":
			var sd float64
			sd, err = strconv.ParseFloat(val, 64)
			d.StdDevMS = sd * 1e3
		}
		if err != nil {
			return d, fmt.Errorf("dnsperf %q: %q: %w", key, val, err)
		}
	}
	if seen < 2 {
		return d, fmt.Errorf("no dnsperf statistics in its output: %q", tail(out, 300))
	}
	return d, nil
}

func firstUint(s string) (uint64, error) {
	f := strings.Fields(s)
	if len(f) == 0 {
		return 0, fmt.Errorf("empty")
	}
	return strconv.ParseUint(f[0], 10, 64)
}

// rcodeCount finds "NAME count (pct%)" in dnsperf's response code line.
func rcodeCount(line, name string) uint64 {
	f := strings.Fields(line)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == name {
			n, _ := strconv.ParseUint(f[i+1], 10, 64)
			return n
		}
	}
	return 0
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
