package nodelocal

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin"
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/whoami"

	"github.com/nodelocaldns/nodelocaldns/internal/nstest"
	"github.com/nodelocaldns/nodelocaldns/plugin/nodelocal/rules"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// fakeDirective is the directive of these tests: the same setup as
// `nodelocal`, with an owner whose node is a fakeSystem. Each test gets
// its own owner from withFakeSystem, as a process gets its own.
const fakeDirective = "nodelocal_fake"

var fakeNode struct {
	mu        sync.Mutex
	o         *owner
	instances []*instance // every instance set up, failed ones included
}

func init() {
	if err := dnsserver.Register(); err != nil {
		panic(err)
	}
	plugin.Register(fakeDirective, func(c *caddy.Controller) error {
		fakeNode.mu.Lock()
		defer fakeNode.mu.Unlock()
		err := fakeNode.o.setup(c)
		if in, ok := c.Get(instanceKey{}).(*instance); ok && !slices.Contains(fakeNode.instances, in) {
			fakeNode.instances = append(fakeNode.instances, in)
		}
		return err
	})
	if err := dnsserver.SetDirectives([]string{"bind", pluginName, fakeDirective, "whoami"}); err != nil {
		panic(err)
	}
	caddy.Quiet = true
	dnsserver.Quiet = true
}

// withFakeSystem gives the fake directive a new owner on a new fake node.
func withFakeSystem(t *testing.T) *fakeSystem {
	t.Helper()
	fs := newFakeSystem()
	fakeNode.mu.Lock()
	defer fakeNode.mu.Unlock()
	fakeNode.o, fakeNode.instances = newOwner(fs), nil
	return fs
}

// withFakeHost is withFakeSystem for tests that look at the host only.
func withFakeHost(t *testing.T) *fakeHost { return withFakeSystem(t).host }

// fakeOwner is the owner withFakeSystem made.
func fakeOwner() *owner {
	fakeNode.mu.Lock()
	defer fakeNode.mu.Unlock()
	return fakeNode.o
}

// loopingInstances counts the instances set up so far that have a reconcile loop.
func loopingInstances() int {
	fakeNode.mu.Lock()
	defer fakeNode.mu.Unlock()
	n := 0
	for _, in := range fakeNode.instances {
		if looping(in) {
			n++
		}
	}
	return n
}

// start starts an instance and waits until its node is set up.
func start(t *testing.T, corefile string) *caddy.Instance {
	t.Helper()
	inst, err := caddy.Start(input(corefile))
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	nstest.Eventually(t, "the node set up", 2*time.Second, nodeOf(inst).Ready)
	return inst
}

func input(corefile string) caddy.Input {
	return caddy.CaddyfileInput{Contents: []byte(corefile), Filepath: "Corefile", ServerTypeName: "dns"}
}

// finalShutdown does what SIGTERM does to an instance.
func finalShutdown(t *testing.T, inst *caddy.Instance) {
	t.Helper()
	if errs := inst.ShutdownCallbacks(); len(errs) > 0 {
		t.Errorf("Shutdown callbacks: %v", errs)
	}
	inst.Stop()
}

func nodeOf(inst *caddy.Instance) *instance {
	inst.StorageMu.RLock()
	defer inst.StorageMu.RUnlock()
	return inst.Storage[instanceKey{}].(*instance)
}

// looping reports whether the instance has a reconcile loop.
func looping(in *instance) bool {
	in.o.mu.Lock()
	defer in.o.mu.Unlock()
	return in.loop != nil
}

const twoBlocks = `example.org:0 {
	bind 127.0.0.1
	nodelocal_fake {
		localip 169.254.20.10 198.18.0.10
		sync 1s
	}
	whoami
}
.:0 {
	bind 127.0.0.1
	nodelocal_fake
	whoami
}
`

