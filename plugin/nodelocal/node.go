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
	// me is this process's presence among the instances on the node.
	me *presence
	// exitHook registers the SIGQUIT teardown once per process.
	exitHook sync.Once
	// loops counts running reconcile loops; there is one per live instance.
	loops atomic.Int32
)

// listenWait bounds how long the first start waits for its own listeners
// before it draws traffic with its rules anyway.
const listenWait = 5 * time.Second

// hostSpec is everything the plugin puts on the host.
type hostSpec struct {
	link  netif.Spec // Name "" when there is no interface
	rules rules.Spec // Mode none when there are no rules
}

// node is the lifecycle of one CoreDNS instance's node state.
type node struct {
	s *shared

	mu         sync.Mutex // serialises ensure and teardown
	host       Host
	ready      atomic.Bool
	linkUp     bool // the link and addresses were put in place by this node
	restarting bool // between OnRestart and the outcome of a reload
	handedOver bool // another instance on the node keeps the node state
	torn       bool
	lastErr    string
	rcvBufErr  string // the last failure to raise the listeners' receive buffers, logged once
	stopLoop   chan struct{}
	loopDone   chan struct{}
}

func newNode(s *shared) *node { return &node{s: s} }

// registerLifecycle hooks the node into the instance's callbacks. Teardown
// lives in OnFinalShutdown (never on a reload) and in the process-exit hook;
// OnShutdown only starts the drain, and only when the process is stopping.
func registerLifecycle(c *caddy.Controller, n *node) {
	c.OnFirstStartup(n.firstStartup)
	c.OnStartup(n.startup)
	c.OnRestart(n.restart)
	c.OnRestartFailed(n.resume)
	c.OnShutdown(n.shutdown)
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

// firstStartup runs on the process's first start, before every plugin's
// OnStartup: the link and addresses go in here, so that the listeners other
// plugins open in their OnStartup (health and ready on the local IP, as
// node-cache's template has them) can bind, as the DNS listeners will.
func (n *node) firstStartup() error {
	procMu.Lock()
	defer procMu.Unlock()
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.setupLink()
}

// ensureHost builds the host backend once per node.
func (n *node) ensureHost() error {
	if n.host != nil {
		return nil
	}
	h, err := newHost(n.s.cfg)
	if err != nil {
		return fmt.Errorf("%s: %w", pluginName, err)
	}
	n.host = h
	return nil
}

// setupLink creates the host backend and puts the link and addresses in
// place; a failure removes what it added. Called with procMu and n.mu held.
func (n *node) setupLink() error {
	if n.linkUp {
		return nil
	}
	if n.s.bindErr != nil {
		return fmt.Errorf("%s: %s: %w", pluginName, n.s.pos, n.s.bindErr)
	}
	if err := n.ensureHost(); err != nil {
		return err
	}
	link := n.spec().link
	if link.Name != "" {
		if _, err := n.host.EnsureLink(link); err != nil {
			countSetupError(err, errInterfaceAdd)
			err = fmt.Errorf("interface %s: %w", link.Name, err)
			if rerr := n.host.RemoveLink(link); rerr != nil {
				err = errors.Join(err, fmt.Errorf("undo: %w", rerr))
			}
			return fmt.Errorf("%s: %w", pluginName, err)
		}
	}
	n.linkUp = true
	return nil
}

// startup runs before the DNS listeners open.
//
// When no instance of this process has the node yet (a first start: the
// link is up from firstStartup) it leaves the rules to the reconcile loop,
// which writes them as soon as this process's listeners are open: a
// NOTRACK rule ahead of the listener would turn a query into "connection
// refused", while without it queries to the kube-dns IP still take
// kube-proxy's path (and a handoff path left by a predecessor still works).
//
// On a reload the listeners are handed over open, so everything is ensured
// at once; a failure leaves the node as the running instance has it.
func (n *node) startup() error {
	if n.s.bindErr != nil {
		return fmt.Errorf("%s: %s: %w", pluginName, n.s.pos, n.s.bindErr)
	}
	procMu.Lock()
	defer procMu.Unlock()
	n.mu.Lock()
	defer n.mu.Unlock()

	if active != nil {
		if err := n.ensureHost(); err != nil {
			return err
		}
		if _, err := n.transition(applied, n.spec()); err != nil {
			return fmt.Errorf("%s: %w", pluginName, err)
		}
		active = n
		n.setReady(true)
		n.startReconcile(false)
		return nil
	}

	// A reload that brings nodelocal into a running process has had no
	// firstStartup.
	if err := n.setupLink(); err != nil {
		return err
	}
	if me == nil && n.s.cfg.StateDir != "" {
		p, err := announce(n.s.cfg.StateDir)
		if err != nil {
			log.Warningf("Cannot see other instances on this node, acting as the only one: %v", err)
		}
		me = p
	}
	active = n
	applied = &hostSpec{link: n.spec().link, rules: rules.Spec{Mode: rules.ModeNone}}
	n.startReconcile(true)
	exitHook.Do(func() { caddy.OnProcessExit = append(caddy.OnProcessExit, processExit) })
	return nil
}

// takeover draws the traffic once this process's listeners are open: it
// steers new queries to its own sockets (steer.go), then writes the rules
// and removes a handoff path a predecessor may have left.
func (n *node) takeover(stop <-chan struct{}) {
	hs := n.spec()
	deadline := time.Now().Add(listenWait)
	for !listening(hs.rules.LocalIPs, hs.rules.DNSPorts) {
		if time.Now().After(deadline) {
			log.Warningf("Listeners on %v ports %v not seen after %s: writing the rules anyway", hs.rules.LocalIPs, hs.rules.DNSPorts, listenWait)
			break
		}
		select {
		case <-stop:
			return
		case <-time.After(5 * time.Millisecond):
		}
	}
	if n.s.cfg.StateDir != "" {
		// Part of the coordination between instances, off with it.
		steer(hs.rules.LocalIPs, hs.rules.DNSPorts)
	}
	n.ensureRcvBuf()
	procMu.Lock()
	defer procMu.Unlock()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.torn || active != n {
		return
	}
	if _, err := n.transition(applied, hs); err != nil {
		n.fail(err)
		return
	}
	if hs.rules.Mode == rules.ModeIptables {
		if err := n.host.RemoveHandoff(hs.rules); err != nil {
			n.fail(fmt.Errorf("remove handoff path: %w", err))
			return
		}
	}
	n.setReady(true)
	log.Infof("Node set up: %s", describe(hs))
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

// fail logs a failure once until it changes and makes the cache not ready;
// called with n.mu held.
func (n *node) fail(err error) {
	if msg := err.Error(); msg != n.lastErr {
		log.Errorf("Reconcile: %v", err)
		n.lastErr = msg
	}
	n.setReady(false)
}

// startReconcile starts the loop; called with n.mu held. With takeover the
// loop first waits for the listeners and draws the traffic.
func (n *node) startReconcile(takeover bool) {
	if n.stopLoop != nil {
		return
	}
	n.stopLoop, n.loopDone = make(chan struct{}), make(chan struct{})
	loops.Add(1) // here, not in the goroutine: counted from the moment it exists
	go n.reconcileLoop(takeover, n.stopLoop, n.loopDone)
}

// stopReconcile stops the loop and waits for it.
func (n *node) stopReconcile() {
	n.mu.Lock()
	stop, done := n.stopLoop, n.loopDone
	n.stopLoop, n.loopDone = nil, nil
	n.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
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

func (n *node) reconcileLoop(takeover bool, stop <-chan struct{}, done chan<- struct{}) {
	defer loops.Add(-1)
	defer close(done)
	if takeover {
		n.takeover(stop)
	}
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
	n.ensureRcvBuf()
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
		n.fail(err)
		return
	}
	if n.lastErr != "" {
		log.Infof("Reconcile: node state back in place")
		n.lastErr = ""
	}
	n.setReady(true)
}

// ensureRcvBuf gives the DNS listeners' UDP sockets the configured receive
// buffer; a reload may have opened new ones, so it runs on every reconcile.
// A failure is logged (once until it changes) but does not make the node
// unready: the cache still answers, it only drops more under bursts.
func (n *node) ensureRcvBuf() {
	size := n.s.cfg.RcvBuf
	if size == 0 {
		return
	}
	raised, err := raiseRcvBuf(n.s.cfg.LocalIPs, n.s.ports, size)
	if raised > 0 {
		log.Infof("Receive buffer of %d UDP listener(s) set to %d bytes", raised, size)
	}
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if msg != "" && msg != n.rcvBufErr {
		log.Warningf("Cannot raise the listeners' receive buffer to %d bytes: %v", size, err)
	}
	n.rcvBufErr = msg
}

// restart marks the start of a reload (OnRestart of the running instance).
func (n *node) restart() error {
	n.mu.Lock()
	n.restarting = true
	n.mu.Unlock()
	return nil
}

// resume runs on the old instance when a reload failed: it keeps serving, so
// its settings go back on the host and its loop keeps running.
func (n *node) resume() error {
	procMu.Lock()
	defer procMu.Unlock()
	n.mu.Lock()
	defer n.mu.Unlock()
	n.restarting = false
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
	n.startReconcile(false)
	return nil
}

// shutdown is OnShutdown. On a reload it only stops this instance's loop
// (the new instance has taken the node over). When the process is stopping
// (SIGTERM, SIGINT) it is the first step of the drain, before health's
// lameduck: the cache turns not ready and stops drawing the traffic that has
// another path, the local IPs kube-proxy also serves (the kube-dns
// ClusterIP): their rules go, so new queries reach CoreDNS through
// kube-proxy while this process answers what it holds and still serves the
// link-local IP. Their addresses go with the rest at the final shutdown.
// Nothing is removed while another instance runs on the node.
func (n *node) shutdown() error {
	n.stopReconcile()
	procMu.Lock()
	defer procMu.Unlock()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.restarting {
		n.restarting = false
		if active == n && !n.torn {
			// The new Corefile has no nodelocal: nothing manages the node any more.
			return n.teardownLocked("the new Corefile has no nodelocal")
		}
		return nil
	}
	if active != n || n.torn {
		return nil
	}
	n.setReady(false)
	if peers := n.peers(); peers > 0 {
		n.handedOver = true
		log.Infof("Stopping: %d other instance(s) on this node keep the interface and rules", peers)
		return nil
	}
	if n.s.cfg.Teardown == TeardownOff || applied == nil {
		return nil
	}
	var keep, fallback []netip.Addr
	for _, ip := range n.s.cfg.LocalIPs {
		if ip.IsLinkLocalUnicast() {
			keep = append(keep, ip)
		} else {
			fallback = append(fallback, ip)
		}
	}
	if len(fallback) == 0 {
		return nil
	}
	// Only the rules go now. The addresses stay until the final shutdown:
	// queries this process already holds (in its socket queues, or waiting
	// on the upstream) are answered from those addresses, and a reply from
	// an address the node no longer has is lost, a 5 s stall for its
	// client. Without the NOTRACK rules kube-proxy's DNAT takes every new
	// query to those IPs, address or not.
	if applied.rules.Mode == rules.ModeNone {
		return nil
	}
	reduced := *applied
	reduced.rules.LocalIPs = keep
	if len(keep) == 0 {
		log.Infof("Stopping: rules for %v go so pods fall back to kube-proxy; answering what is in flight", fallback)
		if err := n.host.RemoveRules(reduced.rules); err != nil {
			return fmt.Errorf("%s: drain: %w", pluginName, err)
		}
	} else {
		log.Infof("Stopping: rules for %v go so pods fall back to kube-proxy; still answering on %v", fallback, keep)
		if _, err := n.host.EnsureRules(reduced.rules); err != nil {
			return fmt.Errorf("%s: drain: %w", pluginName, err)
		}
	}
	applied = &reduced
	return nil
}

// peers counts the other live instances on the node; 0 when unknown.
func (n *node) peers() int {
	if me == nil {
		return 0
	}
	c, err := me.others()
	if err != nil {
		log.Warningf("Cannot see other instances on this node: %v", err)
		return 0
	}
	return c
}

// finalShutdown runs on SIGTERM and SIGINT after health's lameduck.
func (n *node) finalShutdown() error {
	n.stopReconcile()
	return n.teardown()
}

// teardown removes the node state unless `teardown off` or another instance
// on the node keeps it; it runs once.
func (n *node) teardown() error {
	procMu.Lock()
	defer procMu.Unlock()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.torn || active != n {
		return nil
	}
	return n.teardownLocked("")
}

// teardownLocked is teardown with procMu and n.mu held.
func (n *node) teardownLocked(why string) error {
	n.torn = true
	n.setReady(false)
	hs := applied
	active, applied = nil, nil
	defer func() {
		if me != nil {
			me.leave()
			me = nil
		}
	}()
	if hs == nil {
		return nil
	}
	if peers := n.peers(); n.handedOver || peers > 0 {
		log.Infof("Leaving %s to the other instance(s) on this node", describe(*hs))
		return nil
	}
	if n.s.cfg.Teardown == TeardownOff && why == "" {
		log.Infof("Teardown off: leaving %s in place", describe(*hs))
		return nil
	}
	if n.s.cfg.Teardown == TeardownHandoff && why == "" {
		return n.handoff(*hs)
	}
	if err := n.remove(*hs); err != nil {
		return fmt.Errorf("%s: teardown: %w", pluginName, err)
	}
	if why != "" {
		why = " (" + why + ")"
	}
	log.Infof("Node torn down%s: %s", why, describe(*hs))
	return nil
}

// handoff leaves a path from the local IPs to the cluster DNS for the time
// no cache runs (IPVS mode, where pods know only the local IP): the DNAT
// goes in first, then the NOTRACK rules go so it takes effect; the link and
// addresses stay. The next start removes the path.
func (n *node) handoff(hs hostSpec) error {
	if err := n.host.EnsureHandoff(hs.rules, n.s.cfg.Upstream); err != nil {
		err = fmt.Errorf("%s: handoff path: %w", pluginName, err)
		if rerr := n.remove(hs); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return err
	}
	if err := n.host.RemoveRules(hs.rules); err != nil {
		return fmt.Errorf("%s: teardown: %w", pluginName, err)
	}
	log.Infof("Handed off: DNS to %v goes to %s until the next start", hs.rules.LocalIPs, n.s.cfg.Upstream)
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
	n.signalStop()
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
