package main

import (
	"context"
	"errors"
	"fmt"
	"net"
)

// lookuper resolves one name. Each worker owns one, so nothing is shared or
// coalesced between workers.
type lookuper interface {
	// lookup resolves host for the configured record type and returns the
	// resolver's error, if any.
	lookup(ctx context.Context, host string) error
}

// settler is implemented by lookupers whose lookups cannot be cancelled
// (glibc's getaddrinfo). settle blocks until an abandoned lookup has really
// finished, so a worker never has more than one lookup running; the time it
// waits is not counted as latency.
type settler interface {
	settle(ctx context.Context)
}

// Resolver kinds accepted by -resolver.
const (
	resolverGo     = "go"
	resolverSystem = "system"
)

// newLookuper returns a fresh resolver for one worker.
func newLookuper(cfg Config) (lookuper, error) {
	switch cfg.Resolver {
	case resolverGo:
		return newGoLookuper(cfg), nil
	case resolverSystem:
		return newSystemLookuper(cfg)
	default:
		return nil, fmt.Errorf("unknown resolver %q (want %q or %q)", cfg.Resolver, resolverGo, resolverSystem)
	}
}

// goLookuper is the pure-Go resolver. It reads /etc/resolv.conf (search
// path, ndots, timeout, attempts) like any Go program in the pod would.
type goLookuper struct {
	r       *net.Resolver
	network string // "ip4", "ip6" or "ip" for LookupIP
	server  string // -server, to name it in errors
}

// newGoLookuper returns a pure-Go resolver of its own: net.Resolver
// coalesces identical concurrent lookups (singleflight) within one Resolver
// value, which would hide load from the server if workers shared one.
func newGoLookuper(cfg Config) *goLookuper {
	var dialer net.Dialer
	r := &net.Resolver{PreferGo: true}
	if cfg.Server != "" || cfg.TCP {
		// The resolver calls Dial with the nameserver from resolv.conf and
		// "udp"; -server replaces the address, -tcp the network. A stream
		// connection makes the resolver use TCP framing.
		r.Dial = func(ctx context.Context, network, address string) (net.Conn, error) {
			if cfg.Server != "" {
				address = cfg.Server
			}
			if cfg.TCP {
				network = "tcp"
			}
			return dialer.DialContext(ctx, network, address)
		}
	}
	return &goLookuper{r: r, network: lookupNetwork(cfg.Type), server: cfg.Server}
}

// lookupNetwork maps -type to the network argument of LookupIP.
func lookupNetwork(t string) string {
	switch t {
	case typeA:
		return "ip4"
	case typeAAAA:
		return "ip6"
	default:
		return "ip"
	}
}

func (g *goLookuper) lookup(ctx context.Context, host string) error {
	_, err := g.r.LookupIP(ctx, g.network, host)
	var dnsErr *net.DNSError
	if g.server != "" && errors.As(err, &dnsErr) && dnsErr.Server != "" {
		// The resolver names resolv.conf's nameserver; the query went to -server.
		dnsErr.Server = g.server
	}
	return err
}
