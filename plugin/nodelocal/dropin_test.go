package nodelocal

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

	"github.com/nodelocaldns/nodelocaldns/internal/nstest"
)

// The built binary with the official DaemonSet's args, in a throwaway
// network namespace: it renders the template, sets the node up, answers on
// the local IPs from the cluster DNS and the ConfigMap's upstream, and
// tears down on SIGTERM.
func TestDropInDaemonSetArgs(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	nstest.RequireRoot(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "coredns")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/coredns").CombinedOutput(); err != nil {
		t.Fatalf("Build: %v\n%s", err, out)
	}
	nstest.Enter(t)
	if out, err := nstest.Run(t, "ip", "addr", "add", "198.18.0.11/32", "dev", "lo"); err != nil {
		t.Fatalf("Add the upstream Service IP: %v %s", err, out)
	}
	answer := func(ip string) dns.Handler {
		return dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
			m := new(dns.Msg)
			m.SetReply(r)
			if q := r.Question[0]; q.Qtype == dns.TypeA {
				rr, _ := dns.NewRR(q.Name + " 5 IN A " + ip)
				m.Answer = append(m.Answer, rr)
			}
			w.WriteMsg(m)
		})
	}
	ln, err := net.Listen("tcp", "198.18.0.11:53") // force_tcp in the template
	if err != nil {
		t.Fatal(err)
	}
	cluster := &dns.Server{Listener: ln, Handler: answer("198.18.2.1")}
	go cluster.ActivateAndServe()
	defer cluster.Shutdown()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	up := &dns.Server{PacketConn: pc, Handler: answer("198.18.2.2")}
	go up.ActivateAndServe()
	defer up.Shutdown()

	stubConn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stub := &dns.Server{PacketConn: stubConn, Handler: answer("198.18.2.3")}
	go stub.ActivateAndServe()
	defer stub.Shutdown()

	tmpl := filepath.Join(dir, "Corefile.base")
	body := iptablesTemplate(t)
	if !strings.Contains(body, "health 169.254.20.10:8080") {
		t.Fatalf("The official template has no health line on the local IP:\n%s", body)
	}
	writeFile(t, tmpl, body)
	cm := filepath.Join(dir, "kube-dns")
	writeConfigMap(t, cm, map[string]string{
		keyUpstreams:   `["` + pc.LocalAddr().String() + `"]`,
		keyStubDomains: `{"acme.test": ["` + stubConn.LocalAddr().String() + `"]}`,
	})

	cmd := exec.Command(bin, "-localip", "169.254.20.10,198.18.0.10", "-conf", filepath.Join(dir, "Corefile"),
		"-upstreamsvc", "kube-dns-upstream", "-basecorefile", tmpl, "-kubednscm", cm)
	cmd.Env = append(os.Environ(), "KUBE_DNS_UPSTREAM_SERVICE_HOST=198.18.0.11")
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{}) // closed when the process has exited
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

	eventually(t, "cluster.local answered on 169.254.20.10", 20*time.Second, func() bool {
		return lookupA("169.254.20.10:53", "kubernetes.default.svc.cluster.local.") == "198.18.2.1"
	})
	if got := lookupA("198.18.0.10:53", "www.example.test."); got != "198.18.2.2" {
		t.Errorf("www.example.test on 198.18.0.10: %q, want 198.18.2.2 from upstreamNameservers", got)
	}
	if got := lookupA("169.254.20.10:53", "db.acme.test."); got != "198.18.2.3" {
		t.Errorf("db.acme.test on 169.254.20.10: %q, want 198.18.2.3 from the stub domain's server", got)
	}

	// The manifest's liveness probe and the setup-errors metric node-cache
	// serves on -metrics-listen-address (default 0.0.0.0:9353).
	if code, _, err := nstest.HTTPGet("169.254.20.10:8080", "/health"); code != http.StatusOK {
		t.Errorf("Liveness probe GET 169.254.20.10:8080/health: status %d (%v), want 200", code, err)
	}
	if _, body, err := nstest.HTTPGet("127.0.0.1:9353", "/metrics"); !strings.Contains(body, "coredns_nodecache_setup_errors_total") {
		t.Errorf("Metrics on :9353 (%v) lack coredns_nodecache_setup_errors_total:\n%.2000s", err, body)
	}
	rendered, err := os.ReadFile(filepath.Join(dir, "Corefile"))
	if err != nil || strings.Contains(string(rendered), "__PILLAR__") || !strings.Contains(string(rendered), "forward . 198.18.0.11") {
		t.Errorf("Rendered -conf Corefile (%v):\n%s", err, rendered)
	}

	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("CoreDNS did not exit within 20s of SIGTERM")
	}
	if out, _ := nstest.Run(t, "ip", "link", "show", "nodelocaldns"); strings.Contains(out, "nodelocaldns") {
		t.Errorf("Interface left after SIGTERM:\n%s", out)
	}
}
