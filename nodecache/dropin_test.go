package nodecache

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nodelocaldns/nodelocaldns/internal/nsenter"
	"github.com/nodelocaldns/nodelocaldns/internal/nstest"
)

func TestMain(m *testing.M) {
	code := nstest.Guard(m)
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

var (
	binOnce sync.Once
	binDir  string
	binPath string
	binErr  error
)

// binary builds cmd/coredns once per test run.
func binary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	binOnce.Do(func() {
		if binDir, binErr = os.MkdirTemp("", "nodecache-bin"); binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "coredns")
		if out, err := exec.Command("go", "build", "-o", binPath, "../cmd/coredns").CombinedOutput(); err != nil {
			binErr = &buildError{err, string(out)}
		}
	})
	if binErr != nil {
		t.Fatalf("Build: %v", binErr)
	}
	return binPath
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return e.err.Error() + "\n" + e.out }

// process is the binary running in the test's namespace.
type process struct {
	cmd  *exec.Cmd
	logs *syncBuffer
	done chan struct{} // closed when the process has exited
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// start runs the binary with args from the calling goroutine, which must
// be in the test's namespace (nstest.Enter). It is killed when the test ends
// and its output logged if the test failed.
func start(t *testing.T, bin string, env []string, args ...string) *process {
	t.Helper()
	p := &process{cmd: exec.Command(bin, args...), logs: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("CoreDNS output:\n%s", p.logs.String())
		}
	})
	return p
}

// exited waits up to d for the process to exit and reports whether it did.
func (p *process) exited(d time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(d):
		return false
	}
}

// fakeUpstream answers every A query with ip, on 127.0.0.1 UDP.
func fakeUpstream(t *testing.T, ip string) string {
	t.Helper()
	return nstest.ServeA(t, "udp", "127.0.0.1:0", ip)
}

// clusterDNS serves the upstream Service IP 198.18.0.11 over TCP (force_tcp
// in the template), answering every A query with ip.
func clusterDNS(t *testing.T, ip string) {
	t.Helper()
	if out, err := nstest.Run(t, "ip", "addr", "add", "198.18.0.11/32", "dev", "lo"); err != nil {
		t.Fatalf("Add the upstream Service IP: %v %s", err, out)
	}
	nstest.ServeA(t, "tcp", "198.18.0.11:53", ip)
}

// linkLeft returns `ip addr show nodelocaldns` when the link exists, "" when not.
func linkLeft(t *testing.T) string {
	out, _ := nstest.Run(t, "ip", "addr", "show", "nodelocaldns")
	if strings.Contains(out, "nodelocaldns") {
		return out
	}
	return ""
}

// The built binary with the official DaemonSet's args, in a throwaway
// network namespace: it renders the template, sets the node up, answers on
// the local IPs from the cluster DNS and the ConfigMap's upstream, and
// tears down on SIGTERM.
func TestDropInDaemonSetArgs(t *testing.T) {
	bin := binary(t)
	nstest.Enter(t)
	dir := t.TempDir()
	clusterDNS(t, "198.18.2.1")
	up := fakeUpstream(t, "198.18.2.2")
	stub := fakeUpstream(t, "198.18.2.3")

	tmpl := filepath.Join(dir, "Corefile.base")
	body := iptablesTemplate(t)
	if !strings.Contains(body, "health 169.254.20.10:8080") {
		t.Fatalf("The official template has no health line on the local IP:\n%s", body)
	}
	writeFile(t, tmpl, body)
	cm := filepath.Join(dir, "kube-dns")
	writeConfigMap(t, cm, map[string]string{
		keyUpstreams:   `["` + up + `"]`,
		keyStubDomains: `{"acme.test": ["` + stub + `"]}`,
	})

	p := start(t, bin, []string{"KUBE_DNS_UPSTREAM_SERVICE_HOST=198.18.0.11"},
		"-localip", "169.254.20.10,198.18.0.10", "-conf", filepath.Join(dir, "Corefile"),
		"-upstreamsvc", "kube-dns-upstream", "-basecorefile", tmpl, "-kubednscm", cm)

	nstest.Eventually(t, "cluster.local answered on 169.254.20.10", 20*time.Second, func() bool {
		return nstest.LookupA("udp", "169.254.20.10:53", "kubernetes.default.svc.cluster.local.") == "198.18.2.1"
	})
	if got := nstest.LookupA("udp", "198.18.0.10:53", "www.example.test."); got != "198.18.2.2" {
		t.Errorf("www.example.test on 198.18.0.10: %q, want 198.18.2.2 from upstreamNameservers", got)
	}
	if got := nstest.LookupA("udp", "169.254.20.10:53", "db.acme.test."); got != "198.18.2.3" {
		t.Errorf("db.acme.test on 169.254.20.10: %q, want 198.18.2.3 from the stub domain's server", got)
	}

	// The manifest's liveness probe and the setup-errors metric node-cache
	// serves on -metrics-listen-address (default 0.0.0.0:9353).
	if code, _, err := nsenter.HTTPGet("169.254.20.10:8080", "/health"); code != http.StatusOK {
		t.Errorf("Liveness probe GET 169.254.20.10:8080/health: status %d (%v), want 200", code, err)
	}
	if _, body, err := nsenter.HTTPGet("127.0.0.1:9353", "/metrics"); !strings.Contains(body, "coredns_nodecache_setup_errors_total") {
		t.Errorf("Metrics on :9353 (%v) lack coredns_nodecache_setup_errors_total:\n%.2000s", err, body)
	}
	rendered, err := os.ReadFile(filepath.Join(dir, "Corefile"))
	if err != nil || strings.Contains(string(rendered), "__PILLAR__") || !strings.Contains(string(rendered), "forward . 198.18.0.11") {
		t.Errorf("Rendered -conf Corefile (%v):\n%s", err, rendered)
	}

	p.cmd.Process.Signal(syscall.SIGTERM)
	if !p.exited(20 * time.Second) {
		t.Fatal("CoreDNS did not exit within 20s of SIGTERM")
	}
	if out := linkLeft(t); out != "" {
		t.Errorf("Interface left after SIGTERM:\n%s", out)
	}
}

