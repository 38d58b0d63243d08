package nodecache

import (
	"path/filepath"
	"strings"
	"testing"
)

// The drop-in adds hitpath to each server block with a cache, once, and
// nowhere else.
func TestWithHitPath(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"cache block", ".:53 {\n    errors\n    cache 30\n}\n", ".:53 {\n    hitpath\n    errors\n    cache 30\n}\n"},
		{"cache with a block", "a:53 {\n    cache {\n        success 9984 30\n    }\n}\n", "a:53 {\n    hitpath\n    cache {\n        success 9984 30\n    }\n}\n"},
		{"two blocks, one without cache", "a:53 {\n    cache 30\n}\nb:53 {\n    forward . 198.18.0.1\n}\n", "a:53 {\n    hitpath\n    cache 30\n}\nb:53 {\n    forward . 198.18.0.1\n}\n"},
		{"already there", ".:53 {\n    cache 30\n    hitpath\n}\n", ".:53 {\n    cache 30\n    hitpath\n}\n"},
		{"cache only as an argument", ".:53 {\n    forward . cache\n}\n", ".:53 {\n    forward . cache\n}\n"},
		{"cache only in a nested block", ".:53 {\n    x {\n        cache\n    }\n}\n", ".:53 {\n    x {\n        cache\n    }\n}\n"},
		{"snippet", "(common) {\n    cache 30\n}\n.:53 {\n    import common\n}\n", "(common) {\n    cache 30\n}\n.:53 {\n    import common\n}\n"},
		{"comment", ".:53 {\n    # cache 30\n    forward . 198.18.0.1\n}\n", ".:53 {\n    # cache 30\n    forward . 198.18.0.1\n}\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(withHitPath([]byte(tc.in))); got != tc.want {
				t.Errorf("withHitPath:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
}

// NODELOCAL_HITPATH=off renders the template without hitpath; a value other
// than on or off is refused, naming the variable.
func TestHitPathEnv(t *testing.T) {
	load := func(t *testing.T) (string, error) {
		dir := t.TempDir()
		tmpl := filepath.Join(dir, "Corefile.base")
		writeFile(t, tmpl, ".:53 {\n    bind 169.254.20.10\n    cache 30\n    forward . 198.18.6.1\n}\n")
		t.Setenv("KUBE_DNS_UPSTREAM_SERVICE_HOST", "198.18.0.11")
		l := newTemplateLoader(newTestFlags(t, "-localip", "169.254.20.10", "-conf", filepath.Join(dir, "Corefile"),
			"-upstreamsvc", "kube-dns-upstream", "-basecorefile", tmpl, "-kubednscm", filepath.Join(dir, "kube-dns"), "-metrics-listen-address", ""))
		l.resolvConf = "testdata/resolv.conf"
		body, _, err := l.render(tmpl, false)
		return string(body), err
	}
	for env, want := range map[string]int{"": 1, "on": 1, "off": 0} {
		t.Run("env="+env, func(t *testing.T) {
			t.Setenv(HitPathEnv, env)
			got, err := load(t)
			if err != nil {
				t.Fatal(err)
			}
			if n := strings.Count(got, "hitpath"); n != want {
				t.Errorf("%s=%q: hitpath %d times, want %d:\n%s", HitPathEnv, env, n, want, got)
			}
		})
	}
	t.Setenv(HitPathEnv, "yes")
	if _, err := load(t); err == nil || !strings.Contains(err.Error(), HitPathEnv) {
		t.Errorf("%s=yes: error %v, want one naming the variable", HitPathEnv, err)
	}
}
