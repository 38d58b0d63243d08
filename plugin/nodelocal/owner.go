package nodelocal

import (
	"errors"
	"fmt"
	"sync"

	"github.com/coredns/caddy"
	clog "github.com/coredns/coredns/plugin/pkg/log"

	"github.com/nodelocaldns/nodelocaldns/plugin/nodelocal/rules"
)

var log = clog.NewWithPlugin(pluginName)

// owner holds the node for the process. What is on the node belongs to the
// process, not to one CoreDNS instance, since a reload hands the node from
// one instance to the next. Its one lock guards its fields and the
// lifecycle fields of every instance; every transition takes it.
type owner struct {
	sys System // every effect on the node goes through it

	mu sync.Mutex
	// active is the instance whose settings are on the node; nil before
	// the first start and after teardown.
	active *instance
	// applied is what the last successful ensure put on the node.
	applied *hostSpec
	// me is this process's presence among the instances on the node.
	me Presence
	// exitHooked is set once the process-exit hook is registered.
	exitHooked bool
}

// process is the owner of the node for this process.
var process = newOwner(realSystem{})

// newOwner returns an owner whose effects on the node go through sys.
func newOwner(sys System) *owner { return &owner{sys: sys} }

// firstStartup runs on the process's first start, before every plugin's
// OnStartup: the link and addresses go in here, so that the listeners other
// plugins open in their OnStartup (health and ready on the local IP, as
// node-cache's template has them) can bind, as the DNS listeners will.
func (o *owner) firstStartup(in *instance) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.setupLink(in)
}

// startup runs before the DNS listeners open. Everything goes on the node
// at once, rules included: with `failopen on` a NOTRACK rule matches only
// packets a socket of the cache takes, so rules ahead of the listeners
// divert nothing yet, and the first query the listeners can take is
// theirs. (Without the socket match, or with `failopen off`, the rules are
// node-cache's and a query in the milliseconds before the listeners open
// is refused, as with node-cache.)
//
// On a reload the listeners are handed over open; a failure leaves the
// node as the running instance has it. On the process's first start a
// failure to write the rules is left to the reconcile loop to retry (the
// instance is not ready until then): the link is up and the guard lets
// traffic through to its other paths meanwhile.
func (o *owner) startup(in *instance) error {
	if err := in.localIPsErr(); err != nil {
		return err
	}
	o.mu.Lock()
	defer o.mu.Unlock()

	if o.active != nil {
		if err := o.ensureHost(in); err != nil {
			return err
		}
		o.checkGuard(in)
		o.publish(in)
		unlock := o.lockNode()
		defer unlock()
		if err := o.apply(in, o.want(in)); err != nil {
			return fmt.Errorf("%s: %w", pluginName, err)
		}
		o.active = in
		in.setReady(true)
		in.startLoop(false)
		return nil
	}

	// A reload that brings nodelocal into a running process has had no
	// firstStartup.
	if err := o.setupLink(in); err != nil {
		return err
	}
	o.announce(in.cfg.StateDir)
	o.publish(in)
	o.active = in
	o.hookExit()
	o.checkGuard(in)
	unlock := o.lockNode()
	defer unlock()
	hs := o.want(in)
	if err := o.apply(in, hs); err != nil {
		// Teardown removes what part of it went in.
		o.applied = &hs
		log.Errorf("Reconcile: %v", err)
	} else {
		in.setReady(true)
		log.Infof("Node set up: %s", describe(hs))
	}
	in.startLoop(true)
	return nil
}

