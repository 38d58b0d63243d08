package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/nodelocaldns/nodelocaldns/internal/nsenter"
	"github.com/nodelocaldns/nodelocaldns/internal/nstest"
)

// The binary under test, built once by TestMain.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "nodelocaldns-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "coredns")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build:", err)
		os.Exit(1)
	}
	code := nstest.Guard(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

func TestVersionAndPlugins(t *testing.T) {
	out, err := exec.Command(binary, "-version").Output()
	if err != nil || !strings.Contains(string(out), "CoreDNS-1.15.0") {
		t.Errorf("-version printed %q (%v), want CoreDNS-1.15.0", out, err)
	}
	out, err = exec.Command(binary, "-plugins").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"nodelocal", "cache", "forward", "ready", "health", "reload", "bind"} {
		if !regexp.MustCompile(`(?m)^\s*` + p + `$`).Match(out) {
			t.Errorf("-plugins does not list %s:\n%s", p, out)
		}
	}
	for _, p := range []string{"kubernetes", "route53", "etcd"} {
		if regexp.MustCompile(`(?m)^\s*` + p + `$`).Match(out) {
			t.Errorf("-plugins lists %s, which the build leaves out", p)
		}
	}
}

// cache is one running bin/coredns in the test's namespace.
type cache struct {
	t     *testing.T
	cmd   *exec.Cmd
	log   *os.File
	start time.Time
}

func startCache(t *testing.T, corefile string) *cache {
	t.Helper()
	dir := t.TempDir()
	conf := filepath.Join(dir, "Corefile")
	if err := os.WriteFile(conf, []byte(corefile), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.CreateTemp(dir, "log")
	if err != nil {
		t.Fatal(err)
	}
	c := &cache{t: t, log: logf}
	c.cmd = exec.Command(binary, "-conf", conf)
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	c.start = time.Now()
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if c.cmd.ProcessState == nil {
			c.cmd.Process.Kill()
			c.cmd.Wait()
		}
		if t.Failed() {
			data, _ := os.ReadFile(logf.Name())
			t.Logf("coredns log:\n%s", data)
		}
	})
	return c
}

// signal sends sig and waits for the process to end (bounded).
func (c *cache) stop(sig syscall.Signal) {
	c.t.Helper()
	c.cmd.Process.Signal(sig)
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		c.cmd.Process.Kill()
		<-done
		c.t.Fatalf("coredns did not stop within 15s of %v", sig)
	}
}

// query asks addr once over net ("udp" or "tcp"); the socket is made in the
// test's namespace.
func query(network, addr, name string) (*dns.Msg, error) {
	c := &dns.Client{Net: network, Timeout: 500 * time.Millisecond}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	r, _, err := c.Exchange(m, net.JoinHostPort(addr, "53"))
	return r, err
}

