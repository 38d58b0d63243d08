package nodecache

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

var cmSerial atomic.Int64

// writeConfigMap lays out dir the way kubelet mounts a ConfigMap: each key
// a symlink through ..data to a timestamped directory, and an update swaps
// ..data atomically by renaming a new symlink over it. Keys missing from
// data disappear, as kubelet removes them.
func writeConfigMap(t *testing.T, dir string, data map[string]string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ts := fmt.Sprintf("..2026_01_02_03_04_05.%09d", cmSerial.Add(1))
	if err := os.Mkdir(filepath.Join(dir, ts), 0o755); err != nil {
		t.Fatal(err)
	}
	for k, v := range data {
		if err := os.WriteFile(filepath.Join(dir, ts, k), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	old, _ := os.Readlink(filepath.Join(dir, "..data"))
	tmp := filepath.Join(dir, "..data_tmp")
	if err := os.Symlink(ts, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{keyStubDomains, keyUpstreams} {
		link := filepath.Join(dir, k)
		_, has := data[k]
		_, err := os.Lstat(link)
		switch {
		case has && err != nil:
			if err := os.Symlink(filepath.Join("..data", k), link); err != nil {
				t.Fatal(err)
			}
		case !has && err == nil:
			os.Remove(link)
		}
	}
	if old != "" {
		os.RemoveAll(filepath.Join(dir, old))
	}
}

// newTestFlags parses args as the command line, with a -conf flag defined
// first the way coremain does.
func newTestFlags(t *testing.T, args ...string) *compatFlags {
	t.Helper()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.String("conf", "", "Corefile to load")
	f := registerFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("Flags %q: %v", args, err)
	}
	return f
}

func writeFile(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// configMapErrors reads coredns_nodecache_setup_errors_total{errortype="configmap"}
// from the default registry, as a scrape would.
func configMapErrors(t *testing.T) float64 {
	t.Helper()
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatalf("Gather metrics: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "coredns_nodecache_setup_errors_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "errortype" && l.GetValue() == "configmap" {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatal("No coredns_nodecache_setup_errors_total{errortype=\"configmap\"} in the default registry")
	return 0
}
