package hitpath

import (
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"runtime"
	"strings"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/plugin/cache"
	"github.com/coredns/coredns/plugin/metrics"
)

func setup(c *caddy.Controller) error {
	n := 0
	for c.Next() {
		if n++; n > 1 {
			return plugin.Error(pluginName, c.Errf("%s given more than once in one server block", pluginName))
		}
		if c.NextArg() {
			return plugin.Error(pluginName, c.ArgErr())
		}
		if c.NextBlock() {
			return plugin.Error(pluginName, c.Errf("unknown property %q", c.Val()))
		}
	}
	cfg := dnsserver.GetConfig(c)
	ps := instancePaths(c)
	h := &HitPath{cfg: cfg, paths: ps}
	ps.mu.Lock()
	ps.blocks = append(ps.blocks, h)
	ps.mu.Unlock()
	cfg.UDPDecorateWriterFunc = ps.serveSocket
	cfg.AddPlugin(func(next plugin.Handler) plugin.Handler {
		h.Next = next
		return h
	})
	return nil
}

type pathsKey struct{}

// instancePaths returns the state of c's CoreDNS instance, made (with its
// start-up and shutdown callbacks) by the first block that asks.
func instancePaths(c *caddy.Controller) *paths {
	if ps, ok := c.Get(pathsKey{}).(*paths); ok {
		return ps
	}
	ps := &paths{stores: map[string]*store{}, claimed: map[uint64]bool{}}
	c.Set(pathsKey{}, ps)
	c.OnStartup(ps.check)
	// A reload starts the new instance's listeners (which take the sockets
	// over) and then shuts the old instance down. On SIGTERM there is no
	// restart: the listeners keep answering through health's lameduck and
	// stop at the final shutdown.
	c.OnRestart(func() error { ps.setRestarting(true); return nil })
	c.OnRestartFailed(func() error { ps.setRestarting(false); return nil })
	c.OnShutdown(func() error {
		ps.mu.Lock()
		r := ps.restarting
		ps.mu.Unlock()
		if r {
			return ps.stopAll()
		}
		return nil
	})
	c.OnFinalShutdown(ps.stopAll)
	return ps
}

func (ps *paths) setRestarting(r bool) {
	ps.mu.Lock()
	ps.restarting = r
	ps.mu.Unlock()
}

// check decides, once the servers are built, in which blocks the fast path
// is on, and says in the log where it is off and why.
func (ps *paths) check() error {
	// CoreDNS opens the listeners after OnStartup: every UDP descriptor
	// there now belongs to an older instance (or to something else).
	socks, err := udpSockets(netip.AddrPort{})
	if err != nil {
		return plugin.Error(pluginName, err)
	}
	ps.mu.Lock()
	blocks := ps.blocks
	ps.before = map[udpSocket]bool{}
	for _, s := range socks {
		ps.before[s] = true
	}
	ps.mu.Unlock()
	for _, h := range blocks {
		why := h.check()
		ps.mu.Lock()
		h.on, h.why = why == "", why
		ps.mu.Unlock()
		if why != "" {
			logOnce("Off in server block %s: %s; the CoreDNS chain answers every query there", blockName(h.cfg), why)
		}
	}
	return nil
}

// Plugins that may run in front of the cache in a block with the fast
// path: on a hit they only count (prometheus), pass (errors, nodelocal,
// hitpath) or reorder address records (loadbalance, which the fast path
// copies). Any other plugin there, log, dnstap, rewrite and acl among
// them, must see every query, so the fast path stays off.
var beforeCache = map[string]bool{
	"prometheus":  true,
	"errors":      true,
	"nodelocal":   true,
	"loadbalance": true,
	pluginName:    true,
}

// check returns why the fast path must stay off in h's block, or "".
func (h *HitPath) check() string {
	cfg := h.cfg
	if cfg.Transport != "dns" {
		return fmt.Sprintf("it serves plain DNS only, not %s", cfg.Transport)
	}
	if len(cfg.FilterFuncs) > 0 {
		return "a view chooses the block per query"
	}
	hs := cfg.Handlers()
	if len(hs) != len(cfg.Plugin) {
		return "a plugin whose handler is not named for its directive may need every query"
	}
	var ca *cache.Cache
	for i, hd := range hs {
		name := hd.Name()
		if name == "cache" {
			ca, _ = hd.(*cache.Cache)
			break
		}
		if !beforeCache[name] {
			return fmt.Sprintf("%s must see every query", name)
		}
		switch name {
		case "prometheus":
			h.metrics, _ = hd.(*metrics.Metrics)
			if h.metrics != nil {
				h.labels.metrics = true
				h.labels.plugin = hs[i+1].Name() // the plugin the metrics recorder names
			}
		case "loadbalance":
			if !roundRobin(hd) {
				return "loadbalance orders answers by a policy other than round_robin"
			}
			h.shuffled = true
		}
	}
	if ca == nil {
		return "there is no cache in the block"
	}
	v := reflect.ValueOf(ca).Elem()
	field := func(name string) (reflect.Value, bool) {
		f := v.FieldByName(name)
		return f, f.IsValid()
	}
	keepttl, ok1 := field("keepttl")
	staleTTL, ok2 := field("staleTTL")
	prefetch, ok3 := field("prefetch")
	pct, ok4 := field("percentage")
	pcap, ok5 := field("pcap")
	ncap, ok6 := field("ncap")
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || !ok6 {
		return "this cache plugin's settings are unknown to it"
	}
	if keepttl.Bool() {
		return "the cache keeps TTLs (keepttl) instead of counting them down"
	}
	// A stale answer with a TTL looks fresh; it is told apart by the
	// cache's served-stale counter moving (tapWriter) and never learned.
	h.staleTTL = staleTTL.Int() > 0
	if prefetch.Int() > 0 {
		h.prefetchPct = int(pct.Int())
	}
	h.capacity = int(pcap.Int() + ncap.Int())
	h.labels.cacheZones = strings.Join(ca.Zones, ",")
	h.addrs = nil
	for _, host := range cfg.ListenHosts {
		a, err := net.ResolveTCPAddr("tcp", net.JoinHostPort(host, cfg.Port))
		if err != nil {
			return fmt.Sprintf("listen address %q: %v", host, err)
		}
		h.addrs = append(h.addrs, cfg.Transport+"://"+a.String())
	}
	return ""
}

// blockName names a block in the log: its zone and port.
func blockName(cfg *dnsserver.Config) string {
	return cfg.Zone + ":" + cfg.Port
}

// roundRobin reports whether a loadbalance handler shuffles with its plain
// round_robin policy (not weighted, no preferred subnets), the order the
// fast path copies.
func roundRobin(h plugin.Handler) bool {
	f := reflect.ValueOf(h)
	if f.Kind() == reflect.Pointer {
		f = f.Elem()
	}
	if f.Kind() != reflect.Struct {
		return false
	}
	sh := f.FieldByName("shuffle")
	if !sh.IsValid() || sh.Kind() != reflect.Func || sh.IsNil() {
		return false
	}
	fn := runtime.FuncForPC(sh.Pointer())
	return fn != nil && fn.Name() == "github.com/coredns/coredns/plugin/loadbalance.randomShuffle"
}
