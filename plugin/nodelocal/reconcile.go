package nodelocal

import (
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"
)

// listenWait bounds how long the first start waits for its own listeners
// before it gives up steering new queries to them.
const listenWait = 5 * time.Second

// reconciler is an instance's one reconcile goroutine: started in
// OnStartup, stopped in OnShutdown. On the process's first instance it
// first waits for the listeners and steers new queries to them (settle),
// then every sync period it repairs whatever was removed from under the
// plugin. Its own fields are touched only by the goroutine.
type reconciler struct {
	in   *instance
	stop chan struct{}
	done chan struct{}
	once sync.Once

	lastErr   string // the last failure, logged once until it changes
	rcvBufErr string // the last failure to raise the receive buffers, logged once
}

func startReconciler(in *instance, first bool) *reconciler {
	r := &reconciler{in: in, stop: make(chan struct{}), done: make(chan struct{})}
	go r.run(first)
	return r
}

// halt asks the goroutine to end; it does not wait.
func (r *reconciler) halt() { r.once.Do(func() { close(r.stop) }) }

// wait ends the goroutine and waits for it.
func (r *reconciler) wait() {
	r.halt()
	<-r.done
}

func (r *reconciler) run(first bool) {
	defer close(r.done)
	if first && !r.settle() {
		return
	}
	t := time.NewTicker(r.in.cfg.Sync)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
		}
		r.reconcile()
	}
}

// settle waits for this process's listeners, then steers new queries to
// them (steer.go) and gives them their receive buffer; a start that left
// the node not ready (its rules failed) is retried at once. It returns
// false when stopped first.
func (r *reconciler) settle() bool {
	hs := r.in.spec()
	deadline := time.Now().Add(listenWait)
	sys := r.in.o.sys
	for !sys.Listening(hs.rules.LocalIPs, hs.rules.DNSPorts) {
		if time.Now().After(deadline) {
			log.Warningf("Listeners on %v ports %v not seen after %s: new queries are not steered to them", hs.rules.LocalIPs, hs.rules.DNSPorts, listenWait)
			break
		}
		select {
		case <-r.stop:
			return false
		case <-time.After(5 * time.Millisecond):
		}
	}
	if r.in.cfg.StateDir != "" {
		// Part of the coordination between instances, off with it.
		r.steer(hs.rules.LocalIPs, hs.rules.DNSPorts)
	}
	if r.in.Ready() {
		r.ensureRcvBuf()
	} else {
		r.reconcile()
	}
	return true
}

// steer steers new traffic to this process's own sockets on the local IPs
// and ports (see steer.go); settle calls it once they are open.
func (r *reconciler) steer(ips []netip.Addr, ports []int) {
	n, err := r.in.o.sys.Steer(ips, ports)
	if err != nil {
		log.Warningf("Cannot steer new queries to this instance (a surge rollout may lose the queries queued at the old instance when it stops): %v", err)
		return
	}
	log.Infof("New queries on %d UDP/TCP listeners go to this instance from now on, and to the next instance once it listens", n)
}

// reconcile repairs whatever was removed from under the plugin. Each repair
// is logged and counted; a failure is logged once until it changes, counted
// every time, and makes Ready false until repaired.
func (r *reconciler) reconcile() {
	r.ensureRcvBuf()
	changes, err := r.in.o.repair(r.in)
	for _, c := range changes {
		repairs.WithLabelValues(repairKind(c)).Inc()
		log.Warningf("Repaired: %s", c)
	}
	if err != nil {
		r.fail(err)
		return
	}
	if r.lastErr != "" {
		log.Infof("Reconcile: node state back in place")
		r.lastErr = ""
	}
}

// fail logs a failure once until it changes.
func (r *reconciler) fail(err error) {
	if msg := err.Error(); msg != r.lastErr {
		log.Errorf("Reconcile: %v", err)
		r.lastErr = msg
	}
}

// repairKinds are the values of the repairs metric's `what` label.
var repairKinds = []string{"link", "address", "chain", "jump", "table"}

// repairKind is the `what` label of a repair: the first word of the change
// line a Host method returned, or "other", so the label keeps the few
// documented values whatever a backend writes.
func repairKind(change string) string {
	what, _, _ := strings.Cut(change, " ")
	if !slices.Contains(repairKinds, what) {
		return "other"
	}
	return what
}

// ensureRcvBuf gives the DNS listeners' UDP sockets the configured receive
// buffer; a reload may have opened new ones, so it runs on every reconcile.
// A failure is logged (once until it changes) but does not make the node
// unready: the cache still answers, it only drops more under bursts.
func (r *reconciler) ensureRcvBuf() {
	cfg := r.in.cfg
	if cfg.RcvBuf == 0 {
		return
	}
	raised, err := r.in.o.sys.RaiseRcvBuf(cfg.LocalIPs, r.in.ports, cfg.RcvBuf)
	if raised > 0 {
		log.Infof("Receive buffer of %d UDP listener(s) set to %d bytes", raised, cfg.RcvBuf)
	}
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	if msg != "" && msg != r.rcvBufErr {
		log.Warningf("Cannot raise the listeners' receive buffer to %d bytes: %v", cfg.RcvBuf, err)
	}
	r.rcvBufErr = msg
}
