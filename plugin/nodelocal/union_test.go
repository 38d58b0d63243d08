package nodelocal

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coredns/caddy"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/nodelocaldns/nodelocaldns/internal/nstest"
	"github.com/nodelocaldns/nodelocaldns/plugin/nodelocal/netif"
	"github.com/nodelocaldns/nodelocaldns/plugin/nodelocal/rules"
)

// onSameNode gives the fake directive a new owner: another process on the
// node of fs, sharing its host and state directory.
func onSameNode(fs *fakeSystem) *fakeSystem {
	other := fs.sameNode()
	fakeNode.mu.Lock()
	defer fakeNode.mu.Unlock()
	fakeNode.o = newOwner(other)
	return other
}

// repairsCounted sums the repairs metric over its labels.
func repairsCounted() float64 {
	n := 0.0
	for _, k := range append(repairKinds, "other") {
		n += testutil.ToFloat64(repairs.WithLabelValues(k))
	}
	return n
}

func peerCorefile(localIPs string, healthPort int) string {
	return strings.Replace(strings.Replace(twoBlocks, "localip 169.254.20.10 198.18.0.10", "localip "+localIPs, 1),
		"sync 1s", "sync 1s\n\t\thealthport "+strconv.Itoa(healthPort), 1)
}

// TestPeersWithDifferentSettings (issue 18 B2, B3): a surge rollout that
// changes localip and the health port. The node carries what both need
// together, without a fight (no repair, no change, over several sync
// periods); each one leaving removes only what the other does not need.
func TestPeersWithDifferentSettings(t *testing.T) {
	for _, firstOut := range []string{"old", "new"} {
		t.Run(firstOut+" stops first", func(t *testing.T) {
			fs := withFakeSystem(t)
			old := start(t, peerCorefile("169.254.20.10 198.18.0.10", 8080))
			onSameNode(fs)
			surge := start(t, peerCorefile("169.254.20.10 198.18.0.11", 8081))

			const both = "link nodelocaldns up=true [169.254.20.10 198.18.0.10 198.18.0.11]; rules iptables/auto [169.254.20.10 198.18.0.10 198.18.0.11] [0] 8080 [8081] guarded, fallback [169.254.20.10]->invalid IP"
			nstest.Eventually(t, "the node to carry both", 3*time.Second, func() bool { return fs.host.state() == both })
			fs.host.takeOps()
			before := repairsCounted()
			// Several sync periods of both reconcile loops.
			time.Sleep(3500 * time.Millisecond)
			if ops := fs.host.takeOps(); len(ops) != 0 {
				t.Errorf("In steady state the two instances changed the node: %q", ops)
			}
			if got := repairsCounted() - before; got != 0 {
				t.Errorf("In steady state %v repairs were counted, want 0", got)
			}
			if got := fs.host.state(); got != both {
				t.Errorf("The node has\n%s\nwant\n%s", got, both)
			}
			if !nodeOf(old).Ready() || !nodeOf(surge).Ready() {
				t.Errorf("Ready: old %v, surge %v; want both", nodeOf(old).Ready(), nodeOf(surge).Ready())
			}

			first, last := old, surge
			left := "link nodelocaldns up=true [169.254.20.10 198.18.0.11]; rules iptables/auto [169.254.20.10 198.18.0.11] [0] 8081 guarded, fallback [169.254.20.10]->invalid IP"
			if firstOut == "new" {
				first, last = surge, old
				left = "link nodelocaldns up=true [169.254.20.10 198.18.0.10]; rules iptables/auto [169.254.20.10 198.18.0.10] [0] 8080 guarded, fallback [169.254.20.10]->invalid IP"
			}
			finalShutdown(t, first)
			if got := fs.host.state(); got != left {
				t.Errorf("After one stopped the node has\n%s\nwant what the other needs\n%s", got, left)
			}
			// The one left settles on its own needs without a repair.
			before = repairsCounted()
			time.Sleep(1500 * time.Millisecond)
			if got := fs.host.state(); got != left {
				t.Errorf("The instance left moved the node to\n%s\nwant\n%s", got, left)
			}
			if got := repairsCounted() - before; got != 0 {
				t.Errorf("%v repairs counted after the peer left, want 0", got)
			}
			finalShutdown(t, last)
			if got := fs.host.state(); got != "" {
				t.Errorf("The last one out left %s", got)
			}
		})
	}
}

// TestPeerSeenAtStopLeavesFirst: an instance that sees a peer at SIGTERM
// (so it does not drain), whose peer then stops first, is the last one out
// and removes everything at its final shutdown.
func TestPeerSeenAtStopLeavesFirst(t *testing.T) {
	fs := withFakeSystem(t)
	a := start(t, twoBlocks)
	onSameNode(fs)
	b := start(t, twoBlocks)
	runShutdown(t, a) // SIGTERM to a: b is alive
	finalShutdown(t, b)
	if got := fs.host.state(); got != wantTwoBlocks {
		t.Errorf("With a still live the node has\n%s\nwant\n%s", got, wantTwoBlocks)
	}
	runFinalShutdown(t, a)
	if got := fs.host.state(); got != "" {
		t.Errorf("The last one out left %s", got)
	}
}

