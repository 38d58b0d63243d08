package lab_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/nodelocaldns/nodelocaldns/internal/lab"
	"github.com/nodelocaldns/nodelocaldns/internal/lab/labtest"
	"github.com/nodelocaldns/nodelocaldns/internal/nstest"
)

// stubDomains is the kube-dns ConfigMap entry for the lab's stub domain,
// served by dns1's second address.
var stubDomains = map[string]string{"stubDomains": `{"` + lab.StubDomain + `": ["` + lab.StubIP + `"]}`}

// TestNodeCacheFlags runs the cache the way the official nodelocaldns.yaml
// runs node-cache, with only the image changed: its Corefile template and
// container args after the documented sed, the kube-dns ConfigMap mounted
// as kubelet mounts it. Pods get their answers through the cache, stub
// domains included, and SIGTERM leaves nothing behind.
func TestNodeCacheFlags(t *testing.T) {
	l := labtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	t.Run("IptablesMode", func(t *testing.T) {
		c, err := l.StartNodeCacheFlags(ctx, lab.FlagsOptions{Mode: lab.IptablesMode, KubeDNS: stubDomains})
		if err != nil {
			t.Fatalf("Start with the DaemonSet's args: %v", err)
		}
		if err := l.FlushConntrack(ctx); err != nil {
			t.Fatal(err)
		}
		runChecks(t, l.Pod1, lab.KubeDNSIP, clusterChecks)
		runChecks(t, l.Pod2, lab.LocalIP, clusterChecks)
		t.Run("StubDomainThroughCache", func(t *testing.T) {
			// The template's `.` block forwards to the node's resolv.conf,
			// whose server says NXDOMAIN for stub.test: only the server block
			// rendered from stubDomains answers it.
			runChecks(t, l.Pod2, lab.LocalIP, []check{stubCheck})
			runChecks(t, l.Pod1, lab.KubeDNSIP, []check{stubCheck})
			// glibc, through the pod's search path first (ndots:5).
			if out, err := lab.PodRun(ctx, l.Pod2, "getent", "ahostsv4", lab.StubName); err != nil || !strings.Contains(out, lab.StubAddr) {
				t.Errorf("Getent ahostsv4 %s in %s: %q, %v", lab.StubName, l.Pod2, out, err)
			}
		})
		if n, err := l.PodDNSFlows(ctx); err != nil || n != 0 {
			t.Errorf("Conntrack holds %d pod DNS flows (%v), want 0: the pod's queries to %s took kube-proxy's path", n, err, lab.KubeDNSIP)
		}

		rendered, err := c.Rendered()
		if err != nil {
			t.Fatalf("No rendered Corefile at -conf: %v", err)
		}
		for _, want := range []string{
			"bind " + lab.LocalIP + " " + lab.KubeDNSIP,    // the sed's values
			"forward . " + lab.KubeDNSUpIP,                 // __PILLAR__CLUSTER__DNS__ from -upstreamsvc
			"forward . " + lab.OutsideIP,                   // __PILLAR__UPSTREAM__SERVERS__ from the node's resolv.conf
			lab.StubDomain + ":53 {",                       // the stub domain's block
			"forward " + lab.StubDomain + " " + lab.StubIP, // one forward per stub domain in the shared stub block
		} {
			if !strings.Contains(rendered, want) {
				t.Errorf("Rendered Corefile %s lacks %q:\n%s", c.Conf, want, rendered)
			}
		}
		if strings.Contains(rendered, "__PILLAR__") {
			t.Errorf("Rendered Corefile keeps a placeholder:\n%s", rendered)
		}

		m, err := c.NodeCacheMetrics()
		if err != nil {
			t.Errorf("Metrics listener %s: %v", lab.NodeCacheMetrics, err)
		} else if !strings.Contains(m, `coredns_nodecache_setup_errors_total{errortype="configmap"} 0`) {
			t.Errorf("Metrics on %s lack coredns_nodecache_setup_errors_total{errortype=\"configmap\"} at 0:\n%s", lab.NodeCacheMetrics, grepLines(m, "nodecache"))
		}
		if _, err := lab.HTTPGet(l.Node, lab.LocalIP+":8080", "/health"); err != nil {
			t.Errorf("Health on the template's %s:8080: %v", lab.LocalIP, err)
		}
		addrs, _ := l.NodeRun(ctx, "ip", "-4", "addr", "show", "dev", "nodelocaldns")
		for _, ip := range []string{lab.LocalIP, lab.KubeDNSIP} {
			if !strings.Contains(addrs, ip+"/32") {
				t.Errorf("Link nodelocaldns lacks %s/32 (-localip): %s", ip, addrs)
			}
		}

		stopAndCheckClean(ctx, t, l, c)
		// Pods fall back to kube-proxy's path.
		runChecks(t, l.Pod1, lab.KubeDNSIP, clusterChecks[:1])
	})

	t.Run("IPVSMode", func(t *testing.T) {
		c, err := l.StartNodeCacheFlags(ctx, lab.FlagsOptions{Mode: lab.IPVSMode})
		if err != nil {
			t.Fatalf("Start with the DaemonSet's args after the IPVS-mode sed: %v", err)
		}
		if err := l.FlushConntrack(ctx); err != nil {
			t.Fatal(err)
		}
		runChecks(t, l.Pod2, lab.LocalIP, clusterChecks)
		if n, _ := l.PodDNSFlows(ctx); n != 0 {
			t.Errorf("Conntrack holds %d pod DNS flows from queries to %s, want 0", n, lab.LocalIP)
		}
		// Only the link-local IP is the cache's: the kube-dns ClusterIP
		// stays kube-proxy's.
		addrs, _ := l.NodeRun(ctx, "ip", "-4", "addr", "show", "dev", "nodelocaldns")
		if !strings.Contains(addrs, lab.LocalIP+"/32") || strings.Contains(addrs, lab.KubeDNSIP) {
			t.Errorf("Link nodelocaldns holds %q, want %s only", addrs, lab.LocalIP)
		}
		rendered, _ := c.Rendered()
		if !strings.Contains(rendered, "forward . "+lab.KubeDNSIP) || strings.Contains(rendered, "__PILLAR__") {
			t.Errorf("Rendered Corefile: want cluster names forwarded to %s (the sed's __PILLAR__CLUSTER__DNS__) and no placeholder:\n%s", lab.KubeDNSIP, rendered)
		}
		stopAndCheckClean(ctx, t, l, c)
	})

	t.Run("KubeDNSConfigMapEdits", func(t *testing.T) {
		// The node-local-dns ConfigMap with one edit an operator may make:
		// reload every 2 s instead of 30 s (± 15 s), to keep the test short.
		b, err := os.ReadFile(filepath.Join("../..", lab.OfficialTemplate))
		if err != nil {
			t.Fatal(err)
		}
		tmpl := strings.ReplaceAll(string(b), "    reload\n", "    reload 2s\n")
		c, err := l.StartNodeCacheFlags(ctx, lab.FlagsOptions{Template: tmpl})
		if err != nil {
			t.Fatalf("Start: %v", err)
		}
		defer c.Stop()
		if r := mustQuery(t, l.Pod2, lab.LocalIP, lab.StubName, "A"); r.Rcode != dns.RcodeNameError {
			t.Fatalf("Before the edit %s: rcode %s, want NXDOMAIN (no stub domain yet)", lab.StubName, dns.RcodeToString[r.Rcode])
		}

		if err := c.UpdateKubeDNS(stubDomains); err != nil {
			t.Fatal(err)
		}
		nstest.Eventually(t, "the stub domain answers after the ConfigMap edit", 20*time.Second, func() bool {
			r, err := lab.Query(l.Pod2, lab.LocalIP, lab.StubName, "A", false)
			return err == nil && r.Rcode == dns.RcodeSuccess && strings.Contains(r.String(), lab.StubAddr)
		})
		good, _ := c.Rendered()
		if !strings.Contains(good, lab.StubDomain+":53 {") {
			t.Errorf("Rendered Corefile after the edit lacks the stub block:\n%s", good)
		}

		bad := map[string]string{"stubDomains": `{"` + lab.StubDomain + `": ["` + lab.StubIP + `"]`}
		if err := c.UpdateKubeDNS(bad); err != nil {
			t.Fatal(err)
		}
		nstest.Eventually(t, `coredns_nodecache_setup_errors_total{errortype="configmap"} counts the invalid JSON`, 20*time.Second, func() bool {
			m, err := c.NodeCacheMetrics()
			return err == nil && lab.SumMetric(m, "coredns_nodecache_setup_errors_total", `errortype="configmap"`) == 1
		})
		runChecks(t, l.Pod2, lab.LocalIP, []check{stubCheck, clusterChecks[0]})
		if now, _ := c.Rendered(); now != good {
			t.Errorf("Rendered Corefile changed on a bad ConfigMap:\n%s", now)
		}
		if c.Proc.Exited() {
			t.Errorf("The cache exited; edits must go live in the running process:\n%s", c.Proc.Tail(20))
		}
	})
}

