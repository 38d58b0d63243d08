package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/miekg/dns"

	"github.com/nodelocaldns/nodelocaldns/internal/cachesize"
)

// UpstreamEnv is what kubelet sets for the kube-dns-upstream Service.
var UpstreamEnv = "KUBE_DNS_UPSTREAM_SERVICE_HOST=" + KubeDNSUpIP

// StockEnv is the environment a CoreDNS other than bin/coredns needs for the
// project's Corefiles: the kubelet's upstream variable and the cache
// capacities bin/coredns would set itself (those of a pod without a memory
// limit).
func StockEnv() []string {
	env := []string{UpstreamEnv}
	for _, v := range []string{cachesize.EnvSuccess, cachesize.EnvDenial, cachesize.EnvOther} {
		env = append(env, fmt.Sprintf("%s=%d", v, cachesize.MaxCapacity))
	}
	return env
}

// Cache is one running node cache instance. Usually there is one per
// node; a surge rollout runs a second beside it.
type Cache struct {
	lab  *Lab
	Proc *Proc
	Conf string // the Corefile it runs; the reload plugin watches it
	src  string // the Corefile as the caller gave it
}

// StartCache starts the node cache in the node namespace exactly as the
// DaemonSet container runs it (bin/coredns -conf <the project's node
// Corefile>, KUBE_DNS_UPSTREAM_SERVICE_HOST from kubelet) and waits until
// it is ready.
func (l *Lab) StartCache(ctx context.Context) (*Cache, error) {
	if l.Caches() > 0 {
		return nil, errors.New("the node cache is already running")
	}
	src, err := l.exampleCorefile()
	if err != nil {
		return nil, err
	}
	return l.StartCacheConf(ctx, src)
}

// exampleCorefile is the repository's Corefile.example: the node Corefile
// the DaemonSet ships.
func (l *Lab) exampleCorefile() (string, error) {
	b, err := os.ReadFile(filepath.Join(l.cfg.Root, "Corefile.example"))
	return string(b), err
}

// NodeCorefile is Corefile.example as the lab's node cache runs it.
func (l *Lab) NodeCorefile() (string, error) {
	src, err := l.exampleCorefile()
	if err != nil {
		return "", err
	}
	return l.withStatedir(src), nil
}

// withStatedir gives the Corefile's nodelocal block a statedir in the run
// directory unless it names one: the lab's node has its own /run, so
// instances of other labs or tests on this machine must not count as this
// node's.
func (l *Lab) withStatedir(corefile string) string {
	if strings.Contains(corefile, "statedir") {
		return corefile
	}
	return strings.Replace(corefile, "nodelocal {", "nodelocal {\n        statedir "+filepath.Join(l.Dir, "run"), 1)
}

// StartCacheConf starts a cache instance with a Corefile of the caller's
// and waits until it answers on 169.254.20.10 and, when the Corefile has
// nodelocal, until the instance itself logs that the node is set up (its
// readiness: with a surge instance beside it, an answer or the shared ready
// port may come from the other one). Instances already running stay: a
// second call is a surge rollout's new pod.
func (l *Lab) StartCacheConf(ctx context.Context, corefile string) (*Cache, error) {
	return l.StartCacheEnv(ctx, corefile)
}

// StartCacheEnv is StartCacheConf with more environment for the process
// (NAME=value), for example a memory limit (NODELOCAL_MEMORY_LIMIT).
func (l *Lab) StartCacheEnv(ctx context.Context, corefile string, env ...string) (*Cache, error) {
	c, err := l.startCache(ctx, corefile, env)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.caches = append(l.caches, c)
	l.mu.Unlock()
	return c, nil
}

// Caches counts the cache instances the lab runs.
func (l *Lab) Caches() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.caches)
}

var errExited = errors.New("exited")

// setUpLine is what nodelocal logs once it has taken the node over and
// turned ready.
const setUpLine = "plugin/nodelocal: Node set up"