// wantTwoBlocks is the node twoBlocks sets up: guarded rules (failopen
// is on by default), the link-local IP alone as the fallback address, and
// no upstream to fall back to (no upstreamsvc).
const wantTwoBlocks = "link nodelocaldns up=true [169.254.20.10 198.18.0.10]; rules iptables/auto [169.254.20.10 198.18.0.10] [0] 8080 guarded, fallback [169.254.20.10]->invalid IP"

func TestStartReloadShutdown(t *testing.T) {
	f := withFakeHost(t)
	inst := start(t, twoBlocks)

	if got := f.state(); got != wantTwoBlocks {
		t.Fatalf("After start the node has\n%s\nwant\n%s", got, wantTwoBlocks)
	}
	ops := f.takeOps()
	if want := []string{"add link nodelocaldns", "add address 169.254.20.10", "add address 198.18.0.10", "set rules iptables/auto"}; !slices.Equal(ops, want) {
		t.Errorf("Start did %q, want %q (once, interface before rules)", ops, want)
	}
	if !nodeOf(inst).Ready() {
		t.Error("Not ready after a successful start")
	}

	// A reload with the same Corefile changes nothing on the node.
	inst2, err := inst.Restart(input(twoBlocks))
	if err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if ops := f.takeOps(); len(ops) != 0 {
		t.Errorf("Reload touched the node: %q", ops)
	}
	if got := f.state(); got != wantTwoBlocks {
		t.Errorf("After reload the node has\n%s\nwant\n%s", got, wantTwoBlocks)
	}
	if looping(nodeOf(inst)) || !looping(nodeOf(inst2)) || loopingInstances() != 1 {
		t.Errorf("After reload %d instances loop, the old one %v, the new one %v; want only the new one", loopingInstances(), looping(nodeOf(inst)), looping(nodeOf(inst2)))
	}
	if !nodeOf(inst2).Ready() {
		t.Error("Not ready after reload")
	}

	// A reload that changes the local IPs adds the new one and removes only the dropped one.
	changed := strings.Replace(twoBlocks, "198.18.0.10", "2001:2::a", 1)
	inst3, err := inst2.Restart(input(changed))
	if err != nil {
		t.Fatalf("Reload: %v", err)
	}
	ops = f.takeOps()
	if want := []string{"add address 2001:2::a", "set rules iptables/auto", "remove address 198.18.0.10"}; !slices.Equal(ops, want) {
		t.Errorf("Reload with a changed localip did %q, want %q", ops, want)
	}

	finalShutdown(t, inst3)
	ops = f.takeOps()
	// The drain first, then rules before addresses.
	if want := []string{"set rules iptables/auto", "remove rules iptables/auto", "remove address 169.254.20.10", "remove address 2001:2::a", "remove link nodelocaldns"}; !slices.Equal(ops, want) {
		t.Errorf("Final shutdown did %q, want %q (rules first, then addresses and link)", ops, want)
	}
	if got := f.state(); got != "" {
		t.Errorf("Final shutdown left %s", got)
	}
	if nodeOf(inst3).Ready() {
		t.Error("Still ready after teardown")
	}
	if n := loopingInstances(); n != 0 {
		t.Errorf("%d reconcile loops left after the final shutdown", n)
	}
}

// TestFailedReloadKeepsOldState: the new instance's startup ran (and changed
// the node) but its listener failed; the old instance keeps serving with its
// own settings back in place.
func TestFailedReloadKeepsOldState(t *testing.T) {
	f := withFakeHost(t)
	inst := start(t, twoBlocks)
	f.takeOps()

	// 198.18.200.1 is not on this machine: binding it fails after OnStartup.
	bad := strings.Replace(twoBlocks, "bind 127.0.0.1\n\tnodelocal_fake {\n\t\tlocalip 169.254.20.10 198.18.0.10", "bind 198.18.200.1\n\tnodelocal_fake {\n\t\tlocalip 169.254.20.10 198.18.0.10 198.18.200.1", 1)
	if bad == twoBlocks {
		t.Fatal("Test Corefile not rewritten")
	}
	if _, err := inst.Restart(input(bad)); err == nil {
		t.Fatal("Reload binding an address that is not on the machine succeeded")
	}
	if got := f.state(); got != wantTwoBlocks {
		t.Errorf("After a failed reload the node has\n%s\nwant the old state\n%s", got, wantTwoBlocks)
	}
	if !nodeOf(inst).Ready() {
		t.Error("Old instance not ready after a failed reload")
	}
	// The failed instance's loop notices it was dropped and ends.
	// The failed instance's loop ends with it.
	if !looping(nodeOf(inst)) || loopingInstances() != 1 {
		t.Errorf("After a failed reload %d instances loop, the old one %v; want only the old one", loopingInstances(), looping(nodeOf(inst)))
	}
	finalShutdown(t, inst)
	if got := f.state(); got != "" {
		t.Errorf("Final shutdown left %s", got)
	}
}

