package nodelocal

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/nodelocaldns/nodelocaldns/internal/nstest"
	"github.com/nodelocaldns/nodelocaldns/plugin/nodelocal/netif"
	"github.com/nodelocaldns/nodelocaldns/plugin/nodelocal/rules"

	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"
)

// TestSystemHostServes sets the node up in a throwaway namespace, serves DNS
// on the local IPs there, queries them over UDP and TCP, then tears down.
func TestSystemHostServes(t *testing.T) {
	for _, mode := range []rules.Mode{rules.ModeIptables, rules.ModeNftables} {
		t.Run(string(mode), func(t *testing.T) { testServes(t, mode) })
	}
}

func testServes(t *testing.T, mode rules.Mode) {
	nstest.Enter(t)
	ips := []netip.Addr{netip.MustParseAddr("198.18.0.10"), netip.MustParseAddr("169.254.20.10")}
	cfg := defaultConfig()
	cfg.LocalIPs = ips
	cfg.Rules = mode
	h, err := newSystemHost(cfg)
	if err != nil {
		t.Fatal(err)
	}
	link := netif.Spec{Name: netif.DefaultName, Addrs: ips}
	rs := rules.Spec{Mode: mode, Backend: rules.BackendNft, LocalIPs: ips, DNSPorts: []int{53}, HealthPort: 8080}
	start := time.Now()
	if _, err := h.EnsureLink(link); err != nil {
		t.Fatal(err)
	}
	if _, err := h.EnsureRules(rs); err != nil {
		t.Fatal(err)
	}
	t.Logf("EnsureLink and EnsureRules on a clean namespace took %v", time.Since(start))

	// Sockets made on this (locked) thread live in the test namespace.
	for _, ip := range ips {
		addr := net.JoinHostPort(ip.String(), "53")
		nstest.ServeA(t, "udp", addr, "198.18.0.99")
		nstest.ServeA(t, "tcp", addr, "198.18.0.99")
	}

	for _, ip := range ips {
		for _, proto := range []string{"udp", "tcp"} {
			c := &dns.Client{Net: proto, Timeout: 2 * time.Second}
			q := new(dns.Msg).SetQuestion("probe.nodelocal.test.", dns.TypeA)
			r, _, err := c.Exchange(q, net.JoinHostPort(ip.String(), "53"))
			if err != nil {
				t.Fatalf("Query %s over %s: %v", ip, proto, err)
			}
			if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "198.18.0.99" {
				t.Errorf("Query %s over %s answered %v", ip, proto, r.Answer)
			}
		}
	}

	// The queries went through the NOTRACK rules.
	if mode == rules.ModeNftables {
		out, err := nstest.Run(t, "nft", "list", "chain", "inet", rules.NftTable, "raw-output")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "ip daddr 169.254.20.10 udp dport 53 counter packets ") || strings.Contains(out, "ip daddr 169.254.20.10 udp dport 53 counter packets 0 ") {
			t.Errorf("NOTRACK rule for 169.254.20.10 UDP did not count the query:\n%s", out)
		}
	} else {
		requireIptablesHits(t)
	}

	if err := h.RemoveRules(rs); err != nil {
		t.Fatal(err)
	}
	if err := h.RemoveLink(link); err != nil {
		t.Fatal(err)
	}
	if _, err := netlink.LinkByName(link.Name); err == nil {
		t.Errorf("Link %s still there after RemoveLink", link.Name)
	}
	for _, c := range [][]string{{"iptables-nft-save"}, {"nft", "list", "ruleset"}} {
		if out, _ := nstest.Run(t, c[0], c[1:]...); strings.Contains(out, "NODELOCALDNS") || strings.Contains(out, rules.NftTable) {
			t.Errorf("Rules left after RemoveRules:\n%s", out)
		}
	}
}

func requireIptablesHits(t *testing.T) {
	out, err := nstest.Run(t, "iptables-nft-save", "-c", "-t", "raw")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "-A NODELOCALDNS-OUTPUT -d 169.254.20.10/32 -p udp") {
			found = true
			if strings.HasPrefix(l, "[0:") {
				t.Errorf("NOTRACK rule never matched: %s", l)
			}
		}
	}
	if !found {
		t.Errorf("NOTRACK rule for 169.254.20.10 UDP missing from\n%s", out)
	}
}

func TestSystemHostNeedsBinaries(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	cfg := defaultConfig()
	cfg.LocalIPs = []netip.Addr{netip.MustParseAddr("169.254.20.10")}
	if _, err := newSystemHost(cfg); err == nil || !strings.Contains(err.Error(), "not found in PATH") {
		t.Errorf("newSystemHost without iptables: %v, want an error naming the binary", err)
	}
	cfg.Rules = rules.ModeNone
	if _, err := newSystemHost(cfg); err != nil {
		t.Errorf("newSystemHost with rules none needs no binary: %v", err)
	}
}
