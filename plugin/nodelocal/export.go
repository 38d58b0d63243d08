package nodelocal

import "net/netip"

// What package nodecache (node-cache's command line and Corefile template)
// uses of this plugin. It renders nodelocal directive text, so it needs the
// directive's defaults and its IP parser, and it counts its bad ConfigMaps in
// node-cache's setup-errors metric, which the plugin owns.

// Directive is the name of this plugin's directive in a Corefile.
const Directive = pluginName

// Defaults and bounds of the directive's settings.
const (
	DefaultSync       = defaultSync
	MinSync           = minSync
	DefaultHealthPort = defaultHealthPort
)

// ParseLocalIPs parses the arguments of `localip` as the directive does:
// IPv4 and IPv6 addresses, space or comma separated.
func ParseLocalIPs(args []string) ([]netip.Addr, error) { return parseLocalIPs(args) }

// CountConfigMapError counts one rejected template or kube-dns ConfigMap in
// coredns_nodecache_setup_errors_total{errortype="configmap"}.
func CountConfigMapError() { setupErrors.WithLabelValues(errConfigmap).Inc() }