// TestFailedStartLeavesNothing: never a half-installed node.
func TestFailedStartLeavesNothing(t *testing.T) {
	fs := withFakeSystem(t)
	f := fs.host
	fs.set(func(s *fakeSystem) { s.hostErr = errors.New("iptables-nft-restore not found in PATH") })
	_, err := caddy.Start(input(twoBlocks))
	if err == nil || !strings.Contains(err.Error(), "iptables-nft-restore not found") {
		t.Fatalf("Start error %v, want the missing binary named", err)
	}
	if got := f.state(); got != "" {
		t.Errorf("A failed start left %s", got)
	}
	if n := loopingInstances(); n != 0 {
		t.Errorf("A failed start left %d reconcile loops", n)
	}
	if o := fakeOwner(); o.active != nil {
		t.Error("A failed start left an instance holding the node")
	}
}

// TestRulesBeforeListeners: on a first start the rules go in at once, before
// the listeners open (guarded, they divert nothing until a socket takes
// the packets); only the steering of new queries waits for the listeners.
func TestRulesBeforeListeners(t *testing.T) {
	fs := withFakeSystem(t)
	f := fs.host
	fs.set(func(s *fakeSystem) { s.closed = true })
	inst, err := caddy.Start(input(twoBlocks))
	if err != nil {
		t.Fatal(err)
	}
	defer finalShutdown(t, inst)
	if got := f.state(); got != wantTwoBlocks || !nodeOf(inst).Ready() {
		t.Errorf("Before the listeners open the node has\n%s\nwant\n%s, and ready (got %v)", got, wantTwoBlocks, nodeOf(inst).Ready())
	}
	time.Sleep(50 * time.Millisecond)
	fs.get(func(s *fakeSystem) {
		if len(s.steered) != 0 {
			t.Errorf("Steered %v before the listeners were seen", s.steered)
		}
	})
	fs.set(func(s *fakeSystem) { s.closed = false })
	nstest.Eventually(t, "the steering", time.Second, func() bool {
		n := 0
		fs.get(func(s *fakeSystem) { n = len(s.steered) })
		return n == 1
	})
}

// TestFailOpen: the guard follows `failopen`, the fallback takes the
// link-local IPs (every local IP with `teardown handoff`), and the gauge
// shows the state; a kernel without the socket match gets unguarded rules.
func TestFailOpen(t *testing.T) {
	t.Setenv("KUBE_DNS_UPSTREAM_SERVICE_HOST", "198.18.0.11")
	withUpstream := strings.Replace(twoBlocks, "sync 1s", "sync 1s\n\t\tupstreamsvc kube-dns-upstream", 1)
	const node = "link nodelocaldns up=true [169.254.20.10 198.18.0.10]; rules iptables/auto [169.254.20.10 198.18.0.10] [0] 8080"
	tests := []struct {
		name, settings string
		noSocket       error
		want, gauge    string
	}{
		{"default", "", nil, node + " guarded, fallback [169.254.20.10]->198.18.0.11", failOpenOn},
		{"handoff", "teardown handoff", nil, node + " guarded, fallback [169.254.20.10 198.18.0.10]->198.18.0.11", failOpenOn},
		{"off", "failopen off", nil, node, failOpenOff},
		{"no socket match", "", fmt.Errorf("%w (test)", rules.ErrNoSocketMatch), node + " unguarded", failOpenUnsupported},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fs := withFakeSystem(t)
			fs.host.noSocket = tc.noSocket
			inst := start(t, strings.Replace(withUpstream, "sync 1s", "sync 1s\n\t\t"+tc.settings, 1))
			defer finalShutdown(t, inst)
			if got := fs.host.state(); got != tc.want {
				t.Errorf("The node has\n%s\nwant\n%s", got, tc.want)
			}
			for _, st := range []string{failOpenOn, failOpenOff, failOpenUnsupported} {
				want := 0.0
				if st == tc.gauge {
					want = 1
				}
				if got := testutil.ToFloat64(failOpenGauge.WithLabelValues(st)); got != want {
					t.Errorf("coredns_nodelocal_failopen{state=%q} is %v, want %v", st, got, want)
				}
			}
		})
	}
}

