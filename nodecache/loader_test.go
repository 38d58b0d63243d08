package nodecache

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

type loaderEnv struct {
	dir, tmpl, out, cm string
}

func iptablesTemplate(t *testing.T) string {
	t.Helper()
	base, err := os.ReadFile("testdata/Corefile.base")
	if err != nil {
		t.Fatal(err)
	}
	return strings.NewReplacer("__PILLAR__LOCAL__DNS__", "169.254.20.10", "__PILLAR__DNS__SERVER__", "198.18.0.10", "__PILLAR__DNS__DOMAIN__", "cluster.local").Replace(string(base))
}

func newLoaderEnv(t *testing.T) (loaderEnv, func(...string) *templateLoader) {
	dir := t.TempDir()
	e := loaderEnv{dir: dir, tmpl: filepath.Join(dir, "Corefile.base"), out: filepath.Join(dir, "Corefile"), cm: filepath.Join(dir, "kube-dns")}
	writeFile(t, e.tmpl, iptablesTemplate(t))
	writeConfigMap(t, e.cm, map[string]string{
		keyStubDomains: `{"acme.example": ["198.18.5.1"]}`,
		keyUpstreams:   `["198.18.6.1"]`,
	})
	t.Setenv("KUBE_DNS_UPSTREAM_SERVICE_HOST", "198.18.0.11")
	newLoader := func(extra ...string) *templateLoader {
		args := append([]string{"-localip", "169.254.20.10,198.18.0.10", "-conf", e.out, "-upstreamsvc", "kube-dns-upstream",
			"-basecorefile", e.tmpl, "-kubednscm", e.cm, "-metrics-listen-address", ""}, extra...)
		l := newTemplateLoader(newTestFlags(t, args...))
		l.resolvConf = "testdata/resolv.conf"
		return l
	}
	return e, newLoader
}