// stopAndCheckClean stops the cache with SIGTERM and checks that the node
// holds nothing of it: no link, no local address, no rule or chain in
// either iptables backend.
func stopAndCheckClean(ctx context.Context, t *testing.T, l *lab.Lab, c *lab.FlagsCache) {
	t.Helper()
	if out, _ := l.NodeRun(ctx, "iptables-save", "-t", "raw"); !strings.Contains(out, "-d "+lab.LocalIP+"/32") || !strings.Contains(out, "NODELOCALDNS") {
		t.Errorf("Before SIGTERM the raw table lacks the cache's rules for %s:\n%s", lab.LocalIP, out)
	}
	if err := c.Stop(); err != nil {
		t.Errorf("SIGTERM: %v", err)
	}
	if out, err := l.NodeRun(ctx, "ip", "link", "show", "nodelocaldns"); err == nil {
		t.Errorf("Link nodelocaldns still there after SIGTERM:\n%s", out)
	}
	if out, _ := l.NodeRun(ctx, "ip", "addr"); strings.Contains(out, lab.LocalIP) {
		t.Errorf("%s still on the node after SIGTERM:\n%s", lab.LocalIP, out)
	}
	for _, save := range []string{"iptables-save", "iptables-legacy-save"} {
		out, err := l.NodeRun(ctx, save)
		if err != nil {
			t.Errorf("%s: %v", save, err)
			continue
		}
		if strings.Contains(out, lab.LocalIP) || strings.Contains(out, "NODELOCALDNS") {
			t.Errorf("%s after SIGTERM still has the cache's rules:\n%s", save, grepLines(out, lab.LocalIP, "NODELOCALDNS"))
		}
	}
}

// grepLines returns the lines of s holding any of subs.
func grepLines(s string, subs ...string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		for _, sub := range subs {
			if strings.Contains(line, sub) {
				out = append(out, line)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}
