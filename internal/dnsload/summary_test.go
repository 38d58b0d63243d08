package dnsload

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	in := &Summary{Requests: 7, Errors: 1, AtOrAboveLimit: 2, Latency: LatencySummary{P99MS: 5001.5},
		ErrorKinds: ErrorCounts{Timeout: 1}, Histogram: HistogramData{Unit: "us", Buckets: []Bucket{{LoUS: 100, HiUS: 100, Count: 7}}}}
	var buf bytes.Buffer
	if err := in.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	out, err := Parse(buf.Bytes())
	if err != nil {
		t.Fatalf("Parse what WriteJSON wrote: %v\n%s", err, buf.String())
	}
	if out.Requests != 7 || out.Errors != 1 || out.AtOrAboveLimit != 2 || out.Latency.P99MS != 5001.5 ||
		out.ErrorKinds.Timeout != 1 || len(out.Histogram.Buckets) != 1 || out.Histogram.Buckets[0].Count != 7 {
		t.Errorf("Round trip changed the summary: %+v", out)
	}

	tests := []struct {
		name, json, wantErr string
	}{
		{"not JSON", `{"requests": `, "testdns summary"},
		{"no histogram", `{"requests": 3}`, `histogram unit ""`},
	}
	for _, tt := range tests {
		if _, err := Parse([]byte(tt.json)); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("Parse %s: error %v, want one with %q", tt.name, err, tt.wantErr)
		}
	}

	path := filepath.Join(t.TempDir(), "bad.json")
	if err := os.WriteFile(path, []byte(`{"requests": 3}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadFile(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("ReadFile of a bad summary: error %v, want one naming %s", err, path)
	}
}