// firstAnswer polls addr until it answers and returns how long after the
// process start that was.
func (c *cache) firstAnswer(addr string, limit time.Duration) time.Duration {
	c.t.Helper()
	deadline := c.start.Add(limit)
	for {
		if _, err := query("udp", addr, "whoami.example."); err == nil {
			return time.Since(c.start)
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("No answer on %s within %s of start", addr, limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ourRules returns the plugin's lines in iptables-save output (counters
// stripped), for both backends and both families.
func ourRules(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, cmd := range []string{"iptables-nft-save", "ip6tables-nft-save", "iptables-legacy-save", "ip6tables-legacy-save"} {
		out, err := nstest.Run(t, cmd)
		if err != nil {
			t.Fatalf("%s: %v", cmd, err)
		}
		for _, l := range strings.Split(out, "\n") {
			if strings.Contains(strings.ToLower(l), "nodelocaldns") {
				if i := strings.LastIndex(l, " ["); strings.HasPrefix(l, ":") && i > 0 {
					l = l[:i]
				}
				fmt.Fprintf(&b, "%s: %s\n", cmd, l)
			}
		}
	}
	return b.String()
}

func linkAddrs(t *testing.T) string {
	t.Helper()
	out, _ := nstest.Run(t, "ip", "-o", "addr", "show", "dev", "nodelocaldns", "scope", "global")
	var addrs []string
	for _, f := range regexp.MustCompile(`inet6? (\S+)`).FindAllStringSubmatch(out, -1) {
		addrs = append(addrs, f[1])
	}
	return strings.Join(addrs, " ")
}

const nodeCorefile = `.:53 {
	bind 169.254.20.10 198.18.0.10 2001:2::10
	nodelocal {
		localip 169.254.20.10 198.18.0.10 2001:2::10
		rules iptables %s
		sync 1s
		teardown %s
		statedir %s
	}
	ready 127.0.0.1:8181 {
		monitor continuously
	}
	whoami
}
`

// udpRcvBuf reads the receive buffer size of the UDP socket bound to addr
// from `ss -uanm` ("skmem:(r0,rb8388608,..."); 0 when there is none.
func udpRcvBuf(t *testing.T, addr string) int {
	t.Helper()
	out, err := nstest.Run(t, "ss", "-uanm")
	if err != nil {
		t.Fatalf("ss: %v", err)
	}
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		f := strings.Fields(l)
		if len(f) < 4 || f[3] != addr || i+1 == len(lines) {
			continue
		}
		if m := regexp.MustCompile(`skmem:\(r\d+,rb(\d+),`).FindStringSubmatch(lines[i+1]); m != nil {
			n, _ := strconv.Atoi(m[1])
			return n
		}
	}
	return 0
}

// waitReady waits for the ready plugin to say 200: nodelocal has the rules in.
func (c *cache) waitReady(limit time.Duration) time.Duration {
	c.t.Helper()
	deadline := c.start.Add(limit)
	for {
		if code, _, err := nsenter.HTTPGet("127.0.0.1:8181", "/ready"); err == nil && code == http.StatusOK {
			return time.Since(c.start)
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("Not ready within %s of start", limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestNodeLifecycle runs the real binary in a throwaway namespace through
// start, reload, tampering, a SIGKILL and the final shutdown, for both
// iptables backends.
func TestNodeLifecycle(t *testing.T) {
	for _, backend := range []string{"nft", "legacy"} {
		t.Run(backend, func(t *testing.T) {
			nstest.Enter(t)
			corefile := fmt.Sprintf(nodeCorefile, backend, "on", t.TempDir())
			c := startCache(t, corefile)
			for _, addr := range []string{"169.254.20.10", "198.18.0.10", "2001:2::10"} {
				d := c.firstAnswer(addr, 5*time.Second)
				t.Logf("first answer on %s %s after process start", addr, d.Round(time.Millisecond))
				if d > time.Second {
					t.Errorf("First answer on %s took %s, want within 1s of start", addr, d)
				}
				for _, network := range []string{"udp", "tcp"} {
					if r, err := query(network, addr, "example.org"); err != nil || r.Rcode != dns.RcodeSuccess {
						t.Errorf("Query over %s to %s: %v", network, addr, err)
					}
				}
			}
			d := c.waitReady(5 * time.Second)
			t.Logf("ready (rules in place) %s after process start", d.Round(time.Millisecond))
			if d > time.Second {
				t.Errorf("Ready %s after start, want within 1s", d)
			}
			rules := ourRules(t)
			if rules == "" {
				t.Fatal("No nodelocaldns rules after start")
			}
			for _, want := range []string{"-d 169.254.20.10/32 -p udp -m udp --dport 53", "-d 2001:2::10/128 -p tcp -m tcp --dport 8080"} {
				if n := strings.Count(rules, want+" "); n == 0 {
					t.Errorf("Rule with %q missing:\n%s", want, rules)
				}
			}
			if got := linkAddrs(t); got != "169.254.20.10/32 198.18.0.10/32 2001:2::10/128" {
				t.Errorf("nodelocaldns holds %q", got)
			}
			// Bursts of queries wait in a 4 MiB receive buffer (the kernel reports twice that).
			for _, addr := range []string{"169.254.20.10:53", "198.18.0.10:53", "[2001:2::10]:53"} {
				if rb := udpRcvBuf(t, addr); rb < 8<<20 {
					t.Errorf("UDP listener %s has a %d byte receive buffer, want the rcvbuf default of 4 MiB", addr, rb/2)
				}
			}

			// Reload: nothing removed, nothing doubled.
			c.cmd.Process.Signal(syscall.SIGUSR1)
			time.Sleep(1500 * time.Millisecond)
			if got := ourRules(t); got != rules {
				t.Errorf("Rules changed on reload:\nbefore\n%s\nafter\n%s", rules, got)
			}
			if _, err := query("udp", "169.254.20.10", "example.org"); err != nil {
				t.Errorf("No answer after reload: %v", err)
			}
			if rb := udpRcvBuf(t, "169.254.20.10:53"); rb < 8<<20 {
				t.Errorf("After reload the UDP listener has a %d byte receive buffer, want 4 MiB", rb/2)
			}

			// Tampering as other programs on the node do is repaired within one period.
			tamper := []struct {
				what string
				cmd  []string
				in   string
			}{
				{"an address removed", []string{"ip", "addr", "del", "198.18.0.10/32", "dev", "nodelocaldns"}, ""},
				{"the link set down", []string{"ip", "link", "set", "nodelocaldns", "down"}, ""},
				{"the link deleted", []string{"ip", "link", "del", "nodelocaldns"}, ""},
				{"the filter table restored without our rules", []string{"iptables-" + backend + "-restore"}, "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"},
				{"the raw table flushed", []string{"iptables-" + backend, "-t", "raw", "-F"}, ""},
			}
			for _, tc := range tamper {
				if _, err := nstest.RunInput(t, tc.in, tc.cmd[0], tc.cmd[1:]...); err != nil {
					t.Fatalf("Tamper (%s): %v", tc.what, err)
				}
				d := nstest.Eventually(t, "repair of "+tc.what, 3*time.Second, func() bool {
					return ourRules(t) == rules && linkAddrs(t) == "169.254.20.10/32 198.18.0.10/32 2001:2::10/128"
				})
				t.Logf("%s: repaired after %s", tc.what, d.Round(time.Millisecond))
				nstest.Eventually(t, "an answer after repair of "+tc.what, 2*time.Second, func() bool {
					_, err := query("udp", "198.18.0.10", "example.org")
					return err == nil
				})
			}

			// A killed process leaves everything; the next start adopts it, without duplicates.
			c.stop(syscall.SIGKILL)
			if got := ourRules(t); got != rules {
				t.Errorf("Rules after SIGKILL differ")
			}
			c2 := startCache(t, corefile)
			d = c2.firstAnswer("169.254.20.10", 5*time.Second)
			t.Logf("first answer after a SIGKILL restart: %s", d.Round(time.Millisecond))
			if d > time.Second {
				t.Errorf("First answer after a restart over leftovers took %s", d)
			}
			c2.waitReady(5 * time.Second)
			if got := ourRules(t); got != rules {
				t.Errorf("Rules after adopting leftovers:\n%s\nwant\n%s", got, rules)
			}

			// SIGTERM removes every trace.
			c2.stop(syscall.SIGTERM)
			if got := ourRules(t); got != "" {
				t.Errorf("Rules left after SIGTERM:\n%s", got)
			}
			if _, err := nstest.Run(t, "ip", "link", "show", "nodelocaldns"); err == nil {
				t.Error("Link nodelocaldns left after SIGTERM")
			}
		})
	}
}

// TestTeardownSignals: SIGINT and SIGQUIT clean up too; teardown off leaves the node set up.
func TestTeardownSignals(t *testing.T) {
	for _, tc := range []struct {
		sig      syscall.Signal
		teardown string
		left     bool
	}{
		{syscall.SIGINT, "on", false},
		{syscall.SIGQUIT, "on", false},
		{syscall.SIGTERM, "off", true},
	} {
		t.Run(fmt.Sprintf("%v teardown %s", tc.sig, tc.teardown), func(t *testing.T) {
			nstest.Enter(t)
			c := startCache(t, fmt.Sprintf(nodeCorefile, "nft", tc.teardown, t.TempDir()))
			c.waitReady(5 * time.Second)
			c.stop(tc.sig)
			rules, addrs := ourRules(t), linkAddrs(t)
			if tc.left && (rules == "" || addrs == "") {
				t.Errorf("teardown off: rules %q and addresses %q should be left", rules, addrs)
			}
			if !tc.left && (rules != "" || addrs != "") {
				t.Errorf("After %v: left rules %q and addresses %q", tc.sig, rules, addrs)
			}
		})
	}
}

// TestStartFailsCleanly: a start that cannot finish leaves nothing behind and says why.
func TestStartFailsCleanly(t *testing.T) {
	nstest.Enter(t)
	// A link of another type under our name: the plugin refuses to adopt it.
	if _, err := nstest.Run(t, "ip", "link", "add", "nodelocaldns", "type", "veth", "peer", "name", "nlpeer0"); err != nil {
		t.Fatal(err)
	}
	c := startCache(t, fmt.Sprintf(nodeCorefile, "nft", "on", t.TempDir()))
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("coredns started with a foreign link in the way")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("coredns neither started nor failed")
	}
	data, _ := os.ReadFile(c.log.Name())
	if !strings.Contains(string(data), "nodelocaldns") || !strings.Contains(string(data), "veth") {
		t.Errorf("Start-up error does not name the link and its type:\n%s", data)
	}
	if got := ourRules(t); got != "" {
		t.Errorf("A failed start left rules:\n%s", got)
	}
}
