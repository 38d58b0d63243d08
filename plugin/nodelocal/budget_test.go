package nodelocal

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/coredns/coredns/plugin/test"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestWithBudget(t *testing.T) {
	ctx := withBudget(context.Background(), 50*time.Millisecond)
	if ctx.Err() != nil {
		t.Fatalf("Fresh budget already spent: %v", ctx.Err())
	}
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done never closed after the budget")
	}
	if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Errorf("Err after the budget = %v, want DeadlineExceeded", ctx.Err())
	}

	// A parent's cancel reaches the waiters.
	parent, cancel := context.WithCancel(context.Background())
	ctx = withBudget(parent, time.Hour)
	done := ctx.Done()
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Parent's cancel did not close Done")
	}
	if !errors.Is(ctx.Err(), context.Canceled) {
		t.Errorf("Err after the parent's cancel = %v, want Canceled", ctx.Err())
	}

	// An earlier deadline of the parent stays.
	early, cancel2 := context.WithTimeout(context.Background(), time.Second)
	defer cancel2()
	if withBudget(early, time.Hour) != early {
		t.Error("The parent's earlier deadline was replaced")
	}
}

// TestServeDNSBudget: the next handler sees the budget as a deadline, and a
// handler that waits on it (forward against a silent upstream) is answered
// SERVFAIL and counted.
func TestServeDNSBudget(t *testing.T) {
	var dl time.Time
	var hasDL bool
	next := plugin.HandlerFunc(func(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
		dl, hasDL = ctx.Deadline()
		return dns.RcodeSuccess, nil
	})
	n := Nodelocal{Next: next}
	r := new(dns.Msg)
	r.SetQuestion("example.org.", dns.TypeA)
	start := time.Now()
	n.ServeDNS(context.Background(), dnstest.NewRecorder(&test.ResponseWriter{}), r)
	if !hasDL || dl.Before(start.Add(UpstreamBudget)) || dl.After(time.Now().Add(UpstreamBudget)) {
		t.Errorf("Next handler's deadline %v (set %v), want %v after the query came", dl, hasDL, UpstreamBudget)
	}

	before := testutil.ToFloat64(budgetSpent)
	blocked := plugin.HandlerFunc(func(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
		<-ctx.Done()
		return dns.RcodeServerFailure, ctx.Err()
	})
	// The budget is a constant; a parent deadline shorter than it stands in.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	rcode, _ := Nodelocal{Next: blocked}.ServeDNS(ctx, dnstest.NewRecorder(&test.ResponseWriter{}), r)
	if rcode != dns.RcodeServerFailure {
		t.Errorf("Rcode %d after the budget, want SERVFAIL", rcode)
	}
	if got := testutil.ToFloat64(budgetSpent) - before; got != 1 {
		t.Errorf("upstream_budget_exceeded_total rose by %v, want 1", got)
	}
}
