package nodecache

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/nodelocaldns/nodelocaldns/plugin/nodelocal"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Defaults of node-cache's flags where they differ from the directive's.
const (
	defaultUpstreamSvc  = "kube-dns"
	defaultBaseCorefile = "/etc/coredns/Corefile.base"
	defaultKubeDNSCM    = "/etc/kube-dns"
	defaultMetricsAddr  = "0.0.0.0:9353"
	defaultResolvConf   = "/etc/resolv.conf"
)

// nodeCacheFlags are the flags node-cache has and CoreDNS has not. Giving
// any of them turns on the compat (template) mode.
var nodeCacheFlags = []string{
	"localip", "upstreamsvc", "setupinterface", "setupiptables", "skipteardown",
	"syncinterval", "interfacename", "health-port", "basecorefile", "kubednscm",
	"metrics-listen-address",
}

// compatFlags holds node-cache's command-line flags. They map onto the
// nodelocal directive (directiveLines) so the directive's parser stays the
// only one; the rest steer the template loader.
type compatFlags struct {
	fs *flag.FlagSet

	localIP        string
	upstreamSvc    string
	setupInterface bool
	setupIptables  bool
	skipTeardown   bool
	syncInterval   syncFlag
	interfaceName  string
	healthPort     int
	baseCorefile   string
	kubeDNSCM      string
	metricsAddr    string
	conf           *confFlag
}

// registerFlags defines node-cache's flags on fs and takes over -conf.
func registerFlags(fs *flag.FlagSet) *compatFlags {
	f := &compatFlags{fs: fs, syncInterval: syncFlag(nodelocal.DefaultSync)}
	fs.StringVar(&f.localIP, "localip", "", "node-cache: comma-separated local IPs to hold on the interface and bind (nodelocal localip)")
	fs.StringVar(&f.upstreamSvc, "upstreamsvc", defaultUpstreamSvc, "node-cache: Service whose ClusterIP fills __PILLAR__CLUSTER__DNS__ (nodelocal upstreamsvc)")
	fs.BoolVar(&f.setupInterface, "setupinterface", true, "node-cache: keep the local interface (false: nodelocal interface none)")
	fs.BoolVar(&f.setupIptables, "setupiptables", true, "node-cache: keep the NOTRACK/ACCEPT rules (false: nodelocal rules none)")
	fs.BoolVar(&f.skipTeardown, "skipteardown", false, "node-cache: leave interface and rules in place on exit (nodelocal teardown off)")
	fs.Var(&f.syncInterval, "syncinterval", "node-cache: reconcile period, seconds (node-cache style) or a duration such as 30s (nodelocal sync)")
	fs.StringVar(&f.interfaceName, "interfacename", "nodelocaldns", "node-cache: name of the local interface (nodelocal interface)")
	fs.IntVar(&f.healthPort, "health-port", nodelocal.DefaultHealthPort, "node-cache: health port whose traffic skips conntrack; follows the template's health line (nodelocal healthport)")
	fs.StringVar(&f.baseCorefile, "basecorefile", defaultBaseCorefile, "node-cache: Corefile template; the rendered Corefile goes to -conf")
	fs.StringVar(&f.kubeDNSCM, "kubednscm", defaultKubeDNSCM, "node-cache: directory of the mounted kube-dns ConfigMap (stubDomains, upstreamNameservers); missing is empty")
	fs.StringVar(&f.metricsAddr, "metrics-listen-address", defaultMetricsAddr, "node-cache: address serving the process's metrics (setup errors); empty: off")
	f.conf = takeOverConf(fs)
	return f
}

// confFlag is the value of -conf once this package owns it.
//
// Why: caddy calls every registered Corefile loader and fails with "loaded
// multiple times" when two return one. In node-cache's DaemonSet -conf names
// the rendered OUTPUT (/etc/Corefile), which coremain's "flag" loader would
// read too: stale, or missing on a first start. Loader order follows package
// init order, so "return nil when the other applies" cannot be decided in
// time. Instead the -conf flag's Value is replaced by Register: coremain's conf
// variable stays "" for good, its loader always returns nil, and the
// nodelocal loader is the one reader of -conf in every mode, doing exactly
// what coremain's loader does when no node-cache flag is given.
type confFlag struct{ path string }

func (c *confFlag) String() string {
	if c == nil {
		return ""
	}
	return c.path
}

func (c *confFlag) Set(v string) error { c.path = v; return nil }

const confUsage = "Corefile `file` to load; with node-cache flags, where the rendered -basecorefile is written (default \"Corefile\")"

func takeOverConf(fs *flag.FlagSet) *confFlag {
	c := &confFlag{}
	if f := fs.Lookup("conf"); f != nil {
		c.path = f.Value.String()
		f.Value = c
		f.Usage = confUsage
		return c
	}
	fs.Var(c, "conf", confUsage)
	return c
}

// syncFlag reads -syncinterval as node-cache users write it, a bare number
// of seconds, or as a real duration (30s, 1m).
type syncFlag time.Duration

func (s *syncFlag) String() string { return time.Duration(*s).String() }