// A bad input keeps the last good Corefile, is logged and counted once, and
// fails a first start with an error that names the key and the value.
func TestLoaderBadInput(t *testing.T) {
	sixteen := `["198.18.6.1"` + strings.Repeat(`, "198.18.6.2"`, 15) + `]`
	tests := []struct {
		name  string
		bad   func(t *testing.T, e loaderEnv)
		wants []string
	}{
		{"stub domains not JSON", cm(`{"acme.example": "198.18.5.1"`, `["198.18.6.1"]`), []string{"stubDomains", `{\"acme.example\": \"198.18.5.1\"`}},
		{"stub domain server not an IP", cm(`{"acme.example": ["ns.acme.example"]}`, ""), []string{`stubDomains["acme.example"]`, `"ns.acme.example"`, "not an IP"}},
		{"stub domain empty", cm(`{"": ["198.18.5.1"]}`, ""), []string{"stubDomains", `domain ""`, "empty"}},
		{"stub domain server list empty", cm(`{"acme.example": []}`, ""), []string{`stubDomains["acme.example"]`, "empty"}},
		{"stub domain bad transport", cm(`{"acme.example": ["https://198.18.5.1"]}`, ""), []string{`stubDomains["acme.example"]`, `"https://198.18.5.1"`, "dns:// or tls://"}},
		{"stub domain with Corefile syntax", cm(`{"acme.example {": ["198.18.5.1"]}`, ""), []string{"stubDomains", `"acme.example {"`}},
		{"upstreams not JSON", cm("", "198.18.6.1"), []string{"upstreamNameservers", `"198.18.6.1"`, "JSON list"}},
		{"upstream not an IP", cm("", `["resolver.example"]`), []string{"upstreamNameservers", `"resolver.example"`}},
		{"upstream bad transport", cm("", `["quic://198.18.6.1"]`), []string{"upstreamNameservers", `"quic://"`}},
		{"too many upstreams", cm("", sixteen), []string{"upstreamNameservers", "16 servers", "at most 15"}},
		// B4 (issue 18): the loop plugin found these only after the node was set up.
		{"stub domain on a local IP", cm(`{"acme.example": ["198.18.5.1", "169.254.20.10"]}`, ""), []string{`stubDomains["acme.example"]`, `"169.254.20.10"`, "loop"}},
		{"stub domain on a local IP with the port", cm(`{"acme.example": ["198.18.0.10:53"]}`, ""), []string{`stubDomains["acme.example"]`, `"198.18.0.10:53"`, "loop"}},
		{"upstream on a local IP", cm("", `["169.254.20.10"]`), []string{"upstreamNameservers", `"169.254.20.10"`, "loop"}},
		{"too many stub domains", cm(manyStubs(maxStubDomains+1), ""), []string{"stubDomains", "1001 domains", "at most 1000"}},
		{"unknown placeholder", func(t *testing.T, e loaderEnv) {
			writeFile(t, e.tmpl, strings.ReplaceAll(iptablesTemplate(t), "cluster.local:53", "__PILLAR__DNS__DOMAIN__:53"))
		}, []string{"__PILLAR__DNS__DOMAIN__", "unknown placeholder"}},
		{"upstream Service variable missing", func(t *testing.T, e loaderEnv) {
			t.Setenv("KUBE_DNS_UPSTREAM_SERVICE_HOST", "")
		}, []string{"KUBE_DNS_UPSTREAM_SERVICE_HOST", `"kube-dns-upstream"`}},
		{"upstream Service variable not an IP", func(t *testing.T, e loaderEnv) {
			t.Setenv("KUBE_DNS_UPSTREAM_SERVICE_HOST", "<nil>")
		}, []string{"KUBE_DNS_UPSTREAM_SERVICE_HOST", `"<nil>"`}},
		{"template missing", func(t *testing.T, e loaderEnv) { os.Remove(e.tmpl) }, []string{"Corefile.base"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, newLoader := newLoaderEnv(t)
			l := newLoader()
			good, err := l.Load("dns")
			if err != nil {
				t.Fatalf("Good input: %v", err)
			}
			errs0 := configMapErrors(t)
			rej0 := testutil.ToFloat64(configRejections)

			tc.bad(t, e)
			for range 3 {
				in, err := l.Load("dns")
				if err != nil {
					t.Fatalf("Load after bad input: %v; want the last good Corefile", err)
				}
				if string(in.Body()) != string(good.Body()) {
					t.Fatalf("Load after bad input changed the Corefile:\n%s", in.Body())
				}
			}
			if written, _ := os.ReadFile(e.out); string(written) != string(good.Body()) {
				t.Errorf("The -conf file changed after a bad input")
			}
			if d := configMapErrors(t) - errs0; d != 1 {
				t.Errorf("setup_errors_total{errortype=configmap} grew by %v over three checks of one bad input, want 1", d)
			}
			if d := testutil.ToFloat64(configRejections) - rej0; d != 1 {
				t.Errorf("config_rejections_total grew by %v, want 1", d)
			}

			_, err = newLoader().Load("dns")
			if err == nil {
				t.Fatalf("First load of a bad input succeeded; want an error")
			}
			for _, w := range tc.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Error %q does not name %s", err, w)
				}
			}
		})
	}
}

// manyStubs is a stubDomains value with n domains, each with its own server.
func manyStubs(n int) string {
	var b strings.Builder
	b.WriteString("{")
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, `"s%d.example": ["198.19.%d.%d"]`, i, i/250, i%250+1)
	}
	b.WriteString("}")
	return b.String()
}

// cm writes a kube-dns ConfigMap; an empty value leaves the key out.
func cm(stub, up string) func(*testing.T, loaderEnv) {
	return func(t *testing.T, e loaderEnv) {
		data := map[string]string{}
		if stub != "" {
			data[keyStubDomains] = stub
		}
		if up != "" {
			data[keyUpstreams] = up
		}
		writeConfigMap(t, e.cm, data)
	}
}

