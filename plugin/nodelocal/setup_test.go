package nodelocal

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"

	"github.com/nodelocaldns/nodelocaldns/plugin/nodelocal/rules"
)

// parseTests are the directive parser's cases; FuzzSetup starts from them.
var parseTests = []struct {
	input              string
	failing            bool
	expectedErrContent string // substring of the error, with the bad value quoted
	check              func(Config) string
}{
	// Full settings, IPv4 and IPv6 mixed.
	{`nodelocal {
			localip 169.254.20.10 198.18.0.10 2001:2::a
			interface nodecache0
			rules iptables legacy
			upstreamsvc kube-dns-upstream
			healthport 8081
			sync 30s
			teardown handoff
		}`, false, "", func(c Config) string {
		switch {
		case len(c.LocalIPs) != 3 || c.LocalIPs[2] != netip.MustParseAddr("2001:2::a"):
			return "localip"
		case c.Interface != "nodecache0", c.Rules != rules.ModeIptables, c.Backend != rules.BackendLegacy:
			return "interface or rules"
		case c.Upstream != netip.MustParseAddr("198.18.0.11"), c.HealthPort != 8081, c.Sync != 30*time.Second, c.Teardown != TeardownHandoff:
			return "upstream, healthport, sync or teardown"
		}
		return ""
	}},
	// Defaults; a comma list as node-cache's -localip writes it.
	{`nodelocal {
			localip 169.254.20.10,198.18.0.10
		}`, false, "", func(c Config) string {
		if len(c.LocalIPs) != 2 || c.Interface != "nodelocaldns" || c.Rules != rules.ModeIptables || c.Backend != rules.BackendAuto ||
			c.HealthPort != 8080 || c.Sync != 10*time.Second || c.Teardown != TeardownOn || c.UpstreamSvc != "" || c.RcvBuf != 4<<20 || !c.FailOpen {
			return "defaults"
		}
		return ""
	}},
	{`nodelocal {
			localip 169.254.20.10
			interface none
			rules nftables
		}`, false, "", func(c Config) string {
		if c.Interface != "" || c.Rules != rules.ModeNftables {
			return "interface none / rules nftables"
		}
		return ""
	}},
	{`nodelocal {
			localip fe80::a%nodelocaldns
		}`, false, "", nil},
	{`nodelocal {
			localip ::ffff:169.254.20.10
			rules none
		}`, false, "", func(c Config) string {
		if c.LocalIPs[0] != netip.MustParseAddr("169.254.20.10") || c.Rules != rules.ModeNone {
			return "mapped address or rules none"
		}
		return ""
	}},
	// Receive buffer sizes: bytes, K and M suffixes, or none for the kernel's default.
	{"nodelocal {\nlocalip 169.254.20.10\nrcvbuf 8M\n}", false, "", func(c Config) string {
		if c.RcvBuf != 8<<20 {
			return "rcvbuf 8M"
		}
		return ""
	}},
	{"nodelocal {\nlocalip 169.254.20.10\nrcvbuf 512k\n}", false, "", func(c Config) string {
		if c.RcvBuf != 512<<10 {
			return "rcvbuf 512k"
		}
		return ""
	}},
	{"nodelocal {\nlocalip 169.254.20.10\nrcvbuf 1048576\n}", false, "", func(c Config) string {
		if c.RcvBuf != 1<<20 {
			return "rcvbuf 1048576"
		}
		return ""
	}},
	{"nodelocal {\nlocalip 169.254.20.10\nrcvbuf none\n}", false, "", func(c Config) string {
		if c.RcvBuf != 0 {
			return "rcvbuf none"
		}
		return ""
	}},

	{"nodelocal {\nlocalip 169.254.20.10\nfailopen off\n}", false, "", func(c Config) string {
		if c.FailOpen {
			return "failopen off"
		}
		return ""
	}},

	// Errors name the setting and quote the value.
	{"nodelocal {\nlocalip 169.254.20.300\n}", true, `localip "169.254.20.300" is not an IP address`, nil},
	{"nodelocal {\nlocalip 169.254.20.10 198.18.0.10 169.254.20.10\n}", true, `localip "169.254.20.10" is listed twice`, nil},
	{"nodelocal {\nlocalip 169.254.20.10 ::ffff:169.254.20.10\n}", true, `localip "::ffff:169.254.20.10" is listed twice`, nil},
	{"nodelocal {\nlocalip 0.0.0.0\n}", true, `localip "0.0.0.0" cannot be held`, nil},
	{"nodelocal {\nlocalip 127.0.0.1\n}", true, `localip "127.0.0.1" cannot be held`, nil},
	{"nodelocal {\nlocalip fe80::a\n}", true, `localip "fe80::a" is IPv6 link-local: write it with the zone of its link, "fe80::a%nodelocaldns"`, nil},
	{"nodelocal {\nlocalip fe80::a%eth0\n}", true, `zone of its link`, nil},
	{"nodelocal {\nlocalip fe80::a\ninterface none\n}", true, `needs an interface`, nil},
	{"nodelocal {\nlocalip 2001:2::a%eth0\n}", true, `a zone only makes sense on a link-local address`, nil},
	{"nodelocal {\nlocalip\n}", true, `localip wants at least one IP address`, nil},
	{"nodelocal {\ninterface nodelocaldns\n}", true, `localip is required in a block with settings`, nil},
	{"nodelocal {\nlocalip 169.254.20.10\ninterface nodelocaldns-cache0\n}", true, `interface "nodelocaldns-cache0" is 19 bytes long; Linux allows 15`, nil},
	{"nodelocal {\nlocalip 169.254.20.10\ninterface a/b\n}", true, `interface "a/b" is not a valid link name`, nil},
	{"nodelocal {\nlocalip 169.254.20.10\ninterface a b\n}", true, `interface wants one value, got 2`, nil},
	{"nodelocal {\nlocalip 169.254.20.10\nrules ipchains\n}", true, `rules "ipchains": want iptables, nftables or none`, nil},
	{"nodelocal {\nlocalip 169.254.20.10\nrules iptables xt\n}", true, `rules iptables backend "xt"`, nil},
	{"nodelocal {\nlocalip 169.254.20.10\nrules none legacy\n}", true, `rules none takes no backend, got "legacy"`, nil},
	{"nodelocal {\nlocalip 169.254.20.10\nhealthport 0\n}", true, `healthport "0" is not a port`, nil},
	{"nodelocal {\nlocalip 169.254.20.10\nhealthport 65536\n}", true, `healthport "65536" is not a port`, nil},
	{"nodelocal {\nlocalip 169.254.20.10\nhealthport http\n}", true, `healthport "http" is not a port`, nil},
	{"nodelocal {\nlocalip 169.254.20.10\nsync 500ms\n}", true, `sync "500ms" is below the minimum of 1s`, nil},
	{"nodelocal {\nlocalip 169.254.20.10\nsync 60\n}", true, `sync "60" has no unit: write a duration such as 60s`, nil},
	{"nodelocal {\nlocalip 169.254.20.10\nsync soon\n}", true, `sync "soon" is not a duration`, nil},
	{"nodelocal {\nlocalip 169.254.20.10\nteardown maybe\n}", true, `teardown "maybe": want on, off or handoff`, nil},
	{"nodelocal {\nlocalip 169.254.20.10\nfailopen maybe\n}", true, `failopen "maybe": want on or off`, nil},
	{"nodelocal {\nlocalip 169.254.20.10\nupstreamsvc kube-dns-upstream\nteardown handoff\nfailopen off\n}", true, `teardown handoff needs rules, upstreamsvc and failopen on`, nil},
	{"nodelocal {\nlocalip 169.254.20.10\nteardown handoff\n}", true, `teardown handoff needs rules, upstreamsvc and failopen on`, nil},
	{"nodelocal {\nlocalip 169.254.20.10\nrcvbuf 4G\n}", true, `rcvbuf "4G" is not a size such as 4M`, nil},
	{"nodelocal {\nlocalip 169.254.20.10\nrcvbuf -1M\n}", true, `rcvbuf "-1M" is not a size`, nil},
	{"nodelocal {\nlocalip 169.254.20.10\nrcvbuf 32K\n}", true, `rcvbuf "32K" is out of range: want 64K to 1024M`, nil},
	{"nodelocal {\nlocalip 169.254.20.10\nrcvbuf 2048M\n}", true, `rcvbuf "2048M" is out of range`, nil},
	{"nodelocal {\nlocalip 169.254.20.10\nrcvbuf 4M 8M\n}", true, `rcvbuf wants one value, got 2`, nil},
	{"nodelocal {\nlocalip 169.254.20.10\nfoo bar\n}", true, `unknown setting "foo"`, nil},
	{"nodelocal {\nlocalip 169.254.20.10\nsync 10s\nsync 20s\n}", true, `sync given twice`, nil},
	{"nodelocal 169.254.20.10", true, `unexpected argument "169.254.20.10"`, nil},
	{"nodelocal {\nlocalip 169.254.20.10\nupstreamsvc kube-dns-missing\n}", true, `upstreamsvc "kube-dns-missing": KUBE_DNS_MISSING_SERVICE_HOST is not set`, nil},
}