func (s *syncFlag) Set(v string) error {
	if n, err := strconv.Atoi(v); err == nil {
		*s = syncFlag(time.Duration(n) * time.Second)
	} else if d, err := time.ParseDuration(v); err == nil {
		*s = syncFlag(d)
	} else {
		return fmt.Errorf("syncinterval %q: want seconds (10) or a duration (10s)", v)
	}
	if time.Duration(*s) < nodelocal.MinSync {
		return fmt.Errorf("syncinterval %q is below the minimum of %s (node-cache read a bare number as seconds: write 10 or 10s)", v, nodelocal.MinSync)
	}
	return nil
}

// set reports whether the flag was given on the command line.
func (f *compatFlags) set(name string) bool {
	given := false
	f.fs.Visit(func(fl *flag.Flag) {
		if fl.Name == name {
			given = true
		}
	})
	return given
}

// compat reports whether any node-cache flag was given: then the loader
// renders -basecorefile into -conf (node-cache's behaviour).
func (f *compatFlags) compat() bool {
	for _, n := range nodeCacheFlags {
		if f.set(n) {
			return true
		}
	}
	return false
}

// directiveLines maps the flags onto the nodelocal directive's settings.
// templateHealth is the port of the template's health line, 0 if none: the
// directive's healthport follows it, and an explicit -health-port that
// disagrees is an error naming both.
func (f *compatFlags) directiveLines(templateHealth int) ([]string, error) {
	var lines []string
	if f.localIP != "" {
		ips, err := nodelocal.ParseLocalIPs([]string{f.localIP})
		if err != nil {
			return nil, fmt.Errorf("-localip: %w", err)
		}
		lines = append(lines, "localip "+joinAddrs(ips))
	}
	for _, w := range []struct{ flag, v string }{{"interfacename", f.interfaceName}, {"upstreamsvc", f.upstreamSvc}} {
		if err := checkWord(w.flag, w.v); err != nil {
			return nil, err
		}
	}
	if f.setupInterface {
		lines = append(lines, "interface "+f.interfaceName)
	} else {
		lines = append(lines, "interface none")
	}
	if f.setupIptables {
		lines = append(lines, "rules iptables")
	} else {
		lines = append(lines, "rules none")
	}
	lines = append(lines, "upstreamsvc "+f.upstreamSvc)
	hp := f.healthPort
	if templateHealth != 0 {
		if f.set("health-port") && hp != templateHealth {
			return nil, fmt.Errorf("-health-port %d and the template's health port %d differ: make them the same, or drop -health-port to follow the template", hp, templateHealth)
		}
		hp = templateHealth
	}
	lines = append(lines, "healthport "+strconv.Itoa(hp))
	lines = append(lines, "sync "+time.Duration(f.syncInterval).String())
	if f.skipTeardown {
		lines = append(lines, "teardown off")
	} else {
		lines = append(lines, "teardown on")
	}
	return lines, nil
}

// checkWord rejects a flag value that would not stay one token of the
// directive text it becomes: whitespace, quotes, braces or a comment would
// change the Corefile's structure.
func checkWord(flag, v string) error {
	if v == "" {
		return fmt.Errorf("-%s is empty", flag)
	}
	if i := strings.IndexFunc(v, func(r rune) bool {
		return unicode.IsSpace(r) || strings.ContainsRune("{}\"'#`\\", r) || !unicode.IsPrint(r)
	}); i >= 0 {
		return fmt.Errorf("-%s %q: character %q is not allowed in a name", flag, v, []rune(v[i:])[0])
	}
	return nil
}

// check rejects flag combinations that cannot work.
func (f *compatFlags) check() error {
	var errs []error
	if f.conf.path != "" && f.conf.path == f.baseCorefile {
		errs = append(errs, fmt.Errorf("-conf and -basecorefile both name %q: -conf is where the rendered Corefile is written", f.conf.path))
	}
	if f.conf.path == "stdin" {
		errs = append(errs, errors.New("-conf stdin: with node-cache flags -conf is the output file"))
	}
	if b, err := os.ReadFile(f.conf.path); err == nil && bytes.Contains(b, []byte("__PILLAR__")) {
		errs = append(errs, fmt.Errorf("-conf %q holds __PILLAR__ placeholders, but with node-cache flags -conf is where the rendered Corefile is written: give the template with -basecorefile", f.conf.path))
	}
	if f.upstreamSvc == "" {
		errs = append(errs, errors.New("-upstreamsvc is empty"))
	}
	return errors.Join(errs...)
}

var metricsOnce sync.Once

// serveMetrics serves the default prometheus registry (where the setup
// errors counter lives) on -metrics-listen-address, once per process, as
// node-cache does. A failure to listen is logged, not fatal: DNS matters more.
func (f *compatFlags) serveMetrics() {
	addr := strings.TrimSpace(f.metricsAddr)
	if addr == "" {
		return
	}
	metricsOnce.Do(func() {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			log.Errorf("-metrics-listen-address %s: %v", addr, err)
			return
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.Handler())
		go func() {
			if err := http.Serve(ln, mux); err != nil {
				log.Errorf("metrics on %s: %v", addr, err)
			}
		}()
	})
}
