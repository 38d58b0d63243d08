package hitpath

import (
	"errors"
	"strconv"
	"sync"

	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/plugin/metrics/vars"
	"github.com/coredns/coredns/plugin/pkg/rcode"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	dto "github.com/prometheus/client_model/go"
)

// fastHits counts the cache hits the fast path answered itself.
var fastHits = promauto.NewCounterVec(prometheus.CounterOpts{
	Namespace: plugin.Namespace,
	Subsystem: pluginName,
	Name:      "answers_total",
	Help:      "Cache hits answered by the fast path itself, without the plugin chain.",
}, []string{"server"})

// counters are the metrics a cache hit moves, with their labels bound: what
// the prometheus plugin (vars.Report) and the cache plugin count for the
// query the entry answers. prometheus fields are nil when the block has no
// prometheus plugin.
type counters struct {
	do, requests, rcode prometheus.Counter
	duration, reqSize   prometheus.Observer
	respSize            prometheus.Observer
	cacheReq, cacheHit  prometheus.Counter
	fast                prometheus.Counter
}

// count counts one hit answered in seconds with a reply of size bytes to a
// query of qsize bytes.
func (c *counters) count(seconds float64, qsize, size int) {
	if c.requests != nil {
		if c.do != nil {
			c.do.Inc()
		}
		c.requests.Inc()
		c.duration.Observe(seconds)
		c.respSize.Observe(float64(size))
		c.reqSize.Observe(float64(qsize))
		c.rcode.Inc()
	}
	c.cacheReq.Inc()
	c.cacheHit.Inc()
	c.fast.Inc()
}

// The cache plugin's counters are not exported; registering the same
// collector again hands back the one it registered.
var cacheVecs = sync.OnceValues(func() (*prometheus.CounterVec, *prometheus.CounterVec) {
	req := existing(prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace,
		Subsystem: "cache",
		Name:      "requests_total",
		Help:      "The count of cache requests.",
	}, []string{"server", "zones", "view"}))
	hits := existing(prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace,
		Subsystem: "cache",
		Name:      "hits_total",
		Help:      "The count of cache hits.",
	}, []string{"server", "type", "zones", "view"}))
	return req, hits
})

// staleVec is the cache plugin's served-stale counter, found the same way.
var staleVec = sync.OnceValue(func() *prometheus.CounterVec {
	return existing(prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace,
		Subsystem: "cache",
		Name:      "served_stale_total",
		Help:      "The number of requests served from stale cache entries.",
	}, []string{"server", "zones", "view"}))
})

// servedStale is the cache's served-stale counter of one block.
func servedStale(server, zones, view string) prometheus.Counter {
	return staleVec().WithLabelValues(server, zones, view)
}

// counterValue reads a counter.
func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return 0
	}
	return m.GetCounter().GetValue()
}

// existing returns the collector already registered like c, or c once
// registered.
func existing(c *prometheus.CounterVec) *prometheus.CounterVec {
	err := prometheus.DefaultRegisterer.Register(c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if v, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
			return v
		}
	}
	return c
}

// labels are what the counters of a hit are labelled with, besides the
// query's type, DO bit and rcode.
type labels struct {
	server, zone, view, family string
	plugin                     string // responses_total's plugin: the handler after prometheus
	cacheZones                 string
	metrics                    bool // the block has the prometheus plugin
}

// boundCounters caches counters by their labels, so that learning a reply
// does not look up label values each time.
type boundCounters struct {
	mu sync.Mutex
	m  map[counterKey]*counters
}

type counterKey struct {
	l      labels
	qtype  uint16
	do     bool
	rc     int
	denial bool
}

// get returns the counters of a hit with l, for a query of qtype with the DO
// bit do, answered with rcode rc, counted by the cache as denial or not.
func (b *boundCounters) get(l labels, qtype uint16, do bool, rc int, denial bool) *counters {
	typ := "success"
	if denial {
		typ = "denial"
	}
	k := counterKey{l, qtype, do, rc, denial}
	b.mu.Lock()
	defer b.mu.Unlock()
	if c, ok := b.m[k]; ok {
		return c
	}
	req, hits := cacheVecs()
	c := &counters{
		cacheReq: req.WithLabelValues(l.server, l.cacheZones, l.view),
		cacheHit: hits.WithLabelValues(l.server, typ, l.cacheZones, l.view),
		fast:     fastHits.WithLabelValues(l.server),
	}
	if l.metrics {
		if do {
			c.do = vars.RequestDo.WithLabelValues(l.server, l.zone, l.view)
		}
		c.requests = vars.RequestCount.WithLabelValues(l.server, l.zone, l.view, "udp", l.family, qtypeLabel(qtype))
		c.duration = vars.RequestDuration.WithLabelValues(l.server, l.zone, l.view)
		c.respSize = vars.ResponseSize.WithLabelValues(l.server, l.zone, l.view, "udp")
		c.reqSize = vars.RequestSize.WithLabelValues(l.server, l.zone, l.view, "udp")
		c.rcode = vars.ResponseRcode.WithLabelValues(l.server, l.zone, l.view, rcode.ToString(rc), l.plugin)
	}
	if b.m == nil {
		b.m = map[counterKey]*counters{}
	}
	b.m[k] = c
	return c
}

// qtypeLabel is the type label of coredns_dns_requests_total: the type's
// name for the types CoreDNS monitors, else "other" (as in plugin/metrics/vars).
func qtypeLabel(t uint16) string {
	switch t {
	case dns.TypeAAAA, dns.TypeA, dns.TypeCNAME, dns.TypeDNSKEY, dns.TypeDS, dns.TypeMX, dns.TypeNSEC3,
		dns.TypeNSEC, dns.TypeNS, dns.TypePTR, dns.TypeRRSIG, dns.TypeSOA, dns.TypeSRV, dns.TypeTXT,
		dns.TypeHTTPS, dns.TypeSVCB, dns.TypeIXFR, dns.TypeAXFR, dns.TypeANY:
		return dns.Type(t).String()
	}
	return "other"
}

// familyLabel is the family label for a listener on an IPv4 (1) or IPv6 (2)
// address.
func familyLabel(v6 bool) string {
	if v6 {
		return strconv.Itoa(2)
	}
	return strconv.Itoa(1)
}