func TestReconcileRepairs(t *testing.T) {
	f := withFakeHost(t)
	inst := start(t, twoBlocks)
	defer finalShutdown(t, inst)
	before := testutil.ToFloat64(repairs.WithLabelValues("address"))

	f.tamper(func(links map[string]*fakeLink, rules map[string]string) {
		l := links["nodelocaldns"]
		l.up = false
		l.addrs = l.addrs[1:]
		delete(rules, "iptables/auto")
	})
	nstest.Eventually(t, "the repair", 3*time.Second, func() bool { return f.state() == wantTwoBlocks })
	if got := testutil.ToFloat64(repairs.WithLabelValues("address")) - before; got != 1 {
		t.Errorf("Repairs of addresses counted %v, want 1", got)
	}

	// A failure after start makes the cache not ready until it is repaired.
	f.mu.Lock()
	f.failRules = errors.New("xtables lock held")
	f.mu.Unlock()
	errsBefore := testutil.ToFloat64(setupErrors.WithLabelValues(errIptables))
	f.tamper(func(_ map[string]*fakeLink, rules map[string]string) { delete(rules, "iptables/auto") })
	nstest.Eventually(t, "not ready", 3*time.Second, func() bool { return !nodeOf(inst).Ready() })
	if testutil.ToFloat64(setupErrors.WithLabelValues(errIptables)) <= errsBefore {
		t.Error("A rules failure was not counted in coredns_nodecache_setup_errors_total{errortype=\"iptables\"}")
	}
	f.mu.Lock()
	f.failRules = nil
	f.mu.Unlock()
	nstest.Eventually(t, "ready again", 3*time.Second, func() bool { return nodeOf(inst).Ready() })
}

func TestTeardownOff(t *testing.T) {
	f := withFakeHost(t)
	inst := start(t, strings.Replace(twoBlocks, "sync 1s", "sync 1s\n\t\tteardown off", 1))
	finalShutdown(t, inst)
	// Left as SIGTERM's drain left it: pods on their other paths until the
	// next start puts the NOTRACK rules back.
	if got := f.state(); got != wantTwoBlocks+" draining" {
		t.Errorf("teardown off: after shutdown the node has\n%s\nwant it left in place, drained", got)
	}
}

// TestProcessExitTearsDown: SIGQUIT runs only the process-exit hook, and
// SIGINT runs it first, then the shutdown callbacks.
func TestProcessExitTearsDown(t *testing.T) {
	f := withFakeHost(t)
	inst := start(t, twoBlocks)
	fakeOwner().processExit()
	if got := f.state(); got != "" {
		t.Errorf("Process exit left %s", got)
	}
	// A later final shutdown finds nothing to do.
	f.takeOps()
	finalShutdown(t, inst)
	if ops := f.takeOps(); len(ops) != 0 {
		t.Errorf("Teardown ran twice: %q", ops)
	}
}