// An edit of the mounted ConfigMap shows in the next load; an unchanged one
// gives the same bytes, so the reload plugin sees no change.
func TestLoaderFollowsConfigMap(t *testing.T) {
	e, newLoader := newLoaderEnv(t)
	l := newLoader()
	first, err := l.Load("dns")
	if err != nil {
		t.Fatal(err)
	}
	ch0 := testutil.ToFloat64(configChanges)
	writeConfigMap(t, e.cm, map[string]string{keyStubDomains: `{"acme.example": ["198.18.5.1"]}`, keyUpstreams: `["198.18.6.1"]`})
	same, _ := l.Load("dns")
	if string(same.Body()) != string(first.Body()) || testutil.ToFloat64(configChanges) != ch0 {
		t.Errorf("A ConfigMap swap with the same data changed the Corefile")
	}
	writeConfigMap(t, e.cm, map[string]string{keyStubDomains: `{"beta.example": ["198.18.5.9"]}`})
	next, err := l.Load("dns")
	if err != nil {
		t.Fatal(err)
	}
	body := string(next.Body())
	if !strings.Contains(body, "beta.example:53 {") || strings.Contains(body, "acme.example") {
		t.Errorf("Stub domains did not follow the ConfigMap:\n%s", body)
	}
	if !strings.Contains(body, "forward . 198.18.0.2 2001:2::2\n") {
		t.Errorf("Without upstreamNameservers the root block should forward to resolv.conf's nameservers:\n%s", body)
	}
	if d := testutil.ToFloat64(configChanges) - ch0; d != 1 {
		t.Errorf("config_changes_total grew by %v, want 1", d)
	}
	if written, _ := os.ReadFile(e.out); string(written) != body {
		t.Errorf("The -conf file does not hold the new Corefile")
	}
}

func TestLoaderHealthPort(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		template func(string) string
		want     string // healthport line, or error text
		failing  bool
	}{
		{"follows the template", nil, func(s string) string { return strings.ReplaceAll(s, ":8080", ":8081") }, "healthport 8081", false},
		{"flag agrees", []string{"-health-port", "8080"}, nil, "healthport 8080", false},
		{"flag without health line", []string{"-health-port", "9090"}, func(s string) string { return strings.ReplaceAll(s, "health 169.254.20.10:8080", "") }, "healthport 9090", false},
		{"flag disagrees", []string{"-health-port", "9090"}, nil, "-health-port 9090 and the template's health port 8080 differ", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, newLoader := newLoaderEnv(t)
			if tc.template != nil {
				writeFile(t, e.tmpl, tc.template(iptablesTemplate(t)))
			}
			in, err := newLoader(tc.args...).Load("dns")
			if tc.failing {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("Error %v, want one containing %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(in.Body()), tc.want+"\n") {
				t.Errorf("Rendered Corefile has no %q:\n%s", tc.want, in.Body())
			}
		})
	}
}

