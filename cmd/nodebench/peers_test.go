package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nodelocaldns/nodelocaldns/internal/lab"
)

// TestPeerConfigs renders the peers' templates in the lab's addresses and
// has unbound and dnsdist check them with their own config checkers, when
// installed (`make bench` installs them).
func TestPeerConfigs(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		conf  string
		want  []string
		check []string // the checker's command line; {} is the file
	}{
		{"unbound.conf", []string{"num-threads: 1", "interface: " + lab.LocalIP, "interface: " + lab.KubeDNSIP,
			"cache-max-ttl: 30", "cache-max-negative-ttl: 5", "forward-addr: " + lab.KubeDNSUpIP, "forward-tcp-upstream: yes", "control-enable: no"},
			[]string{"unbound-checkconf", "{}"}},
		{"dnsdist.conf", []string{"setLocal('" + lab.LocalIP + ":53')", "addLocal('" + lab.KubeDNSIP + ":53')",
			"address='" + lab.KubeDNSUpIP + ":53'", "tcpOnly=true", "maxTTL=30, maxNegativeTTL=5", "'cluster.local.', 'in-addr.arpa.', 'ip6.arpa.'"},
			[]string{"dnsdist", "--check-config", "-C", "{}"}},
	} {
		dst := filepath.Join(dir, tc.conf)
		if err := renderPeerConf("../..", tc.conf, labPeerConf(dir), dst); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(dst)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range tc.want {
			if !strings.Contains(string(b), w) {
				t.Errorf("Rendered %s lacks %q:\n%s", tc.conf, w, b)
			}
		}
		if strings.Contains(string(b), "controlSocket") {
			t.Errorf("Rendered %s opens dnsdist's console", tc.conf)
		}
		if _, err := exec.LookPath(tc.check[0]); err != nil {
			t.Logf("%s not installed: %s not checked by it (make bench installs it)", tc.check[0], tc.conf)
			continue
		}
		argv := make([]string, len(tc.check))
		for i, a := range tc.check {
			argv[i] = strings.ReplaceAll(a, "{}", dst)
		}
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			t.Errorf("%s rejects the rendered %s: %v\n%s\n%s", argv[0], tc.conf, err, out, b)
		}
	}
}

func TestWithFailopen(t *testing.T) {
	b, err := os.ReadFile("../../Corefile.example")
	if err != nil {
		t.Fatal(err)
	}
	got := withFailopen("off")(string(b))
	if n := strings.Count(got, "failopen off"); n != 1 {
		t.Fatalf("failopen off appears %d times, want once (in the first nodelocal block):\n%s", n, got)
	}
	i := strings.Index(got, "nodelocal {")
	if j := strings.Index(got, "failopen off"); j < i || strings.Contains(got[i:j], "}") {
		t.Errorf("failopen off is not inside the first nodelocal block:\n%s", got)
	}
}

func TestSelectPeers(t *testing.T) {
	all, err := selectPeers("")
	if err != nil || len(all) != len(peerKeys) {
		t.Errorf("No -peers: %v (%v), want every peer", all, err)
	}
	some, err := selectPeers("this, unbound")
	if err != nil || len(some) != 2 || !some["this"] || !some["unbound"] {
		t.Errorf("-peers this,unbound: %v (%v)", some, err)
	}
	if _, err := selectPeers("this,bind9"); err == nil || !strings.Contains(err.Error(), `"bind9"`) {
		t.Errorf("-peers with an unknown key: %v, want an error naming it", err)
	}
}

func TestKernelShare(t *testing.T) {
	report := `# Samples: 4K of event 'cpu-clock'
#
# Overhead  Shared Object
# ........  .................
#
    61.32%  [kernel.kallsyms]
    38.55%  coredns
     0.13%  [vdso]
`
	if k, ok := kernelShare(report); !ok || k != 61.32 {
		t.Errorf("Got %v, %v; want 61.32 from the [kernel.kallsyms] line", k, ok)
	}
	if _, ok := kernelShare("# no samples\n"); ok {
		t.Error("A report without a kernel line gave a share")
	}
}

func TestInEveryBlock(t *testing.T) {
	cf := "# a comment {\ncluster.local:53 {\n    cache {\n        success 9984 30\n    }\n}\n.:53 {\n    errors\n}\n"
	got := inEveryBlock("multisocket 2")(cf)
	if n := strings.Count(got, "multisocket 2"); n != 2 {
		t.Fatalf("multisocket appears %d times, want once per server block:\n%s", n, got)
	}
	if !strings.Contains(got, "cluster.local:53 {\n    multisocket 2\n    cache {") || !strings.Contains(got, ".:53 {\n    multisocket 2\n    errors") {
		t.Errorf("multisocket is not first in each server block:\n%s", got)
	}
}
