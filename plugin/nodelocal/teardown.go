package nodelocal

import (
	"fmt"
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
// turns not ready and leaves the node as it is for health's lameduck: the
// rules need no edit, since the moment the process's sockets close the
// kernel sends DNS on its other paths (`failopen on`). (SIGINT runs the
// process-exit hook first, which tears down at once; this then finds
// nothing to do.)
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
	if peers := o.peers(); peers > 0 {
		in.handedOver = true
		log.Infof("Stopping: %d other instance(s) on this node keep the interface and rules", peers)
	}
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
	defer o.leave()
	if hs == nil {
		return nil
	}
	if peers := o.peers(); in.handedOver || peers > 0 {
		log.Infof("Leaving %s to the other instance(s) on this node", describe(*hs))
		return nil
	}
	if cause == causeStop {
		switch in.cfg.Teardown {
		case TeardownOff:
			log.Infof("Teardown off: leaving %s in place", describe(*hs))
			return nil
		case TeardownHandoff:
			log.Infof("Teardown handoff: leaving %s in place; DNS to %v goes to %s until the next start", describe(*hs), hs.rules.Fallback, in.cfg.Upstream)
			return nil
		}
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