func TestLoaderModes(t *testing.T) {
	t.Run("no flags, no -conf: the default loader applies", func(t *testing.T) {
		in, err := newTemplateLoader(newTestFlags(t)).Load("dns")
		if in != nil || err != nil {
			t.Errorf("Load = %v, %v; want nothing", in, err)
		}
	})
	t.Run("plain -conf is read as CoreDNS reads it", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "Corefile")
		writeFile(t, p, ".:1053 {\n    whoami\n}\n")
		in, err := newTemplateLoader(newTestFlags(t, "-conf", p)).Load("dns")
		if err != nil || string(in.Body()) != ".:1053 {\n    whoami\n}\n" || in.Path() != p {
			t.Errorf("Load = %v, %v", in, err)
		}
	})
	t.Run("plain -conf with placeholders is rendered in memory", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "Corefile")
		tmpl := ".:1053 {\n    bind 127.0.0.1\n    forward . __PILLAR__CLUSTER__DNS__\n}\n"
		writeFile(t, p, tmpl)
		t.Setenv("KUBE_DNS_SERVICE_HOST", "198.18.0.10")
		f := newTestFlags(t, "-conf", p)
		f.kubeDNSCM = ""
		in, err := newTemplateLoader(f).Load("dns")
		if err != nil {
			t.Fatal(err)
		}
		if got := string(in.Body()); got != ".:1053 {\n    bind 127.0.0.1\n    forward . 198.18.0.10\n}\n" {
			t.Errorf("Rendered:\n%s", got)
		}
		if b, _ := os.ReadFile(p); string(b) != tmpl {
			t.Errorf("The -conf file was written back")
		}
	})
	t.Run("node-cache flags with a template as -conf", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "Corefile")
		writeFile(t, p, ".:53 {\n    forward . __PILLAR__UPSTREAM__SERVERS__\n}\n")
		_, err := newTemplateLoader(newTestFlags(t, "-conf", p, "-localip", "169.254.20.10")).Load("dns")
		if err == nil || !strings.Contains(err.Error(), "-basecorefile") {
			t.Errorf("Error %v, want one saying the template goes to -basecorefile", err)
		}
	})
	t.Run("template with its own nodelocal directive", func(t *testing.T) {
		e, newLoader := newLoaderEnv(t)
		writeFile(t, e.tmpl, ".:53 {\n    bind 169.254.20.10\n    nodelocal\n    forward . 198.18.0.11\n}\n")
		_, err := newLoader().Load("dns")
		if err == nil || !strings.Contains(err.Error(), "own nodelocal directive") {
			t.Errorf("Error %v, want one about the template's own nodelocal directive", err)
		}
	})
}

func TestSyncIntervalFlag(t *testing.T) {
	for _, tc := range []struct{ in, want string }{{"60", "sync 1m0s"}, {"30s", "sync 30s"}, {"2m", "sync 2m0s"}} {
		lines, err := newTestFlags(t, "-syncinterval", tc.in).directiveLines(0)
		if err != nil || !strings.Contains(strings.Join(lines, "\n"), tc.want) {
			t.Errorf("-syncinterval %s: %q, %v; want %q", tc.in, lines, err, tc.want)
		}
	}
	var s syncFlag
	for _, bad := range []string{"0", "10ns", "soon", "-5"} {
		if err := s.Set(bad); err == nil {
			t.Errorf("-syncinterval %s accepted", bad)
		}
	}
}

// A flag value that would not stay one token of the directive text (found
// by FuzzFlags) is refused, naming the flag and the value, instead of adding
// lines to the nodelocal block.
func TestFlagValuesStayOneToken(t *testing.T) {
	for _, args := range [][]string{
		{"-localip", "169.254.20.10", "-upstreamsvc", "kube-dns\n        teardown off"},
		{"-localip", "169.254.20.10", "-interfacename", "nodelocaldns}"},
		{"-localip", "169.254.20.10", "-interfacename", "a#b"},
	} {
		f := newTestFlags(t, args...)
		lines, err := f.directiveLines(0)
		if err == nil {
			t.Errorf("Flags %q gave directive lines %q; want an error", args, lines)
			continue
		}
		if !strings.Contains(err.Error(), args[2]) || !strings.Contains(err.Error(), fmt.Sprintf("%q", args[3])) {
			t.Errorf("Error %q does not name %s and its value", err, args[2])
		}
	}
}

// Importing the plugin and this package defines no flag; Register defines
// node-cache's flags on the set it is given and takes over its -conf.
func TestRegisterDefinesFlags(t *testing.T) {
	for _, name := range nodeCacheFlags {
		if flag.CommandLine.Lookup(name) != nil {
			t.Errorf("-%s is defined on the command line by an import", name)
		}
	}
	saved := corefileLoader
	t.Cleanup(func() { loaderMu.Lock(); corefileLoader = saved; loaderMu.Unlock() })
	fs := flag.NewFlagSet("coredns", flag.ContinueOnError)
	fs.String("conf", "", "Corefile to load")
	Register(fs)
	for _, name := range nodeCacheFlags {
		if fs.Lookup(name) == nil {
			t.Errorf("Register did not define -%s", name)
		}
	}
	if _, ok := fs.Lookup("conf").Value.(*confFlag); !ok {
		t.Errorf("Register did not take over -conf")
	}
}
