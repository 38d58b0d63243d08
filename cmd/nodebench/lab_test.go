package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/nodelocaldns/nodelocaldns/internal/lab"
	"github.com/nodelocaldns/nodelocaldns/internal/lab/labtest"
	"github.com/nodelocaldns/nodelocaldns/plugin/nodelocal/rules"
)

// answerA returns the first A record of the answer pod gets for name from
// the kube-dns IP, or "" with the failure.
func answerA(t *testing.T, pod, name string) string {
	t.Helper()
	r, err := lab.Query(pod, lab.KubeDNSIP, name, "A", false)
	if err != nil {
		t.Errorf("Query %s from %s: %v", name, pod, err)
		return ""
	}
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			return a.A.String()
		}
	}
	t.Errorf("Query %s from %s: no A record in %v", name, pod, r)
	return ""
}

// TestBenchHelpers checks what `make bench` relies on: the wildcard zone
// answers names nobody asked before, holdLocalIPs lets a plain server take
// over the kube-dns IP without DNAT or conntrack, and undoing it gives the
// pods kube-proxy's path back and leaves no rule behind.
func TestBenchHelpers(t *testing.T) {
	l := labtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := l.AddWildcardZone(ctx, benchZone, benchAddr); err != nil {
		t.Fatal(err)
	}
	if got := answerA(t, l.Pod1, "never-asked-7.bench.cluster.local"); got != benchAddr {
		t.Errorf("A name in the bench zone through kube-dns: %q, want %s", got, benchAddr)
	}
	if got := answerA(t, l.Pod1, lab.Services[0].Name); got != lab.Services[0].IPv4 {
		t.Errorf("The cluster zone after adding the bench zone: %q, want %s", got, lab.Services[0].IPv4)
	}

	undo, err := holdLocalIPs(ctx, l)
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(l.Dir, "plain.Corefile")
	plain := ".:53 {\n    bind " + lab.LocalIP + " " + lab.KubeDNSIP + "\n    template IN A {\n        answer \"{{ .Name }} 60 IN A 198.18.7.7\"\n    }\n}\n"
	if err := os.WriteFile(conf, []byte(plain), 0o644); err != nil {
		t.Fatal(err)
	}
	p, startup, err := startServer(ctx, l, "plain", nil, 10*time.Second, l.Bin("coredns"), "-conf", conf)
	if err != nil {
		undo()
		t.Fatal(err)
	}
	t.Logf("Plain CoreDNS answered %v after start", startup)
	if err := l.FlushConntrack(ctx); err != nil {
		t.Fatal(err)
	}
	if got := answerA(t, l.Pod1, lab.Services[0].Name); got != "198.18.7.7" {
		t.Errorf("With the local IPs held, kube-dns answered %q, want the node's server (198.18.7.7)", got)
	}
	if n, err := l.PodDNSFlows(ctx); err != nil || n != 0 {
		t.Errorf("Conntrack entries of pod DNS with NOTRACK: %d (%v), want 0", n, err)
	}
	if err := p.Stop(10 * time.Second); err != nil {
		t.Error(err)
	}
	if err := undo(); err != nil {
		t.Fatalf("Undo: %v", err)
	}
	if got := answerA(t, l.Pod1, lab.Services[0].Name); got != lab.Services[0].IPv4 {
		t.Errorf("After undo, kube-dns answered %q, want the upstream pods' %s (kube-proxy's DNAT)", got, lab.Services[0].IPv4)
	}
	if out, err := l.NodeRun(ctx, "iptables-save"); err != nil || strings.Contains(out, rules.Comment) {
		t.Errorf("Rules left after undo (%v):\n%s", err, out)
	}
}