func TestStartErrorsNameFileLineAndValue(t *testing.T) {
	withFakeHost(t)
	tests := []struct{ corefile, want string }{
		{".:0 {\n\tbind 127.0.0.1\n\tnodelocal_fake {\n\t\tlocalip 169.254.20.10\n\t\tsync 500ms\n\t}\n}\n", `Corefile:5 - Error during parsing: sync "500ms" is below the minimum of 1s`},
		{"example.org:0 {\n\tnodelocal_fake {\n\t\tlocalip 169.254.20.10\n\t}\n}\n.:0 {\n\tnodelocal_fake {\n\t\tlocalip 169.254.20.11\n\t}\n}\n",
			`Corefile:7 - Error during parsing: localip "[169.254.20.11]" disagrees with localip "[169.254.20.10]" at Corefile:2`},
		// Twice in one block (issue 18 B1): an error at the second, not the second ignored.
		{".:0 {\n\tnodelocal_fake {\n\t\tlocalip 169.254.20.10\n\t\tsync 3s\n\t}\n\tnodelocal_fake {\n\t\tlocalip 169.254.20.10\n\t\tsync 7s\n\t}\n}\n",
			`Corefile:6 - Error during parsing: nodelocal_fake given twice in one server block, first at line 2`},
		{".:0 {\n\tnodelocal_fake\n\tnodelocal_fake\n}\n", `Corefile:3 - Error during parsing: nodelocal_fake given twice in one server block, first at line 2`},
	}
	for i, tc := range tests {
		inst, err := caddy.Start(input(tc.corefile))
		if err == nil {
			finalShutdown(t, inst)
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Test %d: error %v, want it to contain %q", i, err, tc.want)
		}
	}
}

// runShutdown runs an instance's OnShutdown callbacks: the start of SIGTERM's work.
func runShutdown(t *testing.T, inst *caddy.Instance) {
	t.Helper()
	for _, f := range inst.OnShutdown {
		if err := f(); err != nil {
			t.Errorf("OnShutdown: %v", err)
		}
	}
}

func runFinalShutdown(t *testing.T, inst *caddy.Instance) {
	t.Helper()
	for _, f := range inst.OnFinalShutdown {
		if err := f(); err != nil {
			t.Errorf("OnFinalShutdown: %v", err)
		}
	}
	inst.Stop()
}

// TestDrain: SIGTERM turns the cache not ready and drains before health's
// lameduck: the pod NOTRACK rules of the IPs with another path go, the
// addresses stay for the replies in flight; the final shutdown then tears
// down, rules first.
func TestDrain(t *testing.T) {
	f := withFakeHost(t)
	inst := start(t, twoBlocks)
	f.takeOps()
	runShutdown(t, inst)
	if got, want := f.state(), wantTwoBlocks+" draining"; got != want {
		t.Errorf("During the lameduck the node has\n%s\nwant\n%s", got, want)
	}
	if ops := f.takeOps(); !slices.Equal(ops, []string{"set rules iptables/auto"}) {
		t.Errorf("SIGTERM did %q before the final shutdown, want the rules rewritten (drained)", ops)
	}
	if nodeOf(inst).Ready() {
		t.Error("Ready while stopping")
	}
	runFinalShutdown(t, inst)
	if ops := f.takeOps(); len(ops) == 0 || ops[0] != "remove rules iptables/auto" {
		t.Errorf("Final shutdown did %q, want the rules removed first", ops)
	}
	if got := f.state(); got != "" {
		t.Errorf("Final shutdown left %s", got)
	}
}

