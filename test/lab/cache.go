package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/miekg/dns"
)

// HostSetup says who puts the cache's link, addresses and NOTRACK rules on
// the node.
type HostSetup string

const (
	// HostPlugin: the nodelocal directive does it, as in production.
	HostPlugin HostSetup = "plugin"
	// HostLab: the lab does it with ip and iptables and starts the cache with
	// the nodelocal lines taken out of the Corefile. A stand-in for as long
	// as the build's host backends are missing.
	HostLab HostSetup = "lab"
	// HostAuto tries HostPlugin and falls back to HostLab when the binary
	// says its host backends are not built.
	HostAuto HostSetup = "auto"
)

// errNoBackends is the start-up failure of a build without host backends.
const errNoBackends = "host backends not built yet"

// UpstreamEnv is what kubelet sets for the kube-dns-upstream Service.
var UpstreamEnv = "KUBE_DNS_UPSTREAM_SERVICE_HOST=" + KubeDNSUpIP

// Cache is the running node cache.
type Cache struct {
	lab   *Lab
	Proc  *Proc
	Setup HostSetup // HostPlugin or HostLab: what this start used
	Conf  string    // the Corefile it runs
}

// StartCache starts the node cache in the node namespace exactly as the
// DaemonSet container runs it (bin/coredns -conf <the project's node
// Corefile>, KUBE_DNS_UPSTREAM_SERVICE_HOST from kubelet) and waits until
// it answers on 169.254.20.10.
func (l *Lab) StartCache(ctx context.Context, setup HostSetup) (*Cache, error) {
	l.mu.Lock()
	if l.cache != nil {
		l.mu.Unlock()
		return nil, errors.New("the node cache is already running")
	}
	l.mu.Unlock()
	src, err := os.ReadFile(filepath.Join(l.cfg.Root, "Corefile.example"))
	if err != nil {
		return nil, err
	}
	return l.StartCacheConf(ctx, setup, string(src))
}

// StartCacheConf is StartCache with a Corefile of the caller's. With
// HostAuto a failed start with the nodelocal directive is logged and
// retried with the lab's stand-in, so the demo still compares the paths.
func (l *Lab) StartCacheConf(ctx context.Context, setup HostSetup, corefile string) (*Cache, error) {
	var c *Cache
	var err error
	switch {
	case setup == HostAuto && !l.HasHostBackends():
		l.cfg.Logf("bin/coredns has no nodelocal host backends yet (%q): the lab sets up the link and NOTRACK rules itself and runs the Corefile without nodelocal", errNoBackends)
		c, err = l.startCache(ctx, corefile, HostLab)
	case setup == HostAuto:
		c, err = l.startCache(ctx, corefile, HostPlugin)
		if err != nil {
			l.cfg.Logf("WARNING: the node cache did not start with the nodelocal directive doing the node set-up: %v", err)
			l.cfg.Logf("falling back to the lab's stand-in (link and NOTRACK rules set up by the lab, Corefile without nodelocal)")
			c, err = l.startCache(ctx, corefile, HostLab)
		}
	default:
		c, err = l.startCache(ctx, corefile, setup)
	}
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.cache = c
	l.mu.Unlock()
	return c, nil
}

var errExited = errors.New("exited")

// HasHostBackends reports whether bin/coredns was built with the nodelocal
// plugin's real host backends: the stub they replace carries errNoBackends.
func (l *Lab) HasHostBackends() bool { return HasHostBackends(l.Bin("coredns")) }

// HasHostBackends reports whether the coredns binary at path has the
// nodelocal plugin's real host backends.
func HasHostBackends(path string) bool {
	b, err := os.ReadFile(path)
	return err == nil && !bytes.Contains(b, []byte(errNoBackends))
}

func (l *Lab) startCache(ctx context.Context, corefile string, setup HostSetup) (*Cache, error) {
	if setup == HostLab {
		corefile = withoutNodelocal(corefile)
		if err := l.labLink(ctx, true); err != nil {
			return nil, err
		}
	}
	if setup == HostPlugin && !strings.Contains(corefile, "statedir") {
		// The lab's node has its own /run: instances of other labs or tests
		// on this machine must not count as this node's.
		corefile = strings.Replace(corefile, "nodelocal {", "nodelocal {\n        statedir "+filepath.Join(l.Dir, "run"), 1)
	}
	conf := filepath.Join(l.Dir, "node-"+string(setup)+".Corefile")
	if err := os.WriteFile(conf, []byte(corefile), 0o644); err != nil {
		return nil, err
	}
	p, err := l.start(l.Node, "node-cache", []string{UpstreamEnv}, l.Bin("coredns"), "-conf", conf)
	if err != nil {
		return nil, err
	}
	c := &Cache{lab: l, Proc: p, Setup: setup, Conf: conf}
	err = waitFor(ctx, 15*time.Second, func() error {
		if p.Exited() {
			return errExited
		}
		r, err := Query(l.Node, LocalIP, Services[0].Name, "A", false)
		if err != nil {
			return err
		}
		if r.Rcode != dns.RcodeSuccess {
			return fmt.Errorf("rcode %s", dns.RcodeToString[r.Rcode])
		}
		return nil
	})
	if err != nil {
		p.Stop(10 * time.Second)
		if setup == HostLab {
			l.labLink(ctx, false)
		}
		return nil, fmt.Errorf("node cache (%s setup) did not come up: %w; its log:\n%s", setup, err, p.Tail(15))
	}
	if setup == HostLab {
		// The rules come once the cache answers, so pods switch from the
		// kube-proxy path to a listening cache without a refused query.
		if err := l.labRules(ctx, true); err != nil {
			p.Stop(10 * time.Second)
			l.labRules(ctx, false)
			l.labLink(ctx, false)
			return nil, err
		}
	}
	l.cfg.Logf("node cache up (pid %d, host set up by %s)", p.PID(), setup)
	return c, nil
}

