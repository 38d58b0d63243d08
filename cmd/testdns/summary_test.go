package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nodelocaldns/nodelocaldns/internal/dnsload"
)

// record feeds one outcome into st the way a worker does.
func record(st *workerStats, host int, lat, limit time.Duration, kind ErrorKind, failed bool, msg string) {
	st.hist.Record(lat)
	st.hosts[host].requests++
	if lat >= limit {
		st.slow++
		st.hosts[host].slow++
	}
	if failed {
		st.kinds[kind]++
		st.hosts[host].errors++
		if st.examples[kind] == "" {
			st.examples[kind] = msg
		}
	}
}

func TestSummary(t *testing.T) {
	cfg := Config{Hosts: []string{"a.test.", "b.test."}, Concurrency: 2, Duration: 10 * time.Second,
		Limit: 5 * time.Second, Timeout: 10 * time.Second, Resolver: resolverGo, Type: typeIP}
	type outcome struct {
		host   int
		lat    time.Duration
		kind   ErrorKind
		failed bool
	}
	tests := []struct {
		name     string
		outcomes []outcome
		aborted  uint64
		elapsed  time.Duration
		interr   bool
		want     dnsload.Summary // only the compared fields
		wantText []string
	}{
		{
			name:     "nothing",
			elapsed:  time.Second,
			wantText: []string{"requests: 0  errors: 0  lookups/s: 0.0\n", ">= 5000ms: 0\n", "errors: none\n"},
		},
		{
			name: "stalls and errors",
			outcomes: []outcome{
				{0, time.Millisecond, 0, false},
				{0, 2 * time.Millisecond, 0, false},
				{1, 5 * time.Second, 0, false},
				{1, 10 * time.Second, KindTimeout, true},
				{0, 3 * time.Millisecond, KindNXDOMAIN, true},
			},
			elapsed: 2 * time.Second,
			want: dnsload.Summary{Requests: 5, Errors: 2, AtOrAboveLimit: 2, LookupsPerS: 2.5,
				ErrorKinds: dnsload.ErrorCounts{Timeout: 1, NXDOMAIN: 1}},
			wantText: []string{
				"requests: 5  errors: 2  lookups/s: 2.5\n",
				"latency: min 1.00ms avg 3001ms max 10000ms  p50 3.0",
				">= 5000ms: 2\n",
				"errors: timeout=1 nxdomain=1\n",
				"  e.g. timeout: msg timeout\n",
				"host b.test.: requests 2 errors 1 >= 5000ms: 2\n",
			},
		},
		{
			name:     "interrupted",
			outcomes: []outcome{{0, 300 * time.Millisecond, KindRefused, true}},
			aborted:  3,
			elapsed:  time.Second,
			interr:   true,
			want:     dnsload.Summary{Requests: 1, Errors: 1, Aborted: 3, Interrupted: true, LookupsPerS: 1, ErrorKinds: dnsload.ErrorCounts{Refused: 1}},
			wantText: []string{"interrupted after 1.0s: partial summary (3 in-flight lookups aborted)\n", "errors: refused=1\n"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newWorkerStats(len(cfg.Hosts))
			for _, o := range tt.outcomes {
				record(st, o.host, o.lat, cfg.Limit, o.kind, o.failed, "msg "+o.kind.String())
			}
			st.aborted = tt.aborted
			s := newSummary(cfg, st, time.Now(), tt.elapsed, tt.interr)
			if s.Requests != tt.want.Requests || s.Errors != tt.want.Errors || s.AtOrAboveLimit != tt.want.AtOrAboveLimit ||
				s.Aborted != tt.want.Aborted || s.Interrupted != tt.want.Interrupted || s.LookupsPerS != tt.want.LookupsPerS {
				t.Errorf("Summary counts = requests %d errors %d slow %d aborted %d interrupted %v rate %v, want %d %d %d %d %v %v",
					s.Requests, s.Errors, s.AtOrAboveLimit, s.Aborted, s.Interrupted, s.LookupsPerS,
					tt.want.Requests, tt.want.Errors, tt.want.AtOrAboveLimit, tt.want.Aborted, tt.want.Interrupted, tt.want.LookupsPerS)
			}
			if s.ErrorKinds != tt.want.ErrorKinds {
				t.Errorf("ErrorKinds = %+v, want %+v", s.ErrorKinds, tt.want.ErrorKinds)
			}
			var hostTotal uint64
			for _, h := range s.Hosts {
				hostTotal += h.Requests
			}
			if hostTotal != s.Requests {
				t.Errorf("Per-host requests add up to %d, want %d", hostTotal, s.Requests)
			}
			var buf bytes.Buffer
			if err := writeText(&buf, s); err != nil {
				t.Fatalf("WriteText: %v", err)
			}
			for _, w := range tt.wantText {
				if !strings.Contains(buf.String(), w) {
					t.Errorf("Text summary lacks %q:\n%s", w, buf.String())
				}
			}
		})
	}
}