// TestPeerKeepsNode: with another live instance on the node (a surge
// rollout), a stopping instance removes nothing; once it is gone, the last
// one tears down.
func TestPeerKeepsNode(t *testing.T) {
	fs := withFakeSystem(t)
	f := fs.host
	inst := start(t, twoBlocks)
	fs.set(func(s *fakeSystem) { s.peers = 1 })
	f.takeOps()
	finalShutdown(t, inst)
	if ops := f.takeOps(); len(ops) != 0 {
		t.Errorf("Stopping beside a live instance did %q", ops)
	}
	if got := f.state(); got != wantTwoBlocks {
		t.Errorf("Node state after handing over:\n%s\nwant\n%s", got, wantTwoBlocks)
	}

	// The peer was killed: its lock is gone with it, and the next
	// instance to stop is the last one.
	fs.set(func(s *fakeSystem) { s.peers = 0 })
	inst2 := start(t, twoBlocks)
	finalShutdown(t, inst2)
	if got := f.state(); got != "" {
		t.Errorf("The last instance left %s", got)
	}
}

// TestHandoff: teardown handoff leaves the node as SIGTERM's drain left it,
// the standing fallback of every local IP to the upstream Service carrying
// the pods; the next start puts the pod NOTRACK rules back.
func TestHandoff(t *testing.T) {
	f := withFakeHost(t)
	t.Setenv("KUBE_DNS_UPSTREAM_SERVICE_HOST", "198.18.0.11")
	corefile := `.:0 {
	bind 127.0.0.1
	nodelocal_fake {
		localip 169.254.20.10
		upstreamsvc kube-dns-upstream
		teardown handoff
	}
}
`
	inst := start(t, corefile)
	const want = "link nodelocaldns up=true [169.254.20.10]; rules iptables/auto [169.254.20.10] [0] 8080 guarded, fallback [169.254.20.10]->198.18.0.11"
	f.takeOps()
	runShutdown(t, inst)
	runFinalShutdown(t, inst)
	if ops := f.takeOps(); !slices.Equal(ops, []string{"set rules iptables/auto"}) {
		t.Errorf("Handoff did %q, want only the drain", ops)
	}
	if got := f.state(); got != want+" draining" {
		t.Errorf("After handoff the node has\n%s\nwant\n%s", got, want+" draining")
	}
	inst2 := start(t, corefile)
	if ops := f.takeOps(); !slices.Equal(ops, []string{"set rules iptables/auto"}) {
		t.Errorf("Next start did %q, want its rules back", ops)
	}
	if got := f.state(); got != want {
		t.Errorf("After the next start the node has\n%s\nwant\n%s", got, want)
	}
	finalShutdown(t, inst2)
}

// TestReloadDroppingTheDirective: a reload to a Corefile without nodelocal
// leaves nothing managing the node, so the node state goes.
func TestReloadDroppingTheDirective(t *testing.T) {
	f := withFakeHost(t)
	inst := start(t, twoBlocks)
	inst2, err := inst.Restart(input(".:0 {\n\tbind 127.0.0.1\n\twhoami\n}\n"))
	if err != nil {
		t.Fatal(err)
	}
	defer inst2.Stop()
	if got := f.state(); got != "" {
		t.Errorf("After a reload without nodelocal the node has %s", got)
	}
}

// TestTakeoverThroughSeams: once its listeners are open a first start
// steers new queries to itself, raises the listeners' receive buffers and
// announces itself in the state directory; it leaves that presence when it
// stops. With `statedir none` it neither announces nor steers.
func TestTakeoverThroughSeams(t *testing.T) {
	fs := withFakeSystem(t)
	inst := start(t, twoBlocks)
	// Steering and buffers follow the listeners, after the start.
	nstest.Eventually(t, "the steering", 2*time.Second, func() bool {
		n := 0
		fs.get(func(s *fakeSystem) { n = len(s.rcvBufs) })
		return n > 0
	})
	fs.get(func(s *fakeSystem) {
		if len(s.steered) != 1 || fmt.Sprint(s.steered[0]) != "[169.254.20.10 198.18.0.10]" {
			t.Errorf("Steered %v, want the local IPs once", s.steered)
		}
		if !s.rcvBufs[defaultRcvBuf] {
			t.Errorf("Receive buffers asked for %v, want %d", s.rcvBufs, defaultRcvBuf)
		}
		if !slices.Equal(s.announced, []string{defaultStateDir}) || s.present != 1 {
			t.Errorf("Announced in %q (%d present), want once in %s", s.announced, s.present, defaultStateDir)
		}
	})
	finalShutdown(t, inst)
	fs.get(func(s *fakeSystem) {
		if s.present != 0 {
			t.Errorf("%d presences left after the final shutdown", s.present)
		}
	})

	fs = withFakeSystem(t)
	inst = start(t, strings.Replace(twoBlocks, "sync 1s", "sync 1s\n\t\tstatedir none\n\t\trcvbuf none", 1))
	defer finalShutdown(t, inst)
	fs.get(func(s *fakeSystem) {
		if len(s.steered) != 0 || len(s.announced) != 0 || len(s.rcvBufs) != 0 {
			t.Errorf("With statedir none and rcvbuf none: steered %v, announced %q, receive buffers %v; want none", s.steered, s.announced, s.rcvBufs)
		}
	})
}

