package nodelocal

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/whoami"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func init() {
	if err := dnsserver.Register(); err != nil {
		panic(err)
	}
	if err := dnsserver.SetDirectives([]string{"bind", pluginName, "whoami"}); err != nil {
		panic(err)
	}
	caddy.Quiet = true
	dnsserver.Quiet = true
}

// withFakeHost makes every new node use one in-memory host and resets the
// process-wide state after the test.
func withFakeHost(t *testing.T) *fakeHost {
	t.Helper()
	f := newFakeHost()
	old, oldListening, oldDir := newHost, listening, stateDirDefault
	newHost = func(Config) (Host, error) { return f, nil }
	listening = func([]netip.Addr, []int) bool { return true }
	stateDirDefault = t.TempDir()
	t.Cleanup(func() {
		newHost, listening, stateDirDefault = old, oldListening, oldDir
		process.mu.Lock()
		process.active, process.applied = nil, nil
		process.mu.Unlock()
	})
	return f
}

// start starts an instance and waits until its node is set up.
func start(t *testing.T, corefile string) *caddy.Instance {
	t.Helper()
	inst, err := caddy.Start(input(corefile))
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	waitFor(t, "the node set up", 2*time.Second, nodeOf(inst).Ready)
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

func waitFor(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("Timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

const twoBlocks = `example.org:0 {
	bind 127.0.0.1
	nodelocal {
		localip 169.254.20.10 198.18.0.10
		sync 1s
	}
	whoami
}
.:0 {
	bind 127.0.0.1
	nodelocal
	whoami
}
`

const wantTwoBlocks = "link nodelocaldns up=true [169.254.20.10 198.18.0.10]; rules iptables/auto [169.254.20.10 198.18.0.10] [0] 8080"

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
	if looping(nodeOf(inst)) || !looping(nodeOf(inst2)) {
		t.Errorf("After reload the old instance loops %v, the new one %v; want only the new one", looping(nodeOf(inst)), looping(nodeOf(inst2)))
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
	// 2001:2::a has a kube-proxy path: its rules go first (drain), then the
	// rest, rules before addresses; its address stays until then, so replies
	// to the queries in flight can still leave from it.
	if want := []string{"set rules iptables/auto", "remove rules iptables/auto", "remove address 169.254.20.10", "remove address 2001:2::a", "remove link nodelocaldns"}; !slices.Equal(ops, want) {
		t.Errorf("Final shutdown did %q, want %q (rules first, then addresses and link)", ops, want)
	}
	if got := f.state(); got != "" {
		t.Errorf("Final shutdown left %s", got)
	}
	if nodeOf(inst3).Ready() {
		t.Error("Still ready after teardown")
	}
	for i, in := range []*caddy.Instance{inst, inst2, inst3} {
		if looping(nodeOf(in)) {
			t.Errorf("Instance %d still has a reconcile loop after the final shutdown", i+1)
		}
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
	bad := strings.Replace(twoBlocks, "bind 127.0.0.1\n\tnodelocal {\n\t\tlocalip 169.254.20.10 198.18.0.10", "bind 198.18.200.1\n\tnodelocal {\n\t\tlocalip 169.254.20.10 198.18.0.10 198.18.200.1", 1)
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
	process.mu.Lock()
	owned := process.active == nodeOf(inst)
	process.mu.Unlock()
	if !owned || !looping(nodeOf(inst)) {
		t.Errorf("After a failed reload the old instance has the node: %v, loops: %v; want both", owned, looping(nodeOf(inst)))
	}
	finalShutdown(t, inst)
	if got := f.state(); got != "" {
		t.Errorf("Final shutdown left %s", got)
	}
}

// TestFailedStartLeavesNothing: never a half-installed node.
func TestFailedStartLeavesNothing(t *testing.T) {
	f := withFakeHost(t)
	newHost = func(Config) (Host, error) { return nil, errors.New("iptables-nft-restore not found in PATH") }
	_, err := caddy.Start(input(twoBlocks))
	if err == nil || !strings.Contains(err.Error(), "iptables-nft-restore not found") {
		t.Fatalf("Start error %v, want the missing binary named", err)
	}
	if got := f.state(); got != "" {
		t.Errorf("A failed start left %s", got)
	}
	process.mu.Lock()
	defer process.mu.Unlock()
	if process.active != nil {
		t.Error("A failed start left an instance holding the node")
	}
}

// TestRulesWaitForListeners: on a first start the rules (which draw the
// traffic) go in only once the listeners are open; until then the cache is
// not ready.
func TestRulesWaitForListeners(t *testing.T) {
	f := withFakeHost(t)
	var open atomic.Bool
	listening = func([]netip.Addr, []int) bool { return open.Load() }
	inst, err := caddy.Start(input(twoBlocks))
	if err != nil {
		t.Fatal(err)
	}
	defer finalShutdown(t, inst)
	time.Sleep(100 * time.Millisecond)
	if got := f.state(); strings.Contains(got, "rules") || nodeOf(inst).Ready() {
		t.Errorf("Rules written before the listeners were seen: %s", got)
	}
	open.Store(true)
	waitFor(t, "the rules", time.Second, func() bool { return f.state() == wantTwoBlocks })
	if !nodeOf(inst).Ready() {
		t.Error("Not ready once the rules are in")
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
	waitFor(t, "the repair", 3*time.Second, func() bool { return f.state() == wantTwoBlocks })
	if got := testutil.ToFloat64(repairs.WithLabelValues("address")) - before; got != 1 {
		t.Errorf("Repairs of addresses counted %v, want 1", got)
	}

	// A failure after start makes the cache not ready until it is repaired.
	f.mu.Lock()
	f.failRules = errors.New("xtables lock held")
	f.mu.Unlock()
	errsBefore := testutil.ToFloat64(setupErrors.WithLabelValues(errIptables))
	f.tamper(func(_ map[string]*fakeLink, rules map[string]string) { delete(rules, "iptables/auto") })
	waitFor(t, "not ready", 3*time.Second, func() bool { return !nodeOf(inst).Ready() })
	if testutil.ToFloat64(setupErrors.WithLabelValues(errIptables)) <= errsBefore {
		t.Error("A rules failure was not counted in coredns_nodecache_setup_errors_total{errortype=\"iptables\"}")
	}
	f.mu.Lock()
	f.failRules = nil
	f.mu.Unlock()
	waitFor(t, "ready again", 3*time.Second, func() bool { return nodeOf(inst).Ready() })
}

func TestTeardownOff(t *testing.T) {
	f := withFakeHost(t)
	inst := start(t, strings.Replace(twoBlocks, "sync 1s", "sync 1s\n\t\tteardown off", 1))
	finalShutdown(t, inst)
	if got := f.state(); got != wantTwoBlocks {
		t.Errorf("teardown off: after shutdown the node has\n%s\nwant it left in place", got)
	}
}

// TestProcessExitTearsDown: SIGQUIT runs only the process-exit hook.
func TestProcessExitTearsDown(t *testing.T) {
	f := withFakeHost(t)
	inst := start(t, twoBlocks)
	process.processExit()
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
		{".:0 {\n\tbind 127.0.0.1\n\tnodelocal {\n\t\tlocalip 169.254.20.10\n\t\tsync 500ms\n\t}\n}\n", `Corefile:5 - Error during parsing: sync "500ms" is below the minimum of 1s`},
		{"example.org:0 {\n\tnodelocal {\n\t\tlocalip 169.254.20.10\n\t}\n}\n.:0 {\n\tnodelocal {\n\t\tlocalip 169.254.20.11\n\t}\n}\n",
			`Corefile:7 - Error during parsing: localip "[169.254.20.11]" disagrees with localip "[169.254.20.10]" at Corefile:2`},
	}
	for i, tc := range tests {
		_, err := caddy.Start(input(tc.corefile))
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

// TestDrain: on SIGTERM the kube-dns IP's rules (kube-proxy also serves
// that IP) go first, before health's lameduck, so new queries take
// kube-proxy's path; its address stays for the replies to the queries in
// flight, and the link-local IP keeps answering until the final shutdown.
func TestDrain(t *testing.T) {
	f := withFakeHost(t)
	inst := start(t, twoBlocks)
	f.takeOps()
	runShutdown(t, inst)
	const draining = "link nodelocaldns up=true [169.254.20.10 198.18.0.10]; rules iptables/auto [169.254.20.10] [0] 8080"
	if got := f.state(); got != draining {
		t.Errorf("During the drain the node has\n%s\nwant\n%s", got, draining)
	}
	if ops := f.takeOps(); !slices.Equal(ops, []string{"set rules iptables/auto"}) {
		t.Errorf("Drain did %q, want only the rules rewritten without the kube-dns IP", ops)
	}
	if nodeOf(inst).Ready() {
		t.Error("Ready while draining")
	}
	runFinalShutdown(t, inst)
	if got := f.state(); got != "" {
		t.Errorf("Final shutdown left %s", got)
	}
}

// TestPeerKeepsNode: with another live instance on the node (a surge
// rollout), a stopping instance removes nothing; once it is gone, the last
// one tears down.
func TestPeerKeepsNode(t *testing.T) {
	f := withFakeHost(t)
	inst := start(t, twoBlocks)
	peer, err := announce(stateDirDefault)
	if err != nil {
		t.Fatal(err)
	}
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
	peer.f.Close()
	inst2 := start(t, twoBlocks)
	finalShutdown(t, inst2)
	if got := f.state(); got != "" {
		t.Errorf("The last instance left %s", got)
	}
}

// TestHandoff: teardown handoff leaves a path to the upstream Service and
// the link; the next start draws the traffic again and removes the path.
func TestHandoff(t *testing.T) {
	f := withFakeHost(t)
	t.Setenv("KUBE_DNS_UPSTREAM_SERVICE_HOST", "198.18.0.11")
	corefile := `.:0 {
	bind 127.0.0.1
	nodelocal {
		localip 169.254.20.10
		upstreamsvc kube-dns-upstream
		teardown handoff
	}
}
`
	inst := start(t, corefile)
	f.takeOps()
	finalShutdown(t, inst)
	if ops := f.takeOps(); !slices.Equal(ops, []string{"set handoff", "remove rules iptables/auto"}) {
		t.Errorf("Handoff did %q, want the path first, then the rules removed", ops)
	}
	if got, want := f.state(), "link nodelocaldns up=true [169.254.20.10]; rules handoff [169.254.20.10]->198.18.0.11"; got != want {
		t.Errorf("After handoff the node has\n%s\nwant\n%s", got, want)
	}
	inst2 := start(t, corefile)
	if ops := f.takeOps(); !slices.Equal(ops, []string{"set rules iptables/auto", "remove handoff"}) {
		t.Errorf("Next start did %q, want its rules, then the path removed", ops)
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
