package nodelocal

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/nodelocaldns/nodelocaldns/plugin/nodelocal/netif"
	"github.com/nodelocaldns/nodelocaldns/plugin/nodelocal/rules"
)

// Teardown says what the final shutdown does to the node.
type Teardown string

// Teardown settings.
const (
	TeardownOn  Teardown = "on"  // remove rules, addresses and link
	TeardownOff Teardown = "off" // leave everything in place
	// TeardownHandoff leaves everything in place, like off, and gives every
	// local IP (not only the link-local ones) the standing fallback to the
	// upstream Service, which carries DNS while no cache runs (IPVS mode).
	TeardownHandoff Teardown = "handoff"
)

// Defaults and bounds of the directive's settings, for callers that write
// the directive's text (the node-cache drop-in).
const (
	// DefaultHealthPort is the default of `healthport`, node-cache's.
	DefaultHealthPort = 8080
	// DefaultSync is the default of `sync`.
	DefaultSync = 10 * time.Second
	// MinSync is the shortest `sync` accepted.
	MinSync = time.Second
)

// Config is the parsed directive: one per CoreDNS instance.
type Config struct {
	LocalIPs    []netip.Addr
	Interface   string // "" after `interface none`
	Rules       rules.Mode
	Backend     rules.Backend
	UpstreamSvc string     // Service name, "" when not set
	Upstream    netip.Addr // the Service's ClusterIP, read from its env variable
	HealthPort  int
	Sync        time.Duration
	Teardown    Teardown
	StateDir    string // where instances on the node see each other; "" after `statedir none`
	RcvBuf      int    // receive buffer of the UDP listeners in bytes; 0 after `rcvbuf none`
	FailOpen    bool   // socket-guarded rules and the standing fallback (`failopen on`)
}

func defaultConfig() Config {
	return Config{
		Interface:  netif.DefaultName,
		Rules:      rules.ModeIptables,
		Backend:    rules.BackendAuto,
		HealthPort: DefaultHealthPort,
		Sync:       DefaultSync,
		Teardown:   TeardownOn,
		StateDir:   defaultStateDir,
		RcvBuf:     defaultRcvBuf,
		FailOpen:   true,
	}
}

// differ names the first setting in which a and b differ, with both values.
func differ(a, b Config) (name, av, bv string) {
	pairs := []struct{ name, a, b string }{
		{"localip", fmt.Sprint(a.LocalIPs), fmt.Sprint(b.LocalIPs)},
		{"interface", orNone(a.Interface), orNone(b.Interface)},
		{"rules", string(a.Rules) + " " + string(a.Backend), string(b.Rules) + " " + string(b.Backend)},
		{"upstreamsvc", a.UpstreamSvc, b.UpstreamSvc},
		{"healthport", strconv.Itoa(a.HealthPort), strconv.Itoa(b.HealthPort)},
		{"sync", a.Sync.String(), b.Sync.String()},
		{"teardown", string(a.Teardown), string(b.Teardown)},
		{"statedir", orNone(a.StateDir), orNone(b.StateDir)},
		{"rcvbuf", strconv.Itoa(a.RcvBuf), strconv.Itoa(b.RcvBuf)},
		{"failopen", onOff(a.FailOpen), onOff(b.FailOpen)},
	}
	for _, p := range pairs {
		if p.a != p.b {
			return p.name, strconv.Quote(strings.TrimSpace(p.a)), strconv.Quote(strings.TrimSpace(p.b))
		}
	}
	return "", "", ""
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// fallbackIPs are the local IPs that get the standing fallback to the
// upstream Service: those with no kube-proxy path of their own once no
// cache socket takes them. A link-local address (169.254.20.10) never has
// one; with `teardown handoff` every local IP counts as such (IPVS mode,
// or an address of the operator's that no Service holds). The kube-dns
// ClusterIP is left out otherwise: kube-proxy's own DNAT takes it, and a
// DNAT of ours would come first (the first DNAT wins) and, with kube-proxy
// in nftables mode, not land.
func fallbackIPs(cfg Config) []netip.Addr {
	var out []netip.Addr
	for _, ip := range cfg.LocalIPs {
		if ip.IsLinkLocalUnicast() || cfg.Teardown == TeardownHandoff {
			out = append(out, ip)
		}
	}
	return out
}