// checkGuard asks the kernel once per instance whether it has the socket
// match `failopen on` needs, and shows the answer in the failopen gauge;
// the rules backend logs a missing match once and writes unguarded rules.
func (o *owner) checkGuard(in *instance) {
	rs := in.spec().rules
	if !rs.Guard || rs.Mode == rules.ModeNone {
		setFailOpen(failOpenOff)
		return
	}
	switch err := in.host.SocketMatch(rs); {
	case err == nil:
		setFailOpen(failOpenOn)
		if len(rs.Fallback) > 0 && !rs.Upstream.IsValid() {
			log.Infof("Fail-open without upstreamsvc: while no cache runs, DNS to %v is refused, not sent to the cluster DNS", rs.Fallback)
		}
	case errors.Is(err, rules.ErrNoSocketMatch):
		setFailOpen(failOpenUnsupported)
	default:
		log.Warningf("Cannot tell yet whether the kernel has the socket match for fail-open: %v", err)
	}
}

// ensureHost builds the instance's host backend once.
func (o *owner) ensureHost(in *instance) error {
	if in.host != nil {
		return nil
	}
	h, err := o.sys.Host(in.cfg)
	if err != nil {
		return fmt.Errorf("%s: %w", pluginName, err)
	}
	in.host = h
	return nil
}

// setupLink creates the host backend and puts the link and addresses in
// place; a failure removes what it added.
func (o *owner) setupLink(in *instance) error {
	if in.linkUp {
		return nil
	}
	if err := in.localIPsErr(); err != nil {
		return err
	}
	if err := o.ensureHost(in); err != nil {
		return err
	}
	if link := in.spec().link; link.Name != "" {
		o.hold(in, &hostSpec{link: link, rules: rules.Spec{Mode: rules.ModeNone}})
		if _, err := in.host.EnsureLink(link); err != nil {
			countSetupError(err, errInterfaceAdd)
			err = fmt.Errorf("interface %s: %w", link.Name, err)
			if rerr := in.host.RemoveLink(link); rerr != nil {
				err = errors.Join(err, fmt.Errorf("undo: %w", rerr))
			}
			return fmt.Errorf("%s: %w", pluginName, err)
		}
	}
	in.linkUp = true
	return nil
}

// announce makes this process known to the other instances on the node,
// once; without a state directory it acts as the only one.
func (o *owner) announce(dir string) {
	if o.me != nil || dir == "" {
		return
	}
	p, err := o.sys.Announce(dir)
	if err != nil {
		log.Warningf("Cannot see other instances on this node, acting as the only one: %v", err)
		return
	}
	o.me = p
}

// publish records the instance's needs for the other instances on the node.
func (o *owner) publish(in *instance) {
	if o.me == nil {
		return
	}
	if err := o.me.Publish(in.spec()); err != nil {
		log.Warningf("Cannot tell the other instances on this node what this one needs: %v", err)
	}
}

// lockNode takes the lock the instances on the node share, for one change
// of the node: what the live instances need is read and put in place as
// one step, so a peer leaving meanwhile cannot have its rules put back.
// It returns the release.
func (o *owner) lockNode() func() {
	if o.me == nil {
		return func() {}
	}
	unlock, err := o.me.Lock()
	if err != nil {
		log.Warningf("Cannot lock the node against the other instances on it: %v", err)
		return func() {}
	}
	return unlock
}

// want is what the node must carry for in and the live instances beside it
// (union.go). With a peer whose needs are unknown, what is on the node
// stays too: that peer may need it.
func (o *owner) want(in *instance) hostSpec {
	own := in.spec()
	if o.me == nil {
		return own
	}
	peers, err := o.me.Others()
	if err != nil {
		log.Warningf("Cannot see other instances on this node: %v", err)
	}
	if gone := o.me.Departed(); len(gone) > 0 && o.applied != nil {
		// Instances killed without clean-up: what they had is on the
		// node as if this one had put it there, so what no live one
		// needs goes with the next apply.
		all, _ := merge(*o.applied, gone)
		o.applied = &all
	}
	hs, unknown := withPeers(own, peers)
	if unknown && o.applied != nil {
		hs, _ = merge(hs, []*hostSpec{o.applied})
	}
	return hs
}

