package nodelocal

import (
	"fmt"

	"github.com/nodelocaldns/nodelocaldns/plugin/nodelocal/rules"
)

// stopCause says why an instance gives the node up, which decides what
// goes.
type stopCause int

const (
	// causeStop: the process stops (final shutdown or the process-exit
	// hook). The `teardown` setting decides what goes.
	causeStop stopCause = iota
	// causeUnmanaged: a reload to a Corefile without the directive. Nothing
	// manages the node any more, so everything goes, whatever `teardown`
	// says: rules left without a reconcile loop would outlive the cache.
	causeUnmanaged
)

func (c stopCause) String() string {
	if c == causeUnmanaged {
		return "the new Corefile has no nodelocal"
	}
	return "stopping"
}

// shutdown is OnShutdown. On a reload it only stops this instance's loop
// (the new instance has taken the node over). On SIGTERM the instance
// turns not ready and, unless another instance stays, drains (see drain)
// for health's lameduck. (SIGINT runs the process-exit hook first, which
// tears down at once; this then finds nothing to do.)
func (o *owner) shutdown(in *instance) error {
	o.stopLoop(in)
	o.mu.Lock()
	defer o.mu.Unlock()
	if in.restarting {
		in.restarting = false
		if o.active == in && !in.torn {
			return o.teardownLocked(in, causeUnmanaged)
		}
		return nil
	}
	if o.active != in || in.torn {
		return nil
	}
	in.setReady(false)
	if o.applied == nil || o.applied.rules.Mode == rules.ModeNone {
		return nil
	}
	// Under the node lock, so a peer cannot start between the look and
	// the drain and have its rules drained with ours.
	unlock := o.lockNode()
	defer unlock()
	if peers := o.peers(); peers > 0 {
		log.Infof("Stopping: %d other instance(s) on this node keep the interface and rules", peers)
		return nil
	}
	return o.drain(in)
}

// drain takes the pod NOTRACK rules of the local IPs with another path out
// (kube-proxy's DNAT, or the standing fallback), so new queries take that
// path while this process answers, through the lameduck, the queries it
// holds. The guard alone would send them there only once the sockets
// close, and what sits in them then is lost: a glibc client's 5 s. The
// addresses and the fallback stay; the next start puts the rules back.
// The caller holds the node lock and has seen no peer.
func (o *owner) drain(in *instance) error {
	drained := o.want(in)
	drained.rules.Drain = true
	if err := o.apply(in, drained); err != nil {
		return fmt.Errorf("%s: drain: %w", pluginName, err)
	}
	log.Infof("Stopping: new pod queries take their other paths; answering what is in flight")
	return nil
}

// finalShutdown is OnFinalShutdown: SIGTERM runs it after health's
// lameduck.
func (o *owner) finalShutdown(in *instance) error {
	o.stopLoop(in)
	o.mu.Lock()
	defer o.mu.Unlock()
	if in.torn || o.active != in {
		return nil
	}
	return o.teardownLocked(in, causeStop)
}

// processExit is the OnProcessExit hook: the only callback SIGQUIT runs,
// and the first SIGINT runs. After a SIGTERM's final shutdown it finds
// nothing left to do.
func (o *owner) processExit() {
	o.mu.Lock()
	defer o.mu.Unlock()
	in := o.active
	if in == nil {
		return
	}
	in.haltLoop()
	if err := o.teardownLocked(in, causeStop); err != nil {
		log.Error(err)
	}
}

// teardownLocked gives the node up for in, once: it removes the node state
// unless another instance on the node keeps it, or, when the process stops,
// `teardown off` or `handoff` keeps it (with handoff the standing fallback
// carries DNS to the local IPs while no cache runs).
func (o *owner) teardownLocked(in *instance, cause stopCause) error {
	in.torn = true
	in.setReady(false)
	hs := o.applied
	o.active, o.applied = nil, nil
	unlock := o.lockNode()
	defer unlock()
	// Whatever the outcome below, the node's fate is decided here: a
	// supervising parent has nothing to undo.
	defer o.hold(in, nil)
	// Leave first, look after: the last one out sees it is, even when
	// instances stop together, or a peer seen at SIGTERM is gone now.
	peers := o.leave()
	if hs == nil {
		return nil
	}
	if cause == causeStop && in.cfg.Teardown == TeardownOff {
		log.Infof("Teardown off: leaving %s in place", describe(*hs))
		return nil
	}
	if len(peers) > 0 {
		return o.leaveTo(in, *hs, peers)
	}
	if cause == causeStop && in.cfg.Teardown == TeardownHandoff {
		log.Infof("Teardown handoff: leaving %s in place; DNS to %v goes to %s until the next start", describe(*hs), hs.rules.Fallback, in.cfg.Upstream)
		return nil
	}
	if err := remove(in.host, *hs); err != nil {
		return fmt.Errorf("%s: teardown: %w", pluginName, err)
	}
	why := ""
	if cause != causeStop {
		why = " (" + cause.String() + ")"
	}
	log.Infof("Node torn down%s: %s", why, describe(*hs))
	return nil
}

// leaveTo gives the node up beside live peers (leaveBeside).
func (o *owner) leaveTo(in *instance, hs hostSpec, peers []*hostSpec) error {
	rest, err := leaveBeside(in.host, hs, peers)
	if err != nil {
		return fmt.Errorf("%s: teardown: %w", pluginName, err)
	}
	if rest == nil {
		log.Infof("Leaving %s to the other instance(s) on this node", describe(hs))
		return nil
	}
	log.Infof("Left to the %d other instance(s) on this node: %s", len(peers), describe(*rest))
	return nil
}
