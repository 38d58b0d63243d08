package nodelocal

import (
	"errors"
	"fmt"
	"net/netip"

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
// (the new instance has taken the node over). On SIGTERM it is the first
// step of the drain, before health's lameduck (see drain). (SIGINT runs
// the process-exit hook first, which tears down at once; this then finds
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
		log.Infof("Stopping: %d other instance(s) on this node keep the interface and rules", peers)
		return nil
	}
	if in.cfg.Teardown == TeardownOff || o.applied == nil {
		return nil
	}
	return o.drain(in)
}

// drain makes the cache stop drawing the traffic that has another path: the
// rules of the local IPs kube-proxy also serves (the kube-dns ClusterIP) go,
// so new queries reach CoreDNS through kube-proxy while this process
// answers what it holds and still serves the link-local IP. The addresses
// stay until the final shutdown: queries this process already holds (in
// its socket queues, or waiting on the upstream) are answered from those
// addresses, and a reply from an address the node no longer has is lost, a
// 5 s stall for its client. Without the NOTRACK rules kube-proxy's DNAT
// takes every new query to those IPs, address or not.
func (o *owner) drain(in *instance) error {
	var keep, fallback []netip.Addr
	for _, ip := range in.cfg.LocalIPs {
		if ip.IsLinkLocalUnicast() {
			keep = append(keep, ip)
		} else {
			fallback = append(fallback, ip)
		}
	}
	if len(fallback) == 0 || o.applied.rules.Mode == rules.ModeNone {
		return nil
	}
	reduced := *o.applied
	reduced.rules.LocalIPs = keep
	if len(keep) == 0 {
		log.Infof("Stopping: rules for %v go so pods fall back to kube-proxy; answering what is in flight", fallback)
		if err := in.host.RemoveRules(reduced.rules); err != nil {
			return fmt.Errorf("%s: drain: %w", pluginName, err)
		}
	} else {
		log.Infof("Stopping: rules for %v go so pods fall back to kube-proxy; still answering on %v", fallback, keep)
		if _, err := in.host.EnsureRules(reduced.rules); err != nil {
			return fmt.Errorf("%s: drain: %w", pluginName, err)
		}
	}
	o.applied = &reduced
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
// `teardown off` keeps it or `teardown handoff` leaves a path behind.
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
		return o.handoff(in, *hs)
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

// handoff leaves a path from the local IPs to the cluster DNS for the time
// no cache runs (IPVS mode, where pods know only the local IP): the DNAT
// goes in first, then the NOTRACK rules go so it takes effect; the link and
// addresses stay. The next start removes the path.
func (o *owner) handoff(in *instance, hs hostSpec) error {
	if err := in.host.EnsureHandoff(hs.rules, in.cfg.Upstream); err != nil {
		err = fmt.Errorf("%s: handoff path: %w", pluginName, err)
		if rerr := remove(in.host, hs); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return err
	}
	if err := in.host.RemoveRules(hs.rules); err != nil {
		return fmt.Errorf("%s: teardown: %w", pluginName, err)
	}
	log.Infof("Handed off: DNS to %v goes to %s until the next start", hs.rules.LocalIPs, in.cfg.Upstream)
	return nil
}
