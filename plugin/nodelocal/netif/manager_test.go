package netif

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nodelocaldns/nodelocaldns/plugin/nodelocal/internal/nstest"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { nstest.Main(m) }

var testSpec = Spec{
	Name:  "nodelocaldns",
	Addrs: []netip.Addr{netip.MustParseAddr("169.254.20.10"), netip.MustParseAddr("198.18.0.10"), netip.MustParseAddr("2001:2::10")},
}

// addrs returns the link's addresses as prefixes, and whether any global one
// is tentative (the kernel's own link-local address goes through DAD).
func addrs(t *testing.T, name string) (map[string]bool, bool) {
	t.Helper()
	link, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatalf("Link %s: %v", name, err)
	}
	list, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatalf("Addresses of %s: %v", name, err)
	}
	got, tentative := map[string]bool{}, false
	for _, a := range list {
		got[a.IPNet.String()] = true
		if a.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) != 0 && !a.IP.IsLinkLocalUnicast() {
			tentative = true
		}
	}
	return got, tentative
}

func requireState(t *testing.T, spec Spec) {
	t.Helper()
	link, err := netlink.LinkByName(spec.Name)
	if err != nil {
		t.Fatalf("Link %s missing: %v", spec.Name, err)
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("Link %s is down", spec.Name)
	}
	got, tentative := addrs(t, spec.Name)
	for _, a := range spec.Addrs {
		if p := hostPrefix(a).String(); !got[p] {
			t.Errorf("Address %s missing from %s (have %v)", p, spec.Name, got)
		}
	}
	if tentative {
		t.Errorf("An address of %s is tentative: %v", spec.Name, got)
	}
}

func ensure(t *testing.T, m *Manager, spec Spec) []string {
	t.Helper()
	changes, err := m.Ensure(spec)
	if err != nil {
		t.Fatalf("Ensure: %v (changes %q)", err, changes)
	}
	return changes
}

func TestEnsureCreatesAndIsIdempotent(t *testing.T) {
	nstest.Enter(t)
	m := New()
	start := time.Now()
	changes := ensure(t, m, testSpec)
	t.Logf("Ensure on a clean namespace took %v: %q", time.Since(start), changes)
	if len(changes) != 5 || !strings.HasPrefix(changes[0], "link nodelocaldns created (") || changes[1] != "link nodelocaldns set up" ||
		changes[2] != "address 169.254.20.10/32 added to nodelocaldns" || changes[4] != "address 2001:2::10/128 added to nodelocaldns" {
		t.Errorf("Unexpected changes %q", changes)
	}
	requireState(t, testSpec)
	if c := ensure(t, m, testSpec); len(c) != 0 {
		t.Errorf("Second Ensure changed %q, want nothing", c)
	}
}

func TestEnsureLeavesForeignAddress(t *testing.T) {
	nstest.Enter(t)
	m := New()
	ensure(t, m, testSpec)
	link, _ := netlink.LinkByName(testSpec.Name)
	foreign := nlAddr(netip.MustParsePrefix("198.18.5.5/32"))
	if err := netlink.AddrAdd(link, foreign); err != nil {
		t.Fatal(err)
	}
	if c := ensure(t, m, testSpec); len(c) != 0 {
		t.Errorf("Ensure with a foreign address changed %q", c)
	}
	if got, _ := addrs(t, testSpec.Name); !got["198.18.5.5/32"] {
		t.Errorf("Foreign address gone after Ensure: %v", got)
	}
	if err := m.Remove(testSpec); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	got, _ := addrs(t, testSpec.Name) // the link stays: it holds a foreign address
	if !got["198.18.5.5/32"] || got["169.254.20.10/32"] || got["2001:2::10/128"] {
		t.Errorf("After Remove with a foreign address: %v, want only the foreign one", got)
	}
}

func TestEnsureRepairs(t *testing.T) {
	nstest.Enter(t)
	m := New()
	ensure(t, m, testSpec)
	link, _ := netlink.LinkByName(testSpec.Name)

	if err := netlink.LinkSetDown(link); err != nil {
		t.Fatal(err)
	}
	// The kernel drops IPv6 addresses of a link that goes down.
	if c := ensure(t, m, testSpec); !slices.Equal(c, []string{"link nodelocaldns set up", "address 2001:2::10/128 added to nodelocaldns"}) {
		t.Errorf("Repair of a downed link: %q", c)
	}
	requireState(t, testSpec)

	for _, p := range []string{"169.254.20.10/32", "2001:2::10/128"} {
		if err := netlink.AddrDel(link, nlAddr(netip.MustParsePrefix(p))); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		c := ensure(t, m, testSpec)
		t.Logf("Repair of a removed address took %v", time.Since(start))
		if want := "address " + p + " added to nodelocaldns"; !slices.Equal(c, []string{want}) {
			t.Errorf("Repair of a removed address: %q, want %q", c, want)
		}
		requireState(t, testSpec)
	}

	if err := netlink.LinkDel(link); err != nil {
		t.Fatal(err)
	}
	if c := ensure(t, m, testSpec); len(c) != 5 {
		t.Errorf("Repair of a deleted link: %q, want link created, set up, 3 addresses", c)
	}
	requireState(t, testSpec)
}

func TestEnsureAdoptsAndRefuses(t *testing.T) {
	nstest.Enter(t)
	m := New()
	attrs := netlink.NewLinkAttrs()
	attrs.Name = testSpec.Name
	if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); err != nil {
		t.Fatal(err)
	}
	c := ensure(t, m, testSpec)
	if len(c) != 4 || c[0] != "link nodelocaldns set up" {
		t.Errorf("Adopting a leftover bridge: %q", c)
	}
	requireState(t, testSpec)
	if err := m.Remove(testSpec); err != nil {
		t.Fatalf("Remove: %v", err)
	}

	veth := &netlink.Veth{LinkAttrs: attrs, PeerName: "nltest-peer"}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	_, err := m.Ensure(testSpec)
	if err == nil || !strings.Contains(err.Error(), `type "veth"`) {
		t.Errorf("Ensure over a veth: %v, want a refusal naming the type", err)
	}
	if err := m.Remove(testSpec); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if _, err := netlink.LinkByName(testSpec.Name); err != nil {
		t.Errorf("Remove deleted a veth it does not own: %v", err)
	}
}

func TestRemoveLeavesNothing(t *testing.T) {
	nstest.Enter(t)
	m := New()
	for range 2 { // a second Remove finds nothing and is no error
		ensure(t, m, testSpec)
		if err := m.Remove(testSpec); err != nil {
			t.Fatalf("Remove: %v", err)
		}
		if _, err := netlink.LinkByName(testSpec.Name); err == nil {
			t.Fatalf("Link %s still there after Remove", testSpec.Name)
		}
		if err := m.Remove(testSpec); err != nil {
			t.Fatalf("Remove of nothing: %v", err)
		}
	}
}

func TestEnsureDualStackIPv6Only(t *testing.T) {
	nstest.Enter(t)
	m := New()
	spec := Spec{Name: "nl6", Addrs: []netip.Addr{netip.MustParseAddr("2001:2::53")}}
	ensure(t, m, spec)
	requireState(t, spec)
	// Usable at once: bind succeeds only on a non-tentative address.
	ln, err := net.ListenPacket("udp", "[2001:2::53]:53")
	if err != nil {
		t.Fatalf("Bind to the new IPv6 address right after Ensure: %v", err)
	}
	ln.Close()
}