func (l *Lab) startCache(ctx context.Context, corefile string, env []string) (*Cache, error) {
	src := corefile
	corefile = l.withStatedir(corefile)
	l.mu.Lock()
	l.started++
	name := "node-cache"
	if l.started > 1 {
		name = fmt.Sprintf("node-cache-%d", l.started)
	}
	l.mu.Unlock()
	conf := filepath.Join(l.Dir, name+".Corefile")
	if err := os.WriteFile(conf, []byte(corefile), 0o644); err != nil {
		return nil, err
	}
	p, err := l.start(l.Node, name, l.cfg.ServerCPU, append([]string{UpstreamEnv}, env...), l.Bin("coredns"), "-conf", conf)
	if err != nil {
		return nil, err
	}
	c := &Cache{lab: l, Proc: p, Conf: conf, src: src}
	managed := strings.Contains(corefile, "nodelocal")
	if err := l.waitCacheUp(ctx, p, managed); err != nil {
		p.Stop(10 * time.Second)
		return nil, fmt.Errorf("node cache did not come up: %w; its log:\n%s", err, p.Tail(15))
	}
	l.cfg.Logf("node cache up (pid %d)", p.PID())
	return c, nil
}

// waitCacheUp waits until the cache process p answers on 169.254.20.10
// and, when it manages the node, has logged that the node is set up.
func (l *Lab) waitCacheUp(ctx context.Context, p *Proc, managed bool) error {
	return waitFor(ctx, 15*time.Second, func() error {
		if p.Exited() {
			return errExited
		}
		if managed && !p.Logged(setUpLine) {
			return errors.New("not set up yet")
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
}

// Stop ends the cache with SIGTERM, as the kubelet does, and waits for it
// (the health plugin's lameduck keeps it answering for 5 s first).
func (c *Cache) Stop() error {
	c.forget()
	return c.Proc.Stop(20 * time.Second)
}

// Kill ends the cache with SIGKILL, as a crash or the OOM killer does
// (kubelet's containers have memory.oom.group: every process of the
// container at once), and waits for it: nothing of its own clean-up runs.
// The server child is killed beside its supervising parent, not left to
// the parent's death signal, which would let it answer for a moment more.
func (c *Cache) Kill() error {
	c.forget()
	server := c.Proc.ServerPID()
	if err := c.Proc.Signal(syscall.SIGKILL); err != nil && !c.Proc.Exited() {
		return err
	}
	if server != c.Proc.PID() {
		syscall.Kill(server, syscall.SIGKILL)
	}
	if !c.Proc.Wait(5 * time.Second) {
		return fmt.Errorf("%s (pid %d) does not end after SIGKILL", c.Proc.Name, c.Proc.PID())
	}
	for deadline := time.Now().Add(5 * time.Second); server != c.Proc.PID(); time.Sleep(5 * time.Millisecond) {
		if !alive(server) {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s's server (pid %d) does not end after SIGKILL", c.Proc.Name, server)
		}
	}
	return nil
}

// alive reports whether pid runs (a zombie, dead but not yet reaped, does
// not).
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses.
	i := bytes.LastIndexByte(stat, ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] != 'Z'
}

// KillCaches SIGKILLs every cache instance.
func (l *Lab) KillCaches() error {
	l.mu.Lock()
	caches := slices.Clone(l.caches)
	l.mu.Unlock()
	var errs []error
	for _, c := range caches {
		errs = append(errs, c.Kill())
	}
	return errors.Join(errs...)
}

// forget drops the instance from the lab's list.
func (c *Cache) forget() {
	c.lab.mu.Lock()
	defer c.lab.mu.Unlock()
	c.lab.caches = slices.DeleteFunc(c.lab.caches, func(o *Cache) bool { return o == c })
}

// Signal sends sig to the cache process.
func (c *Cache) Signal(sig syscall.Signal) error { return c.Proc.Signal(sig) }

// Metrics returns the cache's prometheus text, fetched inside the node.
func (c *Cache) Metrics() (string, error) { return HTTPGet(c.lab.Node, CacheMetrics, "/metrics") }

// RSS is the cache process's resident memory (VmRSS), in bytes.
func (c *Cache) RSS() (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.Proc.PID()))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", c.Proc.PID())
}