// hold tells a supervising parent what the process holds on the node (nil:
// it has given the node up), before the change is made.
func (o *owner) hold(in *instance, hs *hostSpec) {
	h := holding{Teardown: in.cfg.Teardown, Upstream: in.cfg.Upstream, StateDir: in.cfg.StateDir, Released: hs == nil}
	if hs != nil {
		h.Link, h.Rules = hs.link, hs.rules
	}
	o.sys.Hold(h)
}

// hookExit registers the process-exit hook (SIGQUIT's only callback) once.
func (o *owner) hookExit() {
	if o.exitHooked {
		return
	}
	o.exitHooked = true
	caddy.OnProcessExit = append(caddy.OnProcessExit, o.processExit)
}

// apply moves the node from what is applied to want: it ensures want and
// records it as applied, then removes what the previous state had and want
// has not.
func (o *owner) apply(in *instance, want hostSpec) error {
	prev := o.applied
	if prev != nil {
		// Until the stale part is gone, both may be on the node.
		both, _ := merge(*prev, []*hostSpec{&want})
		o.hold(in, &both)
	} else {
		o.hold(in, &want)
	}
	if _, err := ensure(in.host, want); err != nil {
		return err
	}
	o.applied = &want
	if prev == nil {
		return nil
	}
	if err := removeStale(in.host, *prev, want); err != nil {
		return err
	}
	o.hold(in, &want)
	return nil
}

// repair ensures the instance's node state again and returns what it had
// to change; the instance is ready exactly when that succeeded. It does
// nothing for an instance that no longer has the node.
func (o *owner) repair(in *instance) ([]string, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if in.torn || o.active != in {
		return nil, nil
	}
	unlock := o.lockNode()
	defer unlock()
	want := o.want(in)
	if o.applied == nil || !sameSpec(want, *o.applied) {
		// Another instance came or went (or this one's settings changed):
		// the node moves to what the live instances need together. Not a
		// repair.
		err := o.apply(in, want)
		in.setReady(err == nil)
		if err == nil {
			log.Infof("Node now carries what the live instances need: %s", describe(want))
		}
		return nil, err
	}
	changes, err := ensure(in.host, want)
	if err == nil && !in.Ready() {
		log.Infof("Node set up: %s", describe(want))
	}
	in.setReady(err == nil)
	return changes, err
}

// restart marks the start of a reload (OnRestart of the running instance).
func (o *owner) restart(in *instance) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	in.restarting = true
	return nil
}

// resume runs on the old instance when a reload failed: it keeps serving, so
// its settings go back on the node and its loop keeps running.
func (o *owner) resume(in *instance) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	in.restarting = false
	if in.torn || in.host == nil {
		return nil
	}
	// The failed instance is dropped without a callback of its own: end
	// its loop here, or it would outlive it.
	if failed := o.active; failed != nil && failed != in {
		failed.haltLoop()
	}
	o.active = in
	o.publish(in)
	unlock := o.lockNode()
	defer unlock()
	if err := o.apply(in, o.want(in)); err != nil {
		in.setReady(false)
		return fmt.Errorf("%s: restore after failed reload: %w", pluginName, err)
	}
	in.setReady(true)
	in.startLoop(false)
	return nil
}

// stopLoop ends the instance's loop and waits for it, without the lock,
// which the loop may be waiting for.
func (o *owner) stopLoop(in *instance) {
	o.mu.Lock()
	l := in.haltLoop()
	o.mu.Unlock()
	if l != nil {
		l.wait()
	}
}

// peers counts the other live instances on the node; 0 when unknown.
func (o *owner) peers() int {
	if o.me == nil {
		return 0
	}
	p, err := o.me.Others()
	if err != nil {
		log.Warningf("Cannot see other instances on this node: %v", err)
		return 0
	}
	return len(p)
}

// leave ends this process's presence on the node and returns what the
// instances still live need.
func (o *owner) leave() []*hostSpec {
	if o.me == nil {
		return nil
	}
	peers, err := o.me.Leave()
	o.me = nil
	if err != nil {
		log.Warningf("Cannot see other instances on this node, acting as the last one: %v", err)
	}
	return peers
}