// Stop ends the cache with SIGTERM, as the kubelet does, and waits for it
// (the health plugin's lameduck keeps it answering for 5 s first).
func (c *Cache) Stop() error {
	c.lab.mu.Lock()
	if c.lab.cache == c {
		c.lab.cache = nil
	}
	c.lab.mu.Unlock()
	if c.Setup != HostLab {
		return c.Proc.Stop(20 * time.Second)
	}
	// As the plugin's final shutdown does while health's lameduck keeps the
	// cache answering: rules first, so traffic falls back to kube-proxy at
	// once, then the addresses; then the process ends.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := c.lab.labRules(ctx, false)
	err = errors.Join(err, c.Proc.Stop(20*time.Second))
	return errors.Join(err, c.lab.labLink(ctx, false))
}

// Signal sends sig to the cache process.
func (c *Cache) Signal(sig syscall.Signal) error { return c.Proc.Signal(sig) }

// Metrics returns the cache's prometheus text, fetched inside the node.
func (c *Cache) Metrics() (string, error) { return HTTPGet(c.lab.Node, CacheMetrics, "/metrics") }

var nodelocalBlock = regexp.MustCompile(`(?m)^[ \t]*nodelocal\b[^\n{]*(\{[^}]*\})?[^\n]*\n`)

// withoutNodelocal takes the nodelocal directive out of a Corefile.
func withoutNodelocal(corefile string) string { return nodelocalBlock.ReplaceAllString(corefile, "") }

// labLink adds (or removes) a port-less bridge "nodelocaldns" holding the
// local IPs, as the nodelocal plugin does on kernels without dummy.
func (l *Lab) labLink(ctx context.Context, add bool) error {
	if !add {
		if _, err := nsRun(ctx, l.Node, "ip", "link", "del", "nodelocaldns"); err != nil && !strings.Contains(err.Error(), "Cannot find device") {
			return err
		}
		return nil
	}
	steps := [][]string{{"ip", "link", "add", "nodelocaldns", "type", "bridge"}}
	for _, ip := range []string{LocalIP, KubeDNSIP} {
		steps = append(steps, []string{"ip", "addr", "add", ip + "/32", "dev", "nodelocaldns"})
	}
	steps = append(steps, []string{"ip", "link", "set", "nodelocaldns", "up"})
	for _, s := range steps {
		if _, err := nsRun(ctx, l.Node, s[0], s[1:]...); err != nil {
			return err
		}
	}
	return nil
}

// labRules adds (or removes) node-cache's NOTRACK and ACCEPT rules, at the
// top of the built-in chains as node-cache inserts them.
func (l *Lab) labRules(ctx context.Context, add bool) error {
	var rules [][]string
	for _, ip := range []string{LocalIP, KubeDNSIP} {
		for _, proto := range []string{"udp", "tcp"} {
			rules = append(rules,
				[]string{"raw", "PREROUTING", "-p", proto, "-d", ip, "--dport", "53", "-j", "NOTRACK"},
				[]string{"raw", "OUTPUT", "-p", proto, "-s", ip, "--sport", "53", "-j", "NOTRACK"},
				[]string{"raw", "OUTPUT", "-p", proto, "-d", ip, "--dport", "53", "-j", "NOTRACK"},
				[]string{"filter", "INPUT", "-p", proto, "-d", ip, "--dport", "53", "-j", "ACCEPT"},
				[]string{"filter", "OUTPUT", "-p", proto, "-s", ip, "--sport", "53", "-j", "ACCEPT"},
			)
		}
		rules = append(rules,
			[]string{"raw", "OUTPUT", "-p", "tcp", "-d", ip, "--dport", "8080", "-j", "NOTRACK"},
			[]string{"raw", "OUTPUT", "-p", "tcp", "-s", ip, "--sport", "8080", "-j", "NOTRACK"},
		)
	}
	comment := []string{"-m", "comment", "--comment", "nodelocaldns lab stand-in"}
	op := "-I"
	if !add {
		op = "-D"
	}
	for _, r := range rules {
		args := append(append([]string{"-w", "5", "-t", r[0], op, r[1]}, r[2:len(r)-2]...), append(comment, r[len(r)-2:]...)...)
		if !add {
			// Every copy, in case one was added twice.
			for i := 0; i < 5; i++ {
				if _, err := nsRun(ctx, l.Node, "iptables", args...); err != nil {
					break
				}
			}
			continue
		}
		if _, err := nsRun(ctx, l.Node, "iptables", args...); err != nil {
			return err
		}
	}
	return nil
}
