package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/miekg/dns"
)

// UpstreamEnv is what kubelet sets for the kube-dns-upstream Service.
var UpstreamEnv = "KUBE_DNS_UPSTREAM_SERVICE_HOST=" + KubeDNSUpIP

// Cache is the running node cache.
type Cache struct {
	lab  *Lab
	Proc *Proc
	Conf string // the Corefile it runs
}

// StartCache starts the node cache in the node namespace exactly as the
// DaemonSet container runs it (bin/coredns -conf <the project's node
// Corefile>, KUBE_DNS_UPSTREAM_SERVICE_HOST from kubelet) and waits until
// it answers on 169.254.20.10 and has its rules in.
func (l *Lab) StartCache(ctx context.Context) (*Cache, error) {
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
	return l.StartCacheConf(ctx, string(src))
}

// StartCacheConf is StartCache with a Corefile of the caller's.
func (l *Lab) StartCacheConf(ctx context.Context, corefile string) (*Cache, error) {
	c, err := l.startCache(ctx, corefile)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.cache = c
	l.mu.Unlock()
	return c, nil
}

var errExited = errors.New("exited")

func (l *Lab) startCache(ctx context.Context, corefile string) (*Cache, error) {
	if !strings.Contains(corefile, "statedir") {
		// The lab's node has its own /run: instances of other labs or tests
		// on this machine must not count as this node's.
		corefile = strings.Replace(corefile, "nodelocal {", "nodelocal {\n        statedir "+filepath.Join(l.Dir, "run"), 1)
	}
	conf := filepath.Join(l.Dir, "node.Corefile")
	if err := os.WriteFile(conf, []byte(corefile), 0o644); err != nil {
		return nil, err
	}
	p, err := l.start(l.Node, "node-cache", []string{UpstreamEnv}, l.Bin("coredns"), "-conf", conf)
	if err != nil {
		return nil, err
	}
	c := &Cache{lab: l, Proc: p, Conf: conf}
	// With nodelocal's metrics where CacheMetrics looks, wait for its rules too.
	waitReady := strings.Contains(corefile, "nodelocal") && strings.Contains(corefile, "prometheus :9253")
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
		if !waitReady {
			return nil
		}
		return nodeSetUp(l.Node)
	})
	if err != nil {
		p.Stop(10 * time.Second)
		return nil, fmt.Errorf("node cache did not come up: %w; its log:\n%s", err, p.Tail(15))
	}
	l.cfg.Logf("node cache up (pid %d)", p.PID())
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
	return c.Proc.Stop(20 * time.Second)
}

// Signal sends sig to the cache process.
func (c *Cache) Signal(sig syscall.Signal) error { return c.Proc.Signal(sig) }

// Metrics returns the cache's prometheus text, fetched inside the node.
func (c *Cache) Metrics() (string, error) { return HTTPGet(c.lab.Node, CacheMetrics, "/metrics") }
