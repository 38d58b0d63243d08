package nodelocal

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coredns/caddy"
	clog "github.com/coredns/coredns/plugin/pkg/log"

	"github.com/nodelocaldns/nodelocaldns/plugin/nodelocal/netif"
	"github.com/nodelocaldns/nodelocaldns/plugin/nodelocal/rules"
)

var log = clog.NewWithPlugin(pluginName)

// Process-wide: what is on the host belongs to the process, not to one
// caddy instance, since a reload hands the node from one instance to the next.
var (
	procMu sync.Mutex
	// active is the node whose settings are on the host; nil before the
	// first start and after teardown.
	active *node
	// applied is what the last successful ensure put on the host.
	applied *hostSpec
	// exitHook registers the SIGQUIT teardown once per process.
	exitHook sync.Once
	// loops counts running reconcile loops; there is one per live instance.
	loops atomic.Int32
)

// hostSpec is everything the plugin puts on the host.
type hostSpec struct {
	link  netif.Spec // Name "" when there is no interface
	rules rules.Spec // Mode none when there are no rules
}

// node is the lifecycle of one CoreDNS instance's node state.
type node struct {
	s *shared

	mu       sync.Mutex // serialises ensure and teardown
	host     Host
	ready    atomic.Bool
	torn     bool
	lastErr  string
	stopLoop chan struct{}
	loopDone chan struct{}
}

func newNode(s *shared) *node { return &node{s: s} }

// registerLifecycle hooks the node into the instance's callbacks. Teardown
// lives in OnFinalShutdown (never on a reload) and in the process-exit hook.
func registerLifecycle(c *caddy.Controller, n *node) {
	c.OnStartup(n.startup)
	c.OnShutdown(n.stopReconcile)
	c.OnRestartFailed(n.resume)
	c.OnFinalShutdown(n.finalShutdown)
}

// Ready reports whether the node side is fully in place.
func (n *node) Ready() bool { return n.ready.Load() }

func (n *node) setReady(v bool) {
	n.ready.Store(v)
	if v {
		readyGauge.Set(1)
	} else {
		readyGauge.Set(0)
	}
}

func (n *node) spec() hostSpec {
	cfg := n.s.cfg
	var hs hostSpec
	if cfg.Interface != "" {
		hs.link = netif.Spec{Name: cfg.Interface, Addrs: slices.Clone(cfg.LocalIPs)}
	}
	hs.rules = rules.Spec{
		Mode:       cfg.Rules,
		Backend:    cfg.Backend,
		LocalIPs:   slices.Clone(cfg.LocalIPs),
		DNSPorts:   slices.Clone(n.s.ports),
		HealthPort: cfg.HealthPort,
	}
	return hs
}

// startup ensures the node state before the listeners open (so bind to the
// local IPs succeeds) and starts the reconcile loop. On a process's first
// start a failure removes whatever was added: never a half-installed node.
// On a reload a failure leaves the node as the running instance has it.
func (n *node) startup() error {
	if n.s.bindErr != nil {
		return fmt.Errorf("%s: %s: %w", pluginName, n.s.pos, n.s.bindErr)
	}
	procMu.Lock()
	defer procMu.Unlock()
	n.mu.Lock()
	defer n.mu.Unlock()

	first := active == nil
	if n.host == nil {
		h, err := newHost(n.s.cfg)
		if err != nil {
			return fmt.Errorf("%s: %w", pluginName, err)
		}
		n.host = h
	}
	want := n.spec()
	if _, err := n.transition(applied, want); err != nil {
		if first {
			if rerr := n.remove(want); rerr != nil {
				err = errors.Join(err, fmt.Errorf("undo: %w", rerr))
			}
		}
		return fmt.Errorf("%s: %w", pluginName, err)
	}
	active = n
	n.setReady(true)
	n.startReconcile()
	exitHook.Do(func() { caddy.OnProcessExit = append(caddy.OnProcessExit, processExit) })
	if first {
		log.Infof("Node set up: %s", describe(want))
	}
	return nil
}

// transition moves the host from prev (nil when nothing is known) to want:
// it ensures want, then removes what prev had and want no longer has.
func (n *node) transition(prev *hostSpec, want hostSpec) ([]string, error) {
	changes, err := n.ensure(want)
	if err != nil {
		return changes, err
	}
	applied = &want
	if prev == nil {
		return changes, nil
	}
	if prev.rules.Mode != rules.ModeNone && !sameRuleHome(prev.rules, want.rules) {
		if err := n.host.RemoveRules(prev.rules); err != nil {
			return changes, fmt.Errorf("remove previous rules: %w", err)
		}
	}
	if prev.link.Name != "" {
		stale := prev.link
		if stale.Name == want.link.Name {
			stale.Addrs = slices.DeleteFunc(slices.Clone(stale.Addrs), func(a netip.Addr) bool { return slices.Contains(want.link.Addrs, a) })
		}
		if len(stale.Addrs) > 0 || stale.Name != want.link.Name {
			if err := n.host.RemoveLink(stale); err != nil {
				return changes, fmt.Errorf("remove previous addresses: %w", err)
			}
		}
	}
	return changes, nil
}

// sameRuleHome is true when two rule specs live in the same tables, so
// ensuring one replaces the other.
func sameRuleHome(a, b rules.Spec) bool { return a.Mode == b.Mode && a.Backend == b.Backend }

// ensure puts want on the host: link and addresses first, then rules.
func (n *node) ensure(want hostSpec) ([]string, error) {
	var changes []string
	if want.link.Name != "" {
		c, err := n.host.EnsureLink(want.link)
		changes = append(changes, c...)
		if err != nil {
			countSetupError(err, errInterfaceAdd)
			return changes, fmt.Errorf("interface %s: %w", want.link.Name, err)
		}
	}
	if want.rules.Mode != rules.ModeNone {
		c, err := n.host.EnsureRules(want.rules)
		changes = append(changes, c...)
		if err != nil {
			countSetupError(err, errIptables)
			return changes, fmt.Errorf("rules: %w", err)
		}
	}
	return changes, nil
}

