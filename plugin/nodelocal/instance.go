package nodelocal

import (
	"slices"
	"sync/atomic"

	"github.com/coredns/caddy"

	"github.com/nodelocaldns/nodelocaldns/plugin/nodelocal/netif"
	"github.com/nodelocaldns/nodelocaldns/plugin/nodelocal/rules"
)

// instance is one CoreDNS instance's share of the node: its settings, and
// where it stands in the node's lifecycle. The owner's lock guards the
// fields below ready; setup fills the ones above it before anything runs.
type instance struct {
	o *owner

	cfg      Config
	explicit bool   // cfg came from a block with settings, not a bare `nodelocal`
	pos      string // file:line of the block cfg came from
	bindErr  error  // a bare block's bind that cannot be a local IP, until a block with settings comes
	ports    []int  // DNS ports of every block that names the directive

	ready atomic.Bool // read by the ready plugin without the lock

	host       Host
	linkUp     bool // the link and addresses were put in place by this instance
	restarting bool // between OnRestart and the outcome of a reload
	torn       bool
	loop       *reconciler // nil before start and once stopped
}

// register hooks the instance into the caddy instance's callbacks: thin
// adapters to the owner. Teardown lives in OnFinalShutdown (never on a
// reload) and in the process-exit hook; OnShutdown only turns the instance
// not ready when the process is stopping.
func (o *owner) register(c *caddy.Controller, in *instance) {
	c.OnFirstStartup(func() error { return o.firstStartup(in) })
	c.OnStartup(func() error { return o.startup(in) })
	c.OnRestart(func() error { return o.restart(in) })
	c.OnRestartFailed(func() error { return o.resume(in) })
	c.OnShutdown(func() error { return o.shutdown(in) })
	c.OnFinalShutdown(func() error { return o.finalShutdown(in) })
}

// Ready reports whether the node side is fully in place.
func (in *instance) Ready() bool { return in.ready.Load() }

func (in *instance) setReady(v bool) {
	in.ready.Store(v)
	if v {
		readyGauge.Set(1)
	} else {
		readyGauge.Set(0)
	}
}

// spec is what the instance wants on the node.
func (in *instance) spec() hostSpec {
	cfg := in.cfg
	var hs hostSpec
	if cfg.Interface != "" {
		hs.link = netif.Spec{Name: cfg.Interface, Addrs: slices.Clone(cfg.LocalIPs)}
	}
	hs.rules = rules.Spec{
		Mode:       cfg.Rules,
		Backend:    cfg.Backend,
		LocalIPs:   slices.Clone(cfg.LocalIPs),
		DNSPorts:   slices.Clone(in.ports),
		HealthPort: cfg.HealthPort,
		Guard:      cfg.FailOpen,
		Fallback:   fallbackIPs(cfg),
		Upstream:   cfg.Upstream,
	}
	return hs
}

// startLoop starts the instance's reconcile loop unless one runs; called
// with the owner's lock held. With first (the process's first instance)
// the loop first waits for the listeners and steers new queries to them.
func (in *instance) startLoop(first bool) {
	if in.loop != nil {
		return
	}
	in.loop = startReconciler(in, first)
}

// haltLoop ends the loop without waiting for it (it may be waiting for the
// lock the caller holds) and returns it, so a caller without the lock can
// wait for it.
func (in *instance) haltLoop() *reconciler {
	l := in.loop
	in.loop = nil
	if l != nil {
		l.halt()
	}
	return l
}
