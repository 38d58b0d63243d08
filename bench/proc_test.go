package bench

import (
	"os"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	tests := []struct {
		name, stat string
		want       time.Duration
		wantError  bool
	}{
		// A CoreDNS process of this machine: utime 247, stime 227 ticks.
		{name: "coredns", stat: readFile(t, "proc_stat_busy.txt"), want: 4740 * time.Millisecond},
		// A command name with spaces and a ")" must not shift the fields.
		{name: "odd comm", stat: "42 (a) b (c)) S 1 42 42 0 -1 4194560 10 0 0 0 7 3 0 0 20 0 1 0 100 0 0\n", want: 100 * time.Millisecond},
		{name: "truncated", stat: "42 (x) S 1 42", wantError: true},
		{name: "not stat", stat: "hello", wantError: true},
	}
	for _, tc := range tests {
		got, err := ParseStat(tc.stat)
		if tc.wantError {
			if err == nil {
				t.Errorf("%s: Expected an error, got %v", tc.name, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: got %v, %v; want %v", tc.name, got, err, tc.want)
		}
	}
}

func TestParseRSS(t *testing.T) {
	got, err := ParseRSS(readFile(t, "proc_status.txt"))
	if err != nil || got != 26140*1024 {
		t.Errorf("Got %d, %v; want %d", got, err, 26140*1024)
	}
	// A kernel thread's status has no VmRSS.
	if _, err := ParseRSS("Name:\tkdamond.0\nState:\tI (idle)\n"); err == nil {
		t.Error("Expected an error for a status without VmRSS")
	}
}

func TestCPUTimeOfSelf(t *testing.T) {
	// Burn some CPU and see the figure grow: the reader works on a live
	// /proc, not only on the samples.
	before, err := CPUTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Spin until the figure moves (clock ticks are 10 ms); the bound only
	// keeps a starved process on a loaded machine from spinning forever.
	deadline := time.Now().Add(20 * time.Second)
	after, x := before, 0
	for after <= before && time.Now().Before(deadline) {
		for i := 0; i < 1_000_000; i++ {
			x++
		}
		if after, err = CPUTime(os.Getpid()); err != nil {
			t.Fatal(err)
		}
	}
	if after <= before {
		t.Errorf("CPU time did not grow over 20 s of spinning: %v then %v (%d loops)", before, after, x)
	}
	if rss, err := RSS(os.Getpid()); err != nil || rss == 0 {
		t.Errorf("RSS of the test process: %d, %v", rss, err)
	}
}

func readFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestParseMachineStat(t *testing.T) {
	stat := "cpu  100 5 50 9000 20 3 7 2 40 0\ncpu0 50 2 25 4500 10 1 3 1 20 0\n"
	got, err := ParseMachineStat(stat)
	if err != nil {
		t.Fatal(err)
	}
	// user 100 + nice 5 + system 50 + irq 3 + softirq 7 + steal 2 = 167 ticks.
	if want := 1670 * time.Millisecond; got != want {
		t.Errorf("Got %v, want %v (idle, iowait and guest not counted)", got, want)
	}
	if _, err := ParseMachineStat("intr 1 2 3\n"); err == nil {
		t.Error("A file without a cpu line parsed")
	}
	if m, err := MachineCPUTime(); err != nil || m <= 0 {
		t.Errorf("MachineCPUTime = %v, %v; want this machine's busy time so far", m, err)
	}
}
