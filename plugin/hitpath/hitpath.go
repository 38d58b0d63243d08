// Package hitpath implements the hitpath plugin: a packet-level answer path
// for cache hits on UDP, in front of the unchanged CoreDNS chain.
//
// CoreDNS hands each UDP listener socket to miekg/dns, which reads one
// packet per system call, starts a goroutine per query, unpacks it, runs
// the whole plugin chain and packs the reply. hitpath serves the socket
// itself instead: it reads and writes in batches (recvmmsg, sendmmsg) and
// answers a query whose reply the cache plugin gave before straight from
// that packet, patching the ID, the name's case and the TTLs, and counting
// the metrics the chain would have counted. Every other query goes to the
// server's ServeDNS, as miekg/dns would have sent it; the chain's cache
// hits teach the fast path its replies.
package hitpath

import (
	"context"
	"fmt"
	"runtime"
	"sync"

	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/plugin/metrics"
	clog "github.com/coredns/coredns/plugin/pkg/log"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

const pluginName = "hitpath"

var log = clog.NewWithPlugin(pluginName)

func init() { plugin.Register(pluginName, setup) }

// HitPath is the plugin in one server block. In the chain, in front of the
// cache, it marks the replies the cache gives from its store, so that the
// listener that handed the query over learns them.
type HitPath struct {
	Next plugin.Handler

	cfg   *dnsserver.Config
	paths *paths

	// Set at start-up by check.
	on          bool
	why         string // why it is off
	labels      labels
	metrics     *metrics.Metrics
	prefetchPct int  // the cache's prefetch PERCENTAGE, 0 without prefetch
	shuffled    bool // loadbalance reorders address records
	staleTTL    bool // the cache gives stale answers a TTL (serve_stale RESPONSE_TTL)
	capacity    int  // the cache's capacity, positive plus denial
	addrs       []string
}

// ServeDNS implements the plugin.Handler interface.
func (h *HitPath) ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	p, ok := ctx.Value(pendingKey{}).(*pending)
	if !ok || !h.on || p.key == "" {
		return plugin.NextOrFailure(h.Name(), h.Next, ctx, w, r)
	}
	tw := &tapWriter{ResponseWriter: w, h: h, p: p, ctx: ctx}
	if h.staleTTL {
		tw.stale = servedStale(metrics.WithServer(ctx), h.labels.cacheZones, metrics.WithView(ctx))
		tw.staleBefore = counterValue(tw.stale)
	}
	return plugin.NextOrFailure(h.Name(), h.Next, ctx, tw, r)
}

// Name implements the plugin.Handler interface.
func (h *HitPath) Name() string { return pluginName }

// zoneOf is the zone label the prometheus plugin gives qname.
func (h *HitPath) zoneOf(qname string) string {
	if z := plugin.Zones(h.metrics.ZoneNames()).Matches(qname); z != "" {
		return z
	}
	return "."
}

// tapWriter notes, on the query's pending, a reply the cache writes from
// its store.
type tapWriter struct {
	dns.ResponseWriter
	h   *HitPath
	p   *pending
	ctx context.Context
	// With a stale TTL: the cache's served-stale counter of the block and
	// its value before the chain ran. When it moved, the reply may be a
	// stale one (or another query's: then a fresh reply goes unlearned
	// once), which the fast path must not learn as fresh.
	stale       prometheus.Counter
	staleBefore float64
}

// WriteMsg implements dns.ResponseWriter.
func (t *tapWriter) WriteMsg(m *dns.Msg) error {
	if fromCacheStore() && (t.stale == nil || counterValue(t.stale) == t.staleBefore) {
		t.p.hit = t.h
		t.p.respLen = m.Len() // what the prometheus plugin records, before the server adds OPT
		t.p.server = metrics.WithServer(t.ctx)
		t.p.view = metrics.WithView(t.ctx)
	}
	return t.ResponseWriter.WriteMsg(m)
}

const (
	cacheServeDNS = "github.com/coredns/coredns/plugin/cache.(*Cache).ServeDNS"
	pluginWriter  = "github.com/coredns/coredns/plugin.(*pluginWriter).WriteMsg"
)

// fromCacheStore reports whether the reply being written comes from the
// cache plugin's ServeDNS itself: a hit served from its store. A miss is
// written by the cache's own ResponseWriter, a prefetch or a refresh not to
// the client at all.
func fromCacheStore() bool {
	var pcs [8]uintptr
	n := runtime.Callers(3, pcs[:]) // the caller of tapWriter.WriteMsg on
	frames := runtime.CallersFrames(pcs[:n])
	for {
		f, more := frames.Next()
		switch f.Function {
		case pluginWriter:
		case cacheServeDNS:
			return true
		default:
			return false
		}
		if !more {
			return false
		}
	}
}

// paths is the state of one CoreDNS instance: its blocks, the fast path's
// store per listen address and the listeners serving its sockets.
type paths struct {
	mu         sync.Mutex
	blocks     []*HitPath
	stores     map[string]*store
	claimed    map[uint64]bool
	before     map[udpSocket]bool // the process's UDP descriptors before the instance's listeners opened
	listeners  []*listener
	restarting bool
	counters   boundCounters
}

// onFor reports whether a block listening on addr has the fast path on.
func (ps *paths) onFor(addr string) bool {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for _, b := range ps.blocks {
		if !b.on {
			continue
		}
		for _, a := range b.addrs {
			if a == addr {
				return true
			}
		}
	}
	return false
}

// maxEntries bounds a store: a few hundred bytes an entry, and the chain
// answers whatever it lacks.
const maxEntries = 10000

// storeFor returns the store of addr, sized for the caches of the blocks
// there, up to maxEntries. ps.mu is held.
func (ps *paths) storeFor(addr string) *store {
	if s, ok := ps.stores[addr]; ok {
		return s
	}
	max := 0
	for _, b := range ps.blocks {
		for _, a := range b.addrs {
			if a == addr && b.on {
				max += b.capacity
			}
		}
	}
	max = min(max, maxEntries)
	s := newStore(max)
	ps.stores[addr] = s
	return s
}

// stopAll stops every listener of the instance.
func (ps *paths) stopAll() error {
	ps.mu.Lock()
	ls := ps.listeners
	ps.listeners = nil
	ps.mu.Unlock()
	for _, l := range ls {
		l.stop()
	}
	return nil
}

var logged sync.Map

// logOnce logs an informational message once per process.
func logOnce(format string, args ...any) {
	msg := format
	if len(args) > 0 {
		msg = fmt.Sprintf(format, args...)
	}
	if _, dup := logged.LoadOrStore(msg, true); !dup {
		log.Info(msg)
	}
}
