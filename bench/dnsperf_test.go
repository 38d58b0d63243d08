package bench

import (
	"os"
	"testing"
)

func TestParseDnsperf(t *testing.T) {
	tests := []struct {
		file      string
		want      Dnsperf
		wantError bool
	}{
		// dnsperf 2.10 against bin/benchresponder on loopback.
		{file: "dnsperf_hits.txt", want: Dnsperf{Sent: 239115, Completed: 239115, Lost: 0, RunTimeS: 2.000135, QPS: 119549.430413,
			AvgLatMS: 0.531, MinLatMS: 0.012, MaxLatMS: 2.516, StdDevMS: 0.331, NoError: 239115}},
		// Every query lost: no server on the port.
		{file: "dnsperf_lost.txt", want: Dnsperf{Sent: 200, Completed: 0, Lost: 200, RunTimeS: 2.000148}},
		// The cache-miss run of the lab through this build.
		{file: "dnsperf_miss_lab.txt", want: Dnsperf{Sent: 8326, Completed: 8326, RunTimeS: 2.010911, QPS: 4140.411982,
			AvgLatMS: 23.983, MinLatMS: 2.359, MaxLatMS: 65.268, StdDevMS: 8.478, NoError: 8326}},
		// Only the banner: dnsperf died before measuring.
		{file: "dnsperf_banner_only.txt", wantError: true},
	}
	for _, tc := range tests {
		b, err := os.ReadFile("testdata/" + tc.file)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseDnsperf(string(b))
		if tc.wantError {
			if err == nil {
				t.Errorf("%s: Expected an error, got %+v", tc.file, got)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.file, err)
		}
		got.Responses = ""
		if !near(got.AvgLatMS, tc.want.AvgLatMS) || !near(got.MinLatMS, tc.want.MinLatMS) || !near(got.MaxLatMS, tc.want.MaxLatMS) || !near(got.StdDevMS, tc.want.StdDevMS) {
			t.Errorf("%s: latencies %+v, want %+v", tc.file, got, tc.want)
		}
		got.AvgLatMS, got.MinLatMS, got.MaxLatMS, got.StdDevMS = tc.want.AvgLatMS, tc.want.MinLatMS, tc.want.MaxLatMS, tc.want.StdDevMS
		if got != tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.file, got, tc.want)
		}
	}
}

func near(a, b float64) bool { return a-b < 1e-9 && b-a < 1e-9 }