// TestSummaryJSON pins the JSON field names a benchmark reads.
func TestSummaryJSON(t *testing.T) {
	cfg := Config{Hosts: []string{"a.test."}, Concurrency: 1, Duration: time.Second, Limit: 200 * time.Millisecond,
		Timeout: time.Second, Resolver: resolverGo, Type: typeA, Server: "127.0.0.1:53"}
	st := newWorkerStats(1)
	record(st, 0, 100*time.Microsecond, cfg.Limit, 0, false, "")
	record(st, 0, 100*time.Microsecond, cfg.Limit, 0, false, "")
	record(st, 0, 300*time.Millisecond, cfg.Limit, KindServFail, true, "server misbehaving")
	var buf bytes.Buffer
	if err := newSummary(cfg, st, time.Now(), time.Second, false).WriteJSON(&buf); err != nil {
		t.Fatalf("WriteJSON: %v", err)
	}
	var got map[string]any
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatalf("Summary JSON does not parse: %v\n%s", err, buf.String())
	}
	for _, key := range []string{"started", "duration_s", "interrupted", "config", "requests", "errors", "aborted",
		"window_s", "lookups_per_s", "limit_ms", "at_or_above_limit", "latency", "error_kinds", "error_examples", "hosts", "histogram"} {
		if _, ok := got[key]; !ok {
			t.Errorf("JSON summary lacks %q", key)
		}
	}
	lat := got["latency"].(map[string]any)
	for _, key := range []string{"min_ms", "avg_ms", "max_ms", "p50_ms", "p90_ms", "p99_ms", "p99_9_ms"} {
		if _, ok := lat[key]; !ok {
			t.Errorf("JSON latency lacks %q", key)
		}
	}
	kinds := got["error_kinds"].(map[string]any)
	for k := range numKinds {
		if _, ok := kinds[k.String()]; !ok {
			t.Errorf("JSON error_kinds lacks %q", k)
		}
	}
	if kinds["servfail"].(float64) != 1 {
		t.Errorf("error_kinds.servfail = %v, want 1", kinds["servfail"])
	}
	hist := got["histogram"].(map[string]any)
	buckets := hist["buckets"].([]any)
	if hist["unit"] != "us" || len(buckets) != 2 {
		t.Fatalf("Histogram unit %v with %d buckets, want us and 2", hist["unit"], len(buckets))
	}
	first := buckets[0].(map[string]any)
	if first["lo_us"].(float64) != 100 || first["hi_us"].(float64) != 100 || first["count"].(float64) != 2 {
		t.Errorf("First bucket = %v, want lo_us 100, hi_us 100, count 2", first)
	}
}

func TestFmtFloatMS(t *testing.T) {
	tests := []struct {
		in   float64
		want string
	}{
		{0, "0ms"}, {0.1234, "0.123ms"}, {1.234, "1.23ms"}, {12.34, "12.3ms"}, {5004.4, "5004ms"},
	}
	for _, tt := range tests {
		if got := fmtFloatMS(tt.in); got != tt.want {
			t.Errorf("fmtFloatMS(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