func TestParse(t *testing.T) {
	t.Setenv("KUBE_DNS_UPSTREAM_SERVICE_HOST", "198.18.0.11")
	for i, tc := range parseTests {
		c := caddy.NewTestController("dns", tc.input)
		c.Next()
		cfg, _, err := parse(c)
		if tc.failing {
			if err == nil {
				t.Errorf("Test %d: expected an error, got none for %q", i, tc.input)
				continue
			}
			if !strings.Contains(err.Error(), tc.expectedErrContent) {
				t.Errorf("Test %d: expected error containing %q, got %q", i, tc.expectedErrContent, err)
			}
			if !strings.Contains(err.Error(), "Testfile:") {
				t.Errorf("Test %d: error does not name the file and line: %q", i, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("Test %d: unexpected error %v", i, err)
			continue
		}
		if tc.check != nil {
			if what := tc.check(cfg); what != "" {
				t.Errorf("Test %d: wrong %s: %+v", i, what, cfg)
			}
		}
	}
}

func TestUpstreamIP(t *testing.T) {
	if got := UpstreamEnv("kube-dns-upstream"); got != "KUBE_DNS_UPSTREAM_SERVICE_HOST" {
		t.Errorf("UpstreamEnv = %q", got)
	}
	t.Setenv("KUBE_DNS_UPSTREAM_SERVICE_HOST", "<nil>")
	if _, err := UpstreamIP("kube-dns-upstream"); err == nil || !strings.Contains(err.Error(), `KUBE_DNS_UPSTREAM_SERVICE_HOST="<nil>" is not an IP address`) {
		t.Errorf("Expected an error quoting the bad value, got %v", err)
	}
	t.Setenv("KUBE_DNS_UPSTREAM_SERVICE_HOST", "2001:2::11")
	if ip, err := UpstreamIP("kube-dns-upstream"); err != nil || ip != netip.MustParseAddr("2001:2::11") {
		t.Errorf("UpstreamIP = %v, %v", ip, err)
	}
}

// TestLocalIPFromBind: when every block has a bare `nodelocal`, the local
// IPs are the bind addresses of all of them, as node-cache holds the
// addresses it binds.
func TestLocalIPFromBind(t *testing.T) {
	in := &instance{pos: "Corefile:2"}
	c := caddy.NewTestController("dns", "nodelocal")
	dnsserver.GetConfig(c).ListenHosts = []string{"169.254.20.10", "198.18.0.10"}
	in.addBindIPs(c, "Corefile:2")
	c = caddy.NewTestController("dns", "nodelocal")
	dnsserver.GetConfig(c).ListenHosts = []string{"198.18.0.10", "2001:2::a"}
	in.addBindIPs(c, "Corefile:7")
	if err := in.localIPsErr(); err != nil || fmt.Sprint(in.cfg.LocalIPs) != "[169.254.20.10 198.18.0.10 2001:2::a]" {
		t.Errorf("Expected the union of the bind addresses as local IPs, got %v, %v", in.cfg.LocalIPs, err)
	}

	c = caddy.NewTestController("dns", "nodelocal")
	dnsserver.GetConfig(c).ListenHosts = []string{"0.0.0.0"}
	in.addBindIPs(c, "Corefile:12")
	if err := in.localIPsErr(); err == nil || !strings.Contains(err.Error(), `Corefile:12: local IPs taken from bind: localip "0.0.0.0" cannot be held`) {
		t.Errorf("Expected an error naming the block and the bind address, got %v", err)
	}

	in = &instance{pos: "Corefile:2"}
	c = caddy.NewTestController("dns", "nodelocal")
	dnsserver.GetConfig(c).ListenHosts = []string{""}
	in.addBindIPs(c, "Corefile:2")
	if err := in.localIPsErr(); err == nil || !strings.Contains(err.Error(), "Corefile:2: no local IP") {
		t.Errorf("Expected an error without bind, got %v", err)
	}
}

// FuzzSetup feeds the directive's setup any text: it never panics, every
// error names the file and line, and what it accepts is a configuration
// the node side can act on.
func FuzzSetup(f *testing.F) {
	f.Setenv("KUBE_DNS_UPSTREAM_SERVICE_HOST", "198.18.0.11")
	for _, tc := range parseTests {
		f.Add(tc.input)
	}
	f.Add("nodelocal {\nlocalip 169.254.20.10\n}\nnodelocal")
	f.Add("nodelocal\nnodelocal {\nlocalip 169.254.20.10\n}")
	f.Fuzz(func(t *testing.T, input string) {
		c := caddy.NewTestController("dns", input)
		dnsserver.GetConfig(c).Port = "53"
		err := newOwner(newFakeSystem()).setup(c)
		if err != nil {
			if !strings.Contains(err.Error(), "Testfile:") {
				t.Errorf("Error does not name the file and line: %q", err)
			}
			return
		}
		in, ok := c.Get(instanceKey{}).(*instance)
		if !ok {
			return // no tokens at all
		}
		if msg := checkConfig(in.cfg, in.explicit); msg != "" {
			t.Errorf("Accepted %q: %s: %+v", input, msg, in.cfg)
		}
	})
}

// checkConfig says what is wrong in a configuration the parser accepted.
func checkConfig(cfg Config, explicit bool) string {
	switch {
	case explicit && len(cfg.LocalIPs) == 0:
		return "settings without local IPs"
	case cfg.Sync < MinSync:
		return "sync below the minimum"
	case cfg.HealthPort < 1 || cfg.HealthPort > 65535:
		return "health port out of range"
	case cfg.RcvBuf != 0 && (cfg.RcvBuf < minRcvBuf || cfg.RcvBuf > maxRcvBuf):
		return "receive buffer out of range"
	case len(cfg.Interface) > 15 || strings.ContainsAny(cfg.Interface, "/: \t\n"):
		return "bad interface name"
	case cfg.StateDir != "" && (!filepath.IsAbs(cfg.StateDir) || filepath.Clean(cfg.StateDir) != cfg.StateDir):
		return "state directory not a clean absolute path"
	case !slices.Contains([]Teardown{TeardownOn, TeardownOff, TeardownHandoff}, cfg.Teardown):
		return "unknown teardown"
	case cfg.Teardown == TeardownHandoff && (cfg.Rules == rules.ModeNone || !cfg.Upstream.IsValid() || !cfg.FailOpen):
		return "handoff without rules, an upstream and failopen"
	case !slices.Contains([]rules.Mode{rules.ModeIptables, rules.ModeNftables, rules.ModeNone}, cfg.Rules):
		return "unknown rules mode"
	case cfg.Rules == rules.ModeIptables && !slices.Contains([]rules.Backend{rules.BackendAuto, rules.BackendLegacy, rules.BackendNft}, cfg.Backend):
		return "unknown iptables backend"
	}
	for i, ip := range cfg.LocalIPs {
		switch {
		case !ip.IsValid(), ip.IsUnspecified(), ip.IsMulticast(), ip.IsLoopback(), ip.Is4In6():
			return "local IP " + ip.String() + " cannot be held"
		case slices.ContainsFunc(cfg.LocalIPs[:i], func(o netip.Addr) bool { return o.WithZone("") == ip.WithZone("") }):
			return "local IP " + ip.String() + " twice"
		}
	}
	return ""
}

// TestStateDirSymlink (issue 18): a state directory that is a symlink (to
// /etc, say), or leads through a symlink someone other than root made, is
// refused at setup, naming it; a root-owned symlink on the way (/var/run
// -> /run) and a directory not there yet are fine.
func TestStateDirSymlink(t *testing.T) {
	tmp := t.TempDir()
	real := filepath.Join(tmp, "real")
	if err := os.Mkdir(real, 0o755); err != nil {
		t.Fatal(err)
	}
	toEtc := filepath.Join(tmp, "to-etc")
	viaRoot := filepath.Join(tmp, "via-root")
	for link, target := range map[string]string{toEtc: "/etc", viaRoot: real} {
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
	}
	file := filepath.Join(tmp, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ dir, wantErr string }{
		{real, ""},
		{filepath.Join(real, "not-yet", "deeper"), ""},
		{toEtc, `statedir "` + toEtc + `" is a symlink (to "/etc")`},
		{filepath.Join(file, "x"), `"` + file + `" is not a directory`},
	}
	if os.Geteuid() == 0 {
		// A root-owned symlink on the way is the system's own; one owned
		// by another user is not.
		tests = append(tests, struct{ dir, wantErr string }{filepath.Join(viaRoot, "sub"), ""})
		byUser := filepath.Join(tmp, "by-user")
		if err := os.Symlink(real, byUser); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(byUser, 1000, 1000); err != nil {
			t.Fatal(err)
		}
		tests = append(tests, struct{ dir, wantErr string }{filepath.Join(byUser, "sub"), `"` + byUser + `" is a symlink (to "` + real + `") owned by uid 1000, not root`})
	} else {
		t.Log("Not root: the symlinks owned by root or another user are not checked")
	}
	for _, tc := range tests {
		c := caddy.NewTestController("dns", "nodelocal {\n\tlocalip 169.254.20.10\n\tstatedir "+tc.dir+"\n}")
		c.Next()
		cfg, _, err := parse(c)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("statedir %s: %v", tc.dir, err)
		case tc.wantErr == "" && cfg.StateDir != tc.dir:
			t.Errorf("statedir %s parsed as %q", tc.dir, cfg.StateDir)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("statedir %s: error %v, want it to contain %s", tc.dir, err, tc.wantErr)
		}
	}
	// Nothing was created where the symlink points.
	if m, _ := filepath.Glob("/etc/instance-*"); len(m) != 0 {
		t.Errorf("Files in /etc: %v", m)
	}
}
