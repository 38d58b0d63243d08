package main

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nodelocaldns/nodelocaldns/internal/nsenter"
	"github.com/nodelocaldns/nodelocaldns/internal/nstest"
)

// peerCorefile is one instance of a surge rollout that changes the
// kube-dns IP: each binds and holds 169.254.20.10 and its own second IP,
// and serves its metrics on its own port.
const peerCorefile = `.:53 {
	bind 169.254.20.10 %[1]s
	nodelocal {
		localip 169.254.20.10 %[1]s
		rules iptables nft
		sync 1s
		statedir %[2]s
	}
	prometheus 127.0.0.1:%[3]d
	whoami
}
`

// repairsTotal sums coredns_nodelocal_repairs_total over its labels, read
// from the metrics endpoint at addr.
func repairsTotal(t *testing.T, addr string) float64 {
	t.Helper()
	code, body, err := nsenter.HTTPGet(addr, "/metrics")
	if err != nil || code != 200 {
		t.Fatalf("GET %s/metrics: %d %v", addr, code, err)
	}
	sum := 0.0
	for _, m := range regexp.MustCompile(`(?m)^coredns_nodelocal_repairs_total\{[^}]*\} (\S+)$`).FindAllStringSubmatch(body, -1) {
		v, _ := strconv.ParseFloat(m[1], 64)
		sum += v
	}
	return sum
}

// TestSurgePeers (issue 18 B2, B3): two instances on one node, the second
// with another kube-dns IP, share the node without a fight: both IP sets
// have their rules, no repair is made over several sync periods, and
// SIGTERM to each in turn removes what only it needed, then everything.
func TestSurgePeers(t *testing.T) {
	nstest.Enter(t)
	dir := t.TempDir()
	old := startCache(t, fmt.Sprintf(peerCorefile, "198.18.0.10", dir, 9153))
	old.firstAnswer("198.18.0.10", 5*time.Second)
	surge := startCache(t, fmt.Sprintf(peerCorefile, "198.18.0.11", dir, 9154))
	surge.firstAnswer("198.18.0.11", 5*time.Second)

	has := func(rules string, ips ...string) bool {
		for _, ip := range ips {
			if !strings.Contains(rules, "-d "+ip+"/32 -p udp -m udp --dport 53 ") {
				return false
			}
		}
		return true
	}
	nstest.Eventually(t, "the rules of both IP sets", 5*time.Second, func() bool {
		return has(ourRules(t), "169.254.20.10", "198.18.0.10", "198.18.0.11")
	})
	rules := ourRules(t)
	before := repairsTotal(t, "127.0.0.1:9153") + repairsTotal(t, "127.0.0.1:9154")
	for range 4 { // four sync periods of both
		time.Sleep(time.Second)
		if got := ourRules(t); got != rules {
			t.Fatalf("The rules changed in steady state:\nbefore\n%s\nafter\n%s", rules, got)
		}
	}
	if got := repairsTotal(t, "127.0.0.1:9153") + repairsTotal(t, "127.0.0.1:9154") - before; got != 0 {
		t.Errorf("%v repairs counted by the two instances in steady state, want 0", got)
	}
	if got := linkAddrs(t); got != "169.254.20.10/32 198.18.0.10/32 198.18.0.11/32" {
		t.Errorf("nodelocaldns holds %q, want both instances' addresses", got)
	}
	for _, c := range []*cache{old, surge} {
		if data, _ := os.ReadFile(c.log.Name()); strings.Contains(string(data), "Repaired") || strings.Contains(string(data), "Bad rule") {
			t.Errorf("An instance repaired or failed in steady state:\n%s", data)
		}
	}

	old.stop(syscall.SIGTERM)
	rules = ourRules(t)
	if !has(rules, "169.254.20.10", "198.18.0.11") || strings.Contains(rules, "198.18.0.10/32") {
		t.Errorf("After the old instance stopped, want the surge's rules only:\n%s", rules)
	}
	if got := linkAddrs(t); got != "169.254.20.10/32 198.18.0.11/32" {
		t.Errorf("After the old instance stopped nodelocaldns holds %q", got)
	}
	if _, err := query("udp", "198.18.0.11", "example.org"); err != nil {
		t.Errorf("The surge instance stopped answering: %v", err)
	}

	surge.stop(syscall.SIGTERM)
	if got := ourRules(t); got != "" {
		t.Errorf("Rules left after both stopped:\n%s", got)
	}
	if _, err := nstest.Run(t, "ip", "link", "show", "nodelocaldns"); err == nil {
		t.Errorf("Link nodelocaldns left after both stopped, holding %q", linkAddrs(t))
	}
}
