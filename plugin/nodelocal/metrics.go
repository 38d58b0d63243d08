package nodelocal

import (
	"errors"

	"github.com/coredns/coredns/plugin"

	"github.com/nodelocaldns/nodelocaldns/plugin/nodelocal/netif"
	"github.com/nodelocaldns/nodelocaldns/plugin/nodelocal/rules"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Error types of node-cache's setup-errors metric, kept for its dashboards.
const (
	errIptables       = "iptables"
	errIptablesLock   = "iptables_lock"
	errInterfaceAdd   = "interface_add"
	errInterfaceCheck = "interface_check"
	errConfigmap      = "configmap"
)

var (
	// setupErrors has node-cache's name and labels: coredns_nodecache_setup_errors_total.
	setupErrors = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace,
		Subsystem: "nodecache",
		Name:      "setup_errors_total",
		Help:      "Counter of errors setting up the node: interface, iptables rules, ConfigMap.",
	}, []string{"errortype"})

	repairs = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace,
		Subsystem: "nodelocal",
		Name:      "repairs_total",
		Help:      "Counter of things the reconcile loop found missing or wrong and put back, by what.",
	}, []string{"what"})

	readyGauge = promauto.NewGauge(prometheus.GaugeOpts{
		Namespace: plugin.Namespace,
		Subsystem: "nodelocal",
		Name:      "ready",
		Help:      "1 while the interface, addresses and rules are all in place, else 0.",
	})
)

// States of the failopen gauge.
const (
	failOpenOn          = "on"          // rules socket-guarded, standing fallback in place
	failOpenOff         = "off"         // `failopen off`, or no rules: node-cache's rules
	failOpenUnsupported = "unsupported" // failopen on, but the kernel has no socket match
)

// failOpenGauge is 1 for the state the node's rules are in, 0 for the others.
var failOpenGauge = promauto.NewGaugeVec(prometheus.GaugeOpts{
	Namespace: plugin.Namespace,
	Subsystem: "nodelocal",
	Name:      "failopen",
	Help:      "1 for the fail-open state of the node's rules: on (socket-guarded), off (by setting), unsupported (the kernel has no socket match).",
}, []string{"state"})

// setFailOpen makes state the one failopen state at 1.
func setFailOpen(state string) {
	for _, s := range []string{failOpenOn, failOpenOff, failOpenUnsupported} {
		v := 0.0
		if s == state {
			v = 1
		}
		failOpenGauge.WithLabelValues(s).Set(v)
	}
}

func init() {
	// Present at 0 from the start, so alerts on increase() see the first error.
	for _, t := range []string{errIptables, errIptablesLock, errInterfaceAdd, errInterfaceCheck, errConfigmap} {
		setupErrors.WithLabelValues(t)
	}
}

// countSetupError counts err in node-cache's setup-errors metric: a held
// xtables lock and a failure to read the link have labels of their own,
// anything else counts as fallback.
func countSetupError(err error, fallback string) {
	switch {
	case errors.Is(err, rules.ErrLocked):
		setupErrors.WithLabelValues(errIptablesLock).Inc()
	case errors.Is(err, netif.ErrCheck):
		setupErrors.WithLabelValues(errInterfaceCheck).Inc()
	default:
		setupErrors.WithLabelValues(fallback).Inc()
	}
}

// CountConfigMapError counts a rejected kube-dns ConfigMap or Corefile
// template in coredns_nodecache_setup_errors_total{errortype="configmap"},
// node-cache's metric for it.
func CountConfigMapError() { setupErrors.WithLabelValues(errConfigmap).Inc() }
