package nodecache

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nodelocaldns/nodelocaldns/internal/nsenter"
	"github.com/nodelocaldns/nodelocaldns/internal/nstest"
)

// A running CoreDNS follows edits of the mounted kube-dns ConfigMap, swapped
// the way kubelet swaps it, through the reload plugin and without a restart;
// a bad edit leaves it answering as before, and is counted.
func TestReloadFollowsConfigMap(t *testing.T) {
	bin := binary(t)
	nstest.Enter(t)
	up1, up2, stub := fakeUpstream(t, "198.18.1.1"), fakeUpstream(t, "198.18.1.2"), fakeUpstream(t, "198.18.1.3")
	const server = "169.254.20.10:53"

	dir := t.TempDir()
	tmpl, out, cm := filepath.Join(dir, "Corefile.base"), filepath.Join(dir, "Corefile"), filepath.Join(dir, "kube-dns")
	writeFile(t, tmpl, ".:53 {\n    errors\n    reload 2s 1s\n    loop\n    bind __PILLAR__LOCAL__DNS__\n    forward . __PILLAR__UPSTREAM__SERVERS__\n}\n")
	writeConfigMap(t, cm, map[string]string{keyUpstreams: `["` + up1 + `"]`})

	start(t, bin, []string{"KUBE_DNS_UPSTREAM_SERVICE_HOST=198.18.0.11"},
		"-localip", "169.254.20.10", "-conf", out, "-upstreamsvc", "kube-dns-upstream",
		"-basecorefile", tmpl, "-kubednscm", cm, "-metrics-listen-address", "127.0.0.1:9353")
	nstest.Eventually(t, "first answer", 20*time.Second, func() bool { return nstest.LookupA("udp", server, "www.example.test.") == "198.18.1.1" })

	writeConfigMap(t, cm, map[string]string{
		keyUpstreams:   `["` + up2 + `"]`,
		keyStubDomains: `{"stub.test": ["` + stub + `"]}`,
	})
	nstest.Eventually(t, "upstream change served", 15*time.Second, func() bool { return nstest.LookupA("udp", server, "www.example.test.") == "198.18.1.2" })
	nstest.Eventually(t, "stub domain served", 5*time.Second, func() bool { return nstest.LookupA("udp", server, "www.stub.test.") == "198.18.1.3" })
	if b, _ := os.ReadFile(out); !strings.Contains(string(b), "stub.test:53") {
		t.Errorf("The -conf file does not show the stub domain:\n%s", b)
	}

	rejections := func() string {
		_, body, _ := nsenter.HTTPGet("127.0.0.1:9353", "/metrics")
		for _, l := range strings.Split(body, "\n") {
			if strings.HasPrefix(l, "coredns_nodelocal_config_rejections_total ") {
				return strings.TrimPrefix(l, "coredns_nodelocal_config_rejections_total ")
			}
		}
		return "missing"
	}
	if got := rejections(); got != "0" {
		t.Fatalf("config_rejections_total before a bad edit: %s, want 0", got)
	}
	writeConfigMap(t, cm, map[string]string{keyUpstreams: `["` + up1 + `", "resolver.example"]`})
	nstest.Eventually(t, "bad edit rejected", 10*time.Second, func() bool { return rejections() == "1" })
	time.Sleep(3 * time.Second) // a reload check or two
	if got := nstest.LookupA("udp", server, "www.example.test."); got != "198.18.1.2" {
		t.Errorf("After a bad edit: www.example.test A %q, want the last good answer 198.18.1.2", got)
	}
	if got := nstest.LookupA("udp", server, "www.stub.test."); got != "198.18.1.3" {
		t.Errorf("After a bad edit: www.stub.test A %q, want the last good answer 198.18.1.3", got)
	}
}
