// Package labtest starts the node lab (internal/lab) for a test: the lab's
// own end-to-end tests and those of the commands built on it.
package labtest

import (
	"context"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nodelocaldns/nodelocaldns/internal/lab"
)

// Root returns the repository root: the nearest directory above the test's
// working directory that holds go.mod.
func Root(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("No go.mod above %s: not inside the repository", dir)
		}
		dir = parent
	}
}

// New builds a lab for the test, or skips when that cannot work here:
// not root, or the binaries not built (make build lab-bins, which make test
// does first). The lab is removed by t.Cleanup, and also on SIGINT/SIGTERM,
// which would otherwise end the test binary before any cleanup runs.
func New(t *testing.T) *lab.Lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the node lab needs root (network namespaces, veth, iptables inside them); run as root, as CI does")
	}
	root := Root(t)
	for _, b := range []string{"coredns", "dnsdelay", "testdns"} {
		if _, err := os.Stat(filepath.Join(root, "bin", b)); err != nil {
			t.Skipf("bin/%s is not built; `make test` builds it (make build lab-bins)", b)
		}
	}
	for _, c := range []string{"iptables-restore", "conntrack", "dig", "getent", "taskset"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Skipf("%s missing: `make deps` installs it as root", c)
		}
	}
	cfg := lab.DefaultConfig(root)
	cfg.Logf = t.Logf
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := lab.Up(ctx, cfg)
	if err != nil {
		t.Fatalf("Lab up: %v", err)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	var once sync.Once
	closeLab := func() {
		once.Do(func() {
			if err := l.Close(); err != nil {
				t.Errorf("Lab close: %v", err)
			}
		})
	}
	go func() {
		select {
		case <-sig:
			closeLab()
			os.Exit(1)
		case <-done:
		}
	}()
	t.Cleanup(func() {
		close(done)
		signal.Stop(sig)
		closeLab()
	})
	return l
}
