// Package nstest runs privileged tests inside throwaway network namespaces,
// so they never touch the host's own links, addresses or rules.
package nstest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// RequireRoot skips the test unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("Skipping: needs root (creates network namespaces, links and iptables rules); run `go test` as root")
	}
}

// Enter locks the test's goroutine to its OS thread and moves that thread
// into a new named network namespace (visible to `ip netns exec NAME`) with
// loopback up. Processes started from the test goroutine inherit it; this is
// checked before Enter returns. The namespace is deleted when the test ends,
// and the thread, never unlocked, dies with the test's goroutine.
func Enter(t testing.TB) string {
	t.Helper()
	RequireRoot(t)
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatalf("Get current netns: %v", err)
	}
	b := make([]byte, 4)
	rand.Read(b)
	name := "nltest-" + hex.EncodeToString(b)
	ns, err := netns.NewNamed(name)
	if err != nil {
		orig.Close()
		t.Fatalf("Create netns %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := netns.Set(orig); err != nil {
			t.Errorf("Switch back to the original netns: %v", err)
		}
		orig.Close()
		ns.Close()
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("Delete netns %s: %v", name, err)
		}
	})
	lo, err := netlink.LinkByName("lo")
	if err == nil {
		err = netlink.LinkSetUp(lo)
	}
	if err != nil {
		t.Fatalf("Set lo up in %s: %v", name, err)
	}
	// A child forked from this locked thread must be in the namespace.
	var st syscall.Stat_t
	if err := syscall.Stat(fmt.Sprintf("/proc/self/task/%d/ns/net", syscall.Gettid()), &st); err != nil {
		t.Fatalf("Stat own netns: %v", err)
	}
	out, err := Run(t, "stat", "-L", "-c", "%i", "/proc/self/ns/net")
	if err != nil || strings.TrimSpace(out) != fmt.Sprint(st.Ino) {
		t.Fatalf("Child process is not in the test namespace (child %q, want %d): %v", out, st.Ino, err)
	}
	return name
}

// Run runs a command from the calling goroutine (in its namespace when
// called after Enter), bounded in time, and returns its stdout.
func Run(t testing.TB, name string, args ...string) (string, error) {
	t.Helper()
	return RunInput(t, "", name, args...)
}

// RunInput is Run with stdin.
func RunInput(t testing.TB, stdin, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}

// hostState is what the tests must never change in the host namespace.
func hostState() string {
	var b strings.Builder
	for _, c := range [][]string{
		{"ip", "-o", "link"}, {"ip", "-o", "addr"},
		{"iptables-legacy-save"}, {"ip6tables-legacy-save"},
		{"iptables-nft-save"}, {"ip6tables-nft-save"},
		{"nft", "list", "tables"},
	} {
		out, err := exec.Command(c[0], c[1:]...).Output()
		fmt.Fprintf(&b, "== %s (err %v)\n", strings.Join(c, " "), err)
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, "#") {
				continue
			}
			// Counters change with traffic; the rules must not.
			if strings.HasPrefix(l, ":") {
				if i := strings.LastIndex(l, " ["); i > 0 {
					l = l[:i]
				}
			}
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// Main runs the package's tests and fails the run if the host namespace's
// links, addresses or iptables rules differ afterwards.
func Main(m *testing.M) {
	if os.Geteuid() != 0 {
		os.Exit(m.Run())
	}
	before := hostState()
	code := m.Run()
	if after := hostState(); after != before {
		fmt.Fprintf(os.Stderr, "FAIL: the tests changed the host network namespace\nbefore:\n%s\nafter:\n%s\n", before, after)
		code = 1
	}
	os.Exit(code)
}
