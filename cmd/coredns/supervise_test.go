package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nodelocaldns/nodelocaldns/internal/nstest"
)

// failingCorefiles start, change the node, then die through os.Exit with
// no hook run (issue 18 B4).
var failingCorefiles = []struct {
	name, corefile, logged string
	portInUse              bool
}{
	// The loop plugin finds the server forwarding to itself once the
	// listeners are up, and calls log.Fatalf.
	{"loop", `.:53 {
	bind 169.254.20.10 198.18.0.10
	nodelocal {
		localip 169.254.20.10 198.18.0.10
		statedir %s
	}
	loop
	forward . 169.254.20.10
}
`, "plugin/loop: Loop", false},
	// A listener that cannot bind after OnStartup: caddy.Start fails and
	// CoreDNS calls log.Fatal.
	{"port in use", `.:53 {
	bind 169.254.20.10 198.18.0.10
	nodelocal {
		localip 169.254.20.10 198.18.0.10
		statedir %s
	}
	whoami
}
`, "address already in use", true},
}

// holdPort binds TCP addr, an address the namespace does not have yet
// (IP_FREEBIND), without SO_REUSEPORT, so the cache's listener cannot.
func holdPort(t *testing.T, addr string) {
	t.Helper()
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_IP, syscall.IP_FREEBIND, 1) })
		if err != nil {
			return err
		}
		return serr
	}}
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatalf("Hold %s: %v", addr, err)
	}
	t.Cleanup(func() { ln.Close() })
}

// TestFailedStartUndone: whatever ends the process after it changed the
// node, the link, its addresses and the rules go with it.
func TestFailedStartUndone(t *testing.T) {
	for _, tc := range failingCorefiles {
		t.Run(tc.name, func(t *testing.T) {
			nstest.Enter(t)
			if tc.portInUse {
				holdPort(t, "198.18.0.10:53")
			}
			c := startCache(t, fmt.Sprintf(tc.corefile, t.TempDir()))
			done := make(chan error, 1)
			go func() { done <- c.cmd.Wait() }()
			var err error
			select {
			case err = <-done:
			case <-time.After(20 * time.Second):
				t.Fatal("coredns did not exit")
			}
			data, _ := os.ReadFile(c.log.Name())
			if !strings.Contains(string(data), tc.logged) {
				t.Errorf("The log does not say %q:\n%s", tc.logged, data)
			}
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Errorf("Exit %v, want exit status 1", err)
			}
			if got := ourRules(t); got != "" {
				t.Errorf("Rules left after the failed start:\n%s", got)
			}
			if _, err := nstest.Run(t, "ip", "link", "show", "nodelocaldns"); err == nil {
				t.Errorf("Link nodelocaldns left after the failed start, holding %q", linkAddrs(t))
			}
		})
	}
}