// TestPeersStopTogether: two instances whose final shutdowns run at once
// leave nothing: each leaves before it looks, so at least one sees it is
// the last.
func TestPeersStopTogether(t *testing.T) {
	for i := range 5 {
		fs := withFakeSystem(t)
		a := start(t, peerCorefile("169.254.20.10 198.18.0.10", 8080))
		onSameNode(fs)
		b := start(t, peerCorefile("169.254.20.10 198.18.0.11", 8080))
		done := make(chan struct{})
		for _, inst := range []*caddy.Instance{a, b} {
			go func() {
				defer func() { done <- struct{}{} }()
				finalShutdown(t, inst)
			}()
		}
		<-done
		<-done
		if got := fs.host.state(); got != "" {
			t.Errorf("Round %d: two instances stopping together left %s", i, got)
		}
	}
}

// TestMerge: what the node carries for instances with different settings
// is the same whichever computes it, and peers of another link or rule
// home add nothing to this one's.
func TestMerge(t *testing.T) {
	spec := func(link string, mode rules.Mode, health int, ips ...string) *hostSpec {
		hs := &hostSpec{link: netif.Spec{Name: link}, rules: rules.Spec{Mode: mode, Backend: rules.BackendAuto, DNSPorts: []int{53}, HealthPort: health}}
		for _, ip := range ips {
			a := netip.MustParseAddr(ip)
			hs.link.Addrs = append(hs.link.Addrs, a)
			hs.rules.LocalIPs = append(hs.rules.LocalIPs, a)
		}
		return hs
	}
	a := spec("nodelocaldns", rules.ModeIptables, 8080, "198.18.0.10", "169.254.20.10")
	b := spec("nodelocaldns", rules.ModeIptables, 8081, "169.254.20.10", "198.18.0.11")
	ab, _ := merge(*a, []*hostSpec{b})
	ba, _ := merge(*b, []*hostSpec{a})
	if !sameSpec(ab, ba) {
		t.Errorf("The two instances compute different unions:\n%+v\n%+v", ab, ba)
	}
	if got, want := fmt.Sprint(ab.rules.LocalIPs, ab.rules.HealthPort, ab.rules.MoreHealthPorts, ab.link.Addrs), "[169.254.20.10 198.18.0.10 198.18.0.11] 8080 [8081] [169.254.20.10 198.18.0.10 198.18.0.11]"; got != want {
		t.Errorf("Union %s, want %s", got, want)
	}

	// A peer with its own link and nftables rules shares nothing.
	other := spec("cache1", rules.ModeNftables, 8080, "198.18.0.12")
	got, unknown := merge(*a, []*hostSpec{other})
	if unknown || fmt.Sprint(got.rules.LocalIPs, got.link.Addrs) != "[169.254.20.10 198.18.0.10] [169.254.20.10 198.18.0.10]" {
		t.Errorf("A peer of another home changed the union: %+v", got)
	}
	rest, _ := needed(*a, []*hostSpec{other})
	if rest.rules.Mode != rules.ModeNone || len(rest.link.Addrs) != 0 {
		t.Errorf("A peer of another home needs %+v of this one's", rest)
	}
	rest, _ = needed(*a, []*hostSpec{b})
	if fmt.Sprint(rest.rules.LocalIPs, rest.link.Addrs, rest.rules.HealthPort) != "[169.254.20.10 198.18.0.11] [169.254.20.10 198.18.0.11] 8081" {
		t.Errorf("The peer needs %+v", rest)
	}
	if _, unknown := merge(*a, []*hostSpec{nil}); !unknown {
		t.Error("A peer of unknown needs not reported")
	}
}

// TestKilledPeerLeftoversGo: a peer killed without any clean-up (its lock
// dropped by the kernel) leaves what only it needed; the instance still
// live removes that within a sync period, without counting a repair.
func TestKilledPeerLeftoversGo(t *testing.T) {
	fs := withFakeSystem(t)
	old := start(t, peerCorefile("169.254.20.10 198.18.0.10", 8080))
	onSameNode(fs)
	surge := start(t, peerCorefile("169.254.20.10 198.18.0.11", 8080))
	nstest.Eventually(t, "the node to carry both", 3*time.Second, func() bool {
		return strings.Contains(fs.host.state(), "198.18.0.11") && strings.Contains(fs.host.state(), "198.18.0.10")
	})

	// SIGKILL: the loop ends with the process and the presence goes, nothing else runs.
	in := nodeOf(surge)
	in.o.stopLoop(in)
	in.o.mu.Lock()
	in.o.me.(*fakePresence).kill()
	in.o.me = nil
	in.o.mu.Unlock()

	before := repairsCounted()
	const left = "link nodelocaldns up=true [169.254.20.10 198.18.0.10]; rules iptables/auto [169.254.20.10 198.18.0.10] [0] 8080 guarded, fallback [169.254.20.10]->invalid IP"
	nstest.Eventually(t, "the killed peer's leftovers to go", 3*time.Second, func() bool { return fs.host.state() == left })
	if got := repairsCounted() - before; got != 0 {
		t.Errorf("%v repairs counted for a peer that went, want 0", got)
	}
	finalShutdown(t, old)
	if got := fs.host.state(); got != "" {
		t.Errorf("The last one out left %s", got)
	}
}