// B4 (issue 18): a stub domain whose server is one of the local IPs would
// loop; the loop plugin only found it once the listeners were up and the
// node set up, and its FATAL left the link and address behind. It is now
// refused while rendering, before anything on the node changes, naming the
// key and the value.
func TestDropInStubDomainOnLocalIP(t *testing.T) {
	bin := binary(t)
	nstest.Enter(t)
	dir := t.TempDir()
	clusterDNS(t, "198.18.2.1")
	tmpl := filepath.Join(dir, "Corefile.base")
	writeFile(t, tmpl, iptablesTemplate(t))
	cm := filepath.Join(dir, "kube-dns")
	writeConfigMap(t, cm, map[string]string{keyStubDomains: `{"acme.test": ["169.254.20.10"]}`})

	p := start(t, bin, []string{"KUBE_DNS_UPSTREAM_SERVICE_HOST=198.18.0.11"},
		"-localip", "169.254.20.10,198.18.0.10", "-conf", filepath.Join(dir, "Corefile"),
		"-upstreamsvc", "kube-dns-upstream", "-basecorefile", tmpl, "-kubednscm", cm, "-metrics-listen-address", "")
	if !p.exited(20 * time.Second) {
		t.Fatal("CoreDNS still runs 20s after start with a stub domain on its own local IP; want it to refuse to start")
	}
	if p.cmd.ProcessState.Success() {
		t.Errorf("CoreDNS exited 0; want a failure")
	}
	logs := p.logs.String()
	for _, want := range []string{`stubDomains["acme.test"]`, `"169.254.20.10"`, "local IP"} {
		if !strings.Contains(logs, want) {
			t.Errorf("The error does not name %s:\n%s", want, logs)
		}
	}
	if out := linkLeft(t); out != "" {
		t.Errorf("A refused start left the interface behind:\n%s", out)
	}
}

// A template whose root block has no bind (issue 18): the stub domain block
// bound the local IPs alone, so it took every query to them and refused the
// names outside the stub domains. Now both serve on the local IP, and the
// start logs a warning naming the block.
func TestDropInTemplateWithoutBind(t *testing.T) {
	bin := binary(t)
	nstest.Enter(t)
	dir := t.TempDir()
	up := fakeUpstream(t, "198.18.2.2")
	stub := fakeUpstream(t, "198.18.2.3")
	tmpl := filepath.Join(dir, "Corefile.base")
	writeFile(t, tmpl, ".:53 {\n    errors\n    cache 30\n    reload\n    loop\n    forward . __PILLAR__UPSTREAM__SERVERS__\n}\n")
	cm := filepath.Join(dir, "kube-dns")
	writeConfigMap(t, cm, map[string]string{
		keyUpstreams:   `["` + up + `"]`,
		keyStubDomains: `{"acme.test": ["` + stub + `"]}`,
	})
	p := start(t, bin, []string{"KUBE_DNS_UPSTREAM_SERVICE_HOST=198.18.0.11"},
		"-localip", "169.254.20.10", "-conf", filepath.Join(dir, "Corefile"), "-upstreamsvc", "kube-dns-upstream",
		"-basecorefile", tmpl, "-kubednscm", cm, "-metrics-listen-address", "")

	nstest.Eventually(t, "stub domain answered on 169.254.20.10", 20*time.Second, func() bool {
		return nstest.LookupA("udp", "169.254.20.10:53", "db.acme.test.") == "198.18.2.3"
	})
	if got := nstest.LookupA("udp", "169.254.20.10:53", "www.example.test."); got != "198.18.2.2" {
		t.Errorf("www.example.test on 169.254.20.10: %q, want 198.18.2.2 from the root block", got)
	}
	if logs := p.logs.String(); !strings.Contains(logs, "has no bind") || !strings.Contains(logs, tmpl+":1") {
		t.Errorf("No warning naming %s:1 and the missing bind:\n%s", tmpl, logs)
	}
}
