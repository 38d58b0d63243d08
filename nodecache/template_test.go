package nodecache

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nodelocaldns/nodelocaldns/build/plugins"
)

var update = flag.Bool("update", false, "rewrite the testdata/*.golden files")

// The official template after each documented sed, and kube-dns ConfigMaps.
func TestRenderGolden(t *testing.T) {
	base, err := os.ReadFile("testdata/Corefile.base")
	if err != nil {
		t.Fatal(err)
	}
	iptables := strings.NewReplacer("__PILLAR__LOCAL__DNS__", "169.254.20.10", "__PILLAR__DNS__SERVER__", "198.18.0.10", "__PILLAR__DNS__DOMAIN__", "cluster.local")
	ipvs := func(s string) string {
		s = strings.ReplaceAll(s, ",__PILLAR__DNS__SERVER__", "")
		return strings.NewReplacer("__PILLAR__LOCAL__DNS__", "169.254.20.10", "__PILLAR__DNS__DOMAIN__", "cluster.local", "__PILLAR__CLUSTER__DNS__", "198.18.0.10").Replace(s)
	}
	ipv6 := func(s string) string {
		// The documented IPv6 change: health [__PILLAR__LOCAL__DNS__]:8080.
		s = strings.ReplaceAll(s, "health __PILLAR__LOCAL__DNS__:8080", "health [__PILLAR__LOCAL__DNS__]:8080")
		return strings.NewReplacer("__PILLAR__LOCAL__DNS__", "2001:2::a", "__PILLAR__DNS__SERVER__", "2001:2::10", "__PILLAR__DNS__DOMAIN__", "cluster.local").Replace(s)
	}
	stubs := map[string]string{
		keyStubDomains: `{"v6.example": ["[2001:2::53]:5353", "tls://198.18.5.3"], "acme.example": ["198.18.5.1", "dns://198.18.5.2:5353"]}`,
		keyUpstreams:   `["198.18.6.1", "2001:2::6"]`,
	}
	tests := []struct {
		name      string
		template  string
		localip   string // the DaemonSet's -localip after the same sed
		upstream  string // KUBE_DNS_UPSTREAM_SERVICE_HOST
		configMap map[string]string
		extra     []string
	}{
		{"iptables", iptables.Replace(string(base)), "169.254.20.10,198.18.0.10", "198.18.0.11", nil, nil},
		{"ipvs", ipvs(string(base)), "169.254.20.10", "198.18.0.11", nil, nil},
		{"ipv6", ipv6(string(base)), "2001:2::a,2001:2::10", "2001:2::11", nil, nil},
		{"local_by_loader", strings.ReplaceAll(string(base), "__PILLAR__DNS__DOMAIN__", "cluster.local"), "169.254.20.10,198.18.0.10", "198.18.0.11", nil, nil},
		{"stubdomains", iptables.Replace(string(base)), "169.254.20.10,198.18.0.10", "198.18.0.11", stubs, nil},
		{"flags", iptables.Replace(string(base)), "169.254.20.10,198.18.0.10", "198.18.0.11", nil,
			[]string{"-setupiptables=false", "-interfacename", "nodecache0", "-skipteardown", "-syncinterval", "30"}},
		{"ipv6_stubdomains", ipv6(string(base)), "2001:2::a,2001:2::10", "2001:2::11", stubs, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tmpl, out, cm := filepath.Join(dir, "Corefile.base"), filepath.Join(dir, "Corefile"), filepath.Join(dir, "kube-dns")
			writeFile(t, tmpl, tc.template)
			if tc.configMap != nil {
				writeConfigMap(t, cm, tc.configMap)
			}
			t.Setenv("KUBE_DNS_UPSTREAM_SERVICE_HOST", tc.upstream)
			args := append([]string{"-localip", tc.localip, "-conf", out, "-upstreamsvc", "kube-dns-upstream",
				"-basecorefile", tmpl, "-kubednscm", cm, "-metrics-listen-address", ""}, tc.extra...)
			l := newTemplateLoader(newTestFlags(t, args...))
			l.resolvConf = "testdata/resolv.conf"
			in, err := l.Load("dns")
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			got := in.Body()
			if in.Path() != out {
				t.Errorf("Corefile path %q, want the -conf path %q", in.Path(), out)
			}
			if written, err := os.ReadFile(out); err != nil || string(written) != string(got) {
				t.Errorf("The -conf file does not hold the rendered Corefile (err %v)", err)
			}
			if strings.Contains(string(got), "__PILLAR__") || strings.Contains(string(got), "<nil>") {
				t.Errorf("Rendered Corefile still holds a placeholder or <nil>:\n%s", got)
			}
			checkGolden(t, filepath.Join("testdata", tc.name+".golden"), got)

			again, err := l.Load("dns")
			if err != nil || string(again.Body()) != string(got) {
				t.Errorf("A second load of the same inputs gave other bytes (err %v)", err)
			}
		})
	}
}

func checkGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("Golden file: %v (run go test -update)", err)
	}
	if string(want) != string(got) {
		t.Errorf("Rendered Corefile differs from %s (go test -update rewrites it):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

// Stub domains share one server block: one cache, one loop probe, one
// forward per domain, the most specific first so that a sub-domain with its
// own servers is not answered by its parent's forward. The build accepts it.
func TestRenderStubsShareBlock(t *testing.T) {
	tmpl := []byte(".:53 {\n    reload 5s\n    bind 169.254.20.10\n    forward . 198.18.6.1\n}\n")
	src := sources{
		localIPs: []netip.Addr{netip.MustParseAddr("169.254.20.10")},
		stubs: []stubDomain{
			{domain: "acme.example", servers: []string{"198.18.5.1"}},
			{domain: "eu.acme.example", servers: []string{"198.18.5.2"}},
			{domain: "zeta.example", servers: []string{"198.18.5.3"}},
		},
	}
	got, warnings, err := render("Corefile.base", tmpl, src)
	if err != nil {
		t.Fatalf("Render: %v", err)
	}
	if len(warnings) != 0 {
		t.Errorf("Warnings for a template with bind: %q", warnings)
	}
	body := string(got)
	if n := strings.Count(body, "cache 30"); n != 1 {
		t.Errorf("%d stub caches, want one shared by every stub domain:\n%s", n, body)
	}
	for _, want := range []string{"acme.example:53,\neu.acme.example:53,\nzeta.example:53 {", "reload 5s", "bind 169.254.20.10\n    forward eu.acme.example"} {
		if !strings.Contains(body, want) {
			t.Errorf("Rendered Corefile lacks %q:\n%s", want, body)
		}
	}
	if sub, parent := strings.Index(body, "forward eu.acme.example "), strings.Index(body, "forward acme.example "); sub < 0 || parent < 0 || sub > parent {
		t.Errorf("forward eu.acme.example must come before forward acme.example:\n%s", body)
	}
	if err := plugins.Validate("Corefile", got); err != nil {
		t.Errorf("The build rejects the rendered Corefile: %v\n%s", err, body)
	}
}

// A root block without bind serves on every address; rendering warns,
// naming the block, and the stub block binds nothing either, so that the
// local IP reaches both (a stub block bound to the local IP alone took every
// query to that address and refused the names outside its zones).
func TestRenderRootWithoutBind(t *testing.T) {
	tmpl := []byte("# node cache\n.:53 {\n    forward . 198.18.6.1\n}\n")
	src := sources{
		localIPs: []netip.Addr{netip.MustParseAddr("169.254.20.10")},
		stubs:    []stubDomain{{domain: "acme.example", servers: []string{"198.18.5.1"}}},
	}
	got, warnings, err := render("Corefile.base", tmpl, src)
	if err != nil {
		t.Fatalf("Render: %v", err)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "Corefile.base:2") || !strings.Contains(warnings[0], "no bind") {
		t.Errorf("Warnings %q, want one naming Corefile.base:2 and the missing bind", warnings)
	}
	if strings.Contains(string(got), "bind") {
		t.Errorf("The stub block binds what the root block does not:\n%s", got)
	}
}
