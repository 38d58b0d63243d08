package bench

import (
	"bytes"
	"encoding/json"
	"image/png"
	"math"
	"os"
	"strings"
	"testing"

	"github.com/nodelocaldns/nodelocaldns/internal/dnsload"
)

func TestTestdnsAndChart(t *testing.T) {
	b, err := os.ReadFile("testdata/testdns_go.json")
	if err != nil {
		t.Fatal(err)
	}
	// 200 Go lookups through kube-proxy's DNAT in the lab: 1477 lookups,
	// 4 of them ≥ 5 s.
	td, err := dnsload.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if td.Requests != 1477 || td.AtOrAboveLimit != 4 || !near(td.Latency.P999MS, 5046.271999) {
		t.Errorf("Got requests %d, ≥ 5 s %d, p99.9 %v; want 1477, 4, 5046.271999", td.Requests, td.AtOrAboveLimit, td.Latency.P999MS)
	}
	merged := MergeBuckets(td.Histogram.Buckets, td.Histogram.Buckets)
	var n uint64
	for i, bk := range merged {
		n += bk.Count
		if i > 0 && bk.LoUS <= merged[i-1].LoUS {
			t.Fatalf("Merged buckets out of order at %d: %+v after %+v", i, bk, merged[i-1])
		}
	}
	if n != 2*1477 || len(merged) != len(td.Histogram.Buckets) {
		t.Errorf("Merging a histogram with itself: %d lookups in %d buckets, want %d in %d", n, len(merged), 2*1477, len(td.Histogram.Buckets))
	}
	tail := Tail(merged)
	// The slowest 4 of 1477 lookups are ≥ 5 s: the tail reaches them.
	last := tail[len(tail)-1]
	if last.X < 5000 || !near(last.Y, 1.0/1477) {
		t.Errorf("Tail ends at %v ms with %v slower, want ≥ 5000 ms with the one slowest lookup (%v)", last.X, last.Y, 1.0/1477)
	}
	for i := 1; i < len(tail); i++ {
		if tail[i].Y > tail[i-1].Y || tail[i].X < tail[i-1].X {
			t.Fatalf("Tail not a falling step line at %d: %v after %v", i, tail[i], tail[i-1])
		}
	}
	var img bytes.Buffer
	err = WriteChart(&img, []Panel{{Title: "Go", Peers: []string{"a", "b"}, Hists: [][]dnsload.Bucket{merged, td.Histogram.Buckets[:10]}}})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := png.DecodeConfig(&img)
	if err != nil || cfg.Width < 300 || cfg.Height < 200 {
		t.Errorf("Chart is not a usable PNG: %+v, %v", cfg, err)
	}
	if _, err := dnsload.Parse([]byte(`{"requests": 3}`)); err == nil {
		t.Error("Expected an error for a summary without a histogram")
	}
}

func TestReportOutputs(t *testing.T) {
	r := &Report{Rounds: 3, Machine: Machine{CPU: "AMD EPYC", CPUs: 2, Kernel: "6.18"},
		Peers:   []Peer{{Key: "this", Name: "this build"}, {Key: "stock", Name: "stock"}, {Key: "ceiling", Name: "ceiling"}},
		Dropped: []Dropped{{Name: "node-cache", Reason: "proxy refused"}}}
	qps := r.Metric("hit_qps", "cache hits: qps", "", "higher")
	for _, v := range []float64{32044, 26403, 49074} {
		qps.Add("this", v)
	}
	for _, v := range []float64{30479, 23006, 52121} {
		qps.Add("stock", v)
	}
	miss := r.Metric("miss_qps", "cache misses: qps", "", "higher")
	miss.Add("this", 3677)
	miss.Add("this", math.NaN())
	if r.Metric("hit_qps", "x", "", "") != qps {
		t.Fatal("Metric with a known key made a new row")
	}
	r.Summarise()
	var md strings.Builder
	if err := r.WriteMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"| cache hits: qps | 32044 (26403–49074) | 30479 (23006–52121) | — |",
		"| cache misses: qps | 3677 | — | — |",
		"| cache hits: qps | 1.05× | — |", // 32044 / 30479
		"- node-cache: proxy refused",
	} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("Markdown lacks %q:\n%s", want, md.String())
		}
	}
	var js bytes.Buffer
	if err := r.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back struct {
		Metrics []struct {
			Key     string               `json:"key"`
			Samples map[string][]float64 `json:"samples"`
			Spread  map[string]Spread    `json:"spread"`
		} `json:"metrics"`
	}
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatalf("JSON does not parse back: %v\n%s", err, js.String())
	}
	if got := back.Metrics[1].Samples["this"]; len(got) != 2 || got[1] != -1 {
		t.Errorf("Unmeasured round in JSON: %v, want [3677 -1]", got)
	}
	if got := back.Metrics[0].Spread["stock"].Median; got != 30479 {
		t.Errorf("JSON median of stock: %v, want 30479", got)
	}
}
