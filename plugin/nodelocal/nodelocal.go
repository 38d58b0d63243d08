// Package nodelocal is a CoreDNS plugin that turns a CoreDNS server into a
// Kubernetes NodeLocal DNS cache: it keeps the node's local interface with the
// cache's IPs and the NOTRACK/ACCEPT rules in place for as long as the server
// runs, repairs them when something else removes them, and removes them on
// the final shutdown. In the query chain it is a pass-through whose Ready
// reports whether the node side is in place.
package nodelocal

import (
	"context"

	"github.com/coredns/coredns/plugin"

	"github.com/miekg/dns"
)

// Name is the directive's and the plugin's name.
const Name = "nodelocal"

const pluginName = Name

func init() { plugin.Register(pluginName, setup) }

// Nodelocal is the query-chain handler. Every server block that names the
// directive gets one; they share a single node state per CoreDNS instance.
type Nodelocal struct {
	Next plugin.Handler
	node *instance
}

// ServeDNS passes every query on with a deadline of UpstreamBudget: the
// plugin's work is on the node; on the queries it only bounds the wait for
// the upstream.
func (n Nodelocal) ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	ctx = withBudget(ctx, UpstreamBudget)
	rcode, err := plugin.NextOrFailure(n.Name(), n.Next, ctx, w, r)
	if rcode == dns.RcodeServerFailure && ctx.Err() == context.DeadlineExceeded {
		budgetSpent.Inc()
	}
	return rcode, err
}

// Name implements plugin.Handler.
func (n Nodelocal) Name() string { return pluginName }

// Ready implements the ready plugin's Readiness: true only while the
// interface, the addresses and the rules are all in place.
func (n Nodelocal) Ready() bool { return n.node.Ready() }