// remove takes the node state away: rules first, so traffic falls back to
// the kube-proxy path, then addresses and link.
func (n *node) remove(hs hostSpec) error {
	var errs []error
	if hs.rules.Mode != rules.ModeNone {
		if err := n.host.RemoveRules(hs.rules); err != nil {
			errs = append(errs, fmt.Errorf("remove rules: %w", err))
		}
	}
	if hs.link.Name != "" {
		if err := n.host.RemoveLink(hs.link); err != nil {
			errs = append(errs, fmt.Errorf("remove interface %s: %w", hs.link.Name, err))
		}
	}
	return errors.Join(errs...)
}

func countSetupError(err error, fallback string) {
	switch {
	case errors.Is(err, rules.ErrLocked):
		setupErrors.WithLabelValues(errIptablesLock).Inc()
	case errors.Is(err, netif.ErrCheck):
		setupErrors.WithLabelValues(errInterfaceCheck).Inc()
	default:
		setupErrors.WithLabelValues(fallback).Inc()
	}
}

// startReconcile starts the loop; called with n.mu held.
func (n *node) startReconcile() {
	if n.stopLoop != nil {
		return
	}
	n.stopLoop, n.loopDone = make(chan struct{}), make(chan struct{})
	go n.reconcileLoop(n.stopLoop, n.loopDone)
}

// stopReconcile stops the loop and waits for it (OnShutdown: also on reload).
func (n *node) stopReconcile() error {
	n.mu.Lock()
	stop, done := n.stopLoop, n.loopDone
	n.stopLoop, n.loopDone = nil, nil
	n.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
	return nil
}

// signalStop ends the loop without waiting for it, for callers that hold
// procMu, which the loop may be waiting for.
func (n *node) signalStop() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.stopLoop != nil {
		close(n.stopLoop)
		n.stopLoop, n.loopDone = nil, nil
	}
}

func (n *node) reconcileLoop(stop <-chan struct{}, done chan<- struct{}) {
	loops.Add(1)
	defer loops.Add(-1)
	defer close(done)
	t := time.NewTicker(n.s.cfg.Sync)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		n.reconcile()
	}
}

// reconcile repairs whatever was removed from under the plugin. Each repair
// is logged and counted; a failure is logged once until it changes, counted
// every time, and makes Ready false until repaired.
func (n *node) reconcile() {
	procMu.Lock()
	defer procMu.Unlock()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.torn || active != n {
		return
	}
	changes, err := n.ensure(n.spec())
	for _, c := range changes {
		what, _, _ := strings.Cut(c, " ")
		repairs.WithLabelValues(what).Inc()
		log.Warningf("Repaired: %s", c)
	}
	if err != nil {
		if msg := err.Error(); msg != n.lastErr {
			log.Errorf("Reconcile: %v", err)
			n.lastErr = msg
		}
		n.setReady(false)
		return
	}
	if n.lastErr != "" {
		log.Infof("Reconcile: node state back in place")
		n.lastErr = ""
	}
	n.setReady(true)
}

// resume runs on the old instance when a reload failed: it keeps serving, so
// its settings go back on the host and its loop keeps running.
func (n *node) resume() error {
	procMu.Lock()
	defer procMu.Unlock()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.torn || n.host == nil {
		return nil
	}
	// The failed instance is dropped without a callback of its own: end
	// its loop here, or it would outlive it.
	if failed := active; failed != nil && failed != n {
		failed.signalStop()
	}
	active = n
	if _, err := n.transition(applied, n.spec()); err != nil {
		n.setReady(false)
		return fmt.Errorf("%s: restore after failed reload: %w", pluginName, err)
	}
	n.setReady(true)
	n.startReconcile()
	return nil
}

// finalShutdown runs on SIGTERM and SIGINT after health's lameduck.
func (n *node) finalShutdown() error {
	if err := n.stopReconcile(); err != nil {
		return err
	}
	return n.teardown()
}

// teardown removes the node state unless `teardown off`; it runs once.
func (n *node) teardown() error {
	procMu.Lock()
	defer procMu.Unlock()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.torn || active != n {
		return nil
	}
	n.torn = true
	n.setReady(false)
	active, applied = nil, nil
	if n.s.cfg.Teardown == TeardownOff {
		log.Infof("Teardown off: leaving %s in place", describe(n.spec()))
		return nil
	}
	if err := n.remove(n.spec()); err != nil {
		return fmt.Errorf("%s: teardown: %w", pluginName, err)
	}
	log.Infof("Node torn down: %s", describe(n.spec()))
	return nil
}

// processExit is the OnProcessExit hook: the only callback SIGQUIT runs.
// After a SIGTERM's final shutdown it finds nothing left to do.
func processExit() {
	procMu.Lock()
	n := active
	procMu.Unlock()
	if n == nil {
		return
	}
	if err := n.teardown(); err != nil {
		log.Error(err)
	}
}

func describe(hs hostSpec) string {
	var parts []string
	if hs.link.Name != "" {
		parts = append(parts, fmt.Sprintf("interface %s with %v", hs.link.Name, hs.link.Addrs))
	} else {
		parts = append(parts, "no interface")
	}
	if hs.rules.Mode != rules.ModeNone {
		parts = append(parts, fmt.Sprintf("%s rules for ports %v and health port %d", hs.rules.Mode, hs.rules.DNSPorts, hs.rules.HealthPort))
	} else {
		parts = append(parts, "no rules")
	}
	return strings.Join(parts, ", ")
}
