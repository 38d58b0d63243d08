package deploy

import (
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/nodelocaldns/nodelocaldns/internal/nsenter"
	"github.com/nodelocaldns/nodelocaldns/internal/nstest"
)

// TestMain fails the run if a test changed the host's network namespace.
func TestMain(m *testing.M) { nstest.Main(m) }

// In Cilium mode the cache pod sits on the pod network and Cilium redirects
// to it. What can be checked without Cilium: bin/coredns (make build), given
// the overlay's Corefile and the pod's environment, in a throwaway namespace
// that stands in for the pod's (eth0 with the pod IP), answers on the pod IP
// over UDP and TCP, turns ready, creates no link, address or rule, and on
// SIGTERM turns not ready while it still answers (health's lameduck), which
// is what lets Cilium drop it as a redirect backend before it goes.
func TestCiliumPodAnswersWithoutLinkOrRules(t *testing.T) {
	if testing.Short() {
		t.Skip("runs bin/coredns in a network namespace")
	}
	nstest.RequireRoot(t)
	bin, err := filepath.Abs("../bin/coredns")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("No %s: run `make build` first (%v)", bin, err)
	}
	const podIP, upstreamIP = "198.18.7.2", "198.18.7.9"
	r := render(t, "overlays/cilium")
	env, err := r.PodEnv(map[string]string{"KUBE_DNS_UPSTREAM_SERVICE_HOST": upstreamIP, "POD_IP": podIP})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// The `.` block forwards to the pod's resolv.conf (dnsPolicy Default: the
	// node's); here one naming the test upstream, never the host's resolvers.
	resolv := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(resolv, []byte("nameserver "+upstreamIP+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	corefile := r.configMapNamed(t, "node-local-dns").Data["Corefile"]
	if !strings.Contains(corefile, "forward . /etc/resolv.conf") {
		t.Fatalf("Cilium Corefile has no `forward . /etc/resolv.conf`:\n%s", corefile)
	}
	conf := filepath.Join(dir, "Corefile")
	if err := os.WriteFile(conf, []byte(strings.ReplaceAll(corefile, "/etc/resolv.conf", resolv)), 0o644); err != nil {
		t.Fatal(err)
	}

	nstest.Enter(t)
	for _, c := range [][]string{
		{"ip", "link", "add", "eth0", "type", "veth", "peer", "name", "peer0"},
		// No kernel-made link-local addresses appearing during the test.
		{"ip", "link", "set", "eth0", "addrgenmode", "none"},
		{"ip", "link", "set", "peer0", "addrgenmode", "none"},
		{"ip", "addr", "add", podIP + "/24", "dev", "eth0"},
		{"ip", "link", "set", "eth0", "up"},
		{"ip", "link", "set", "peer0", "up"},
		{"ip", "addr", "add", upstreamIP + "/32", "dev", "lo"},
	} {
		if out, err := nstest.Run(t, c[0], c[1:]...); err != nil {
			t.Fatalf("Set up the pod's namespace: %v %s", err, out)
		}
	}
	answer := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		if q.Question[0].Qtype == dns.TypeA {
			rr, _ := dns.NewRR(q.Question[0].Name + " 30 IN A 198.18.2.1")
			m.Answer = append(m.Answer, rr)
		}
		w.WriteMsg(m)
	})
	ln, err := net.Listen("tcp", upstreamIP+":53")
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", upstreamIP+":53")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []*dns.Server{{Listener: ln, Handler: answer}, {PacketConn: pc, Handler: answer}} {
		go s.ActivateAndServe()
		defer s.Shutdown()
	}

	before := nodeState(t)
	cmd := exec.Command(bin, "-conf", conf)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	defer func() {
		select {
		case <-done:
		default:
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("CoreDNS output:\n%s", logs.String())
		}
	}()

	ready := func() int {
		code, _, _ := nsenter.HTTPGet(podIP+":"+env["READY_PORT"], "/ready")
		return code
	}
	nstest.Eventually(t, "ready on the pod IP", 20*time.Second, func() bool { return ready() == http.StatusOK })
	for _, proto := range []string{"udp", "tcp"} {
		for _, name := range []string{"kubernetes.default.svc.cluster.local.", "www.example.test."} {
			if got := nstest.LookupA(proto, podIP+":53", name); got != "198.18.2.1" {
				t.Errorf("%s over %s on the pod IP: %q, want 198.18.2.1 from the upstream", name, proto, got)
			}
		}
	}
	if after := nodeState(t); after != before {
		t.Errorf("The cache changed links, addresses or rules in Cilium mode:\nbefore:\n%s\nafter:\n%s", before, after)
	}

	cmd.Process.Signal(syscall.SIGTERM)
	nstest.Eventually(t, "not ready after SIGTERM", 8*time.Second, func() bool { return ready() != http.StatusOK })
	if got := nstest.LookupA("udp", podIP+":53", "after-sigterm.example.test."); got != "198.18.2.1" {
		t.Errorf("Not ready, but no longer answering: %q (the lameduck must keep it serving while Cilium drops it)", got)
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("CoreDNS did not exit within 30s of SIGTERM")
	}
	if after := nodeState(t); after != before {
		t.Errorf("Links, addresses or rules changed by the shutdown:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// nodeState is what a Cilium-mode cache must leave alone: links, addresses,
// iptables (both backends) and nftables.
func nodeState(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, c := range [][]string{
		{"ip", "-o", "link"}, {"ip", "-o", "addr"},
		{"iptables-legacy-save"}, {"iptables-nft-save"}, {"ip6tables-nft-save"},
		{"nft", "list", "ruleset"},
	} {
		out, err := nstest.Run(t, c[0], c[1:]...)
		b.WriteString("== " + strings.Join(c, " ") + "\n")
		if err != nil {
			b.WriteString(err.Error() + "\n")
		}
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, "#") {
				continue
			}
			if strings.Join(c, " ") == "ip -o link" {
				// Links by index and name: carrier and state flags follow the veth.
				if f := strings.Fields(l); len(f) >= 2 {
					l = f[0] + " " + f[1]
				}
			}
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}