// TestPeerDuringDrain: SIGTERM with another instance on the node (a surge
// rollout) turns not ready but draws no traffic away: the other instance
// serves the same IPs, and nothing is removed at the final shutdown either.
func TestPeerDuringDrain(t *testing.T) {
	fs := withFakeSystem(t)
	inst := start(t, twoBlocks)
	fs.host.takeOps()
	fs.set(func(s *fakeSystem) { s.peers = 1 })
	runShutdown(t, inst)
	if nodeOf(inst).Ready() {
		t.Error("Ready while stopping")
	}
	runFinalShutdown(t, inst)
	if ops := fs.host.takeOps(); len(ops) != 0 {
		t.Errorf("Stopping beside a live instance did %q", ops)
	}
	if got := fs.host.state(); got != wantTwoBlocks {
		t.Errorf("After handing over the node has\n%s\nwant\n%s", got, wantTwoBlocks)
	}
}

// TestBareBlocksTakeEveryBind: when every block has a bare directive, the
// local IPs are the bind addresses of all of them, not only the first's.
func TestBareBlocksTakeEveryBind(t *testing.T) {
	withFakeSystem(t)
	// The listeners cannot bind these addresses here (the node is fake),
	// so the start fails once the node side is set up.
	_, err := caddy.Start(input(`example.org:0 {
	bind 169.254.20.10
	nodelocal_fake
}
.:0 {
	bind 198.18.0.10 169.254.20.10
	nodelocal_fake
}
`))
	if err == nil {
		t.Fatal("Start with listeners on addresses this machine lacks succeeded")
	}
	defer fakeOwner().processExit()
	fakeNode.mu.Lock()
	defer fakeNode.mu.Unlock()
	if len(fakeNode.instances) != 1 {
		t.Fatalf("%d instances set up, want 1", len(fakeNode.instances))
	}
	if got := fmt.Sprint(fakeNode.instances[0].cfg.LocalIPs); got != "[169.254.20.10 198.18.0.10]" {
		t.Errorf("Local IPs %s, want every block's bind: [169.254.20.10 198.18.0.10]", got)
	}
}

// TestRepairKinds: the repairs metric's label takes the documented values
// for what the link and rules backends report, and nothing else.
func TestRepairKinds(t *testing.T) {
	tests := []struct{ change, want string }{
		{"link nodelocaldns created (bridge)", "link"},
		{"link nodelocaldns set up", "link"},
		{"address 169.254.20.10/32 added to nodelocaldns", "address"},
		{"chain NODELOCALDNS-OUTPUT rewritten in iptables-nft raw (8 rules missing, 8 unexpected)", "chain"},
		{"jump OUTPUT -> NODELOCALDNS-OUTPUT added in iptables-nft raw", "jump"},
		{"table inet nodelocaldns created (4 chains)", "table"},
		{"rule set iptables/auto written", "other"},
		{"", "other"},
	}
	for _, tc := range tests {
		if got := repairKind(tc.change); got != tc.want {
			t.Errorf("Repair %q counted as %q, want %q", tc.change, got, tc.want)
		}
	}
}
