package nodelocal

import (
	"context"
	"sync"
	"time"

	"github.com/coredns/coredns/plugin"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// UpstreamBudget bounds how long a query waits for the upstream behind the
// cache. forward alone can hold a query for its 5 s retry window and,
// against an upstream that drops packets, for a TCP dial whose timeout it
// tunes between 1 s and 30 s: the client gives up first (glibc after 5 s)
// and asks again. With the budget every query gets an answer well inside a
// client's timeout: SERVFAIL when the upstream has not answered (a cached
// answer, when serve_stale has one, comes from the cache before that).
// 3 s leaves a slow upstream forward's whole 2 s read timeout.
const UpstreamBudget = 3 * time.Second

var budgetSpent = promauto.NewCounter(prometheus.CounterOpts{
	Namespace: plugin.Namespace,
	Subsystem: "nodelocal",
	Name:      "upstream_budget_exceeded_total",
	Help:      "Counter of queries answered SERVFAIL because the upstream did not answer within the query's budget.",
})

// withBudget gives ctx a deadline d from now unless it has an earlier one.
// The context costs no timer until something waits on it: a cache hit
// never does, only forward's dial and retry loop.
func withBudget(ctx context.Context, d time.Duration) context.Context {
	deadline := time.Now().Add(d)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		return ctx
	}
	return &budgetCtx{Context: ctx, deadline: deadline}
}

// budgetCtx is a context with a deadline whose Done channel and timer are
// made on the first call of Done. It is never cancelled early, so work a
// query starts in the background (the cache's prefetch and stale refresh)
// keeps running until the deadline, as it would without it.
type budgetCtx struct {
	context.Context
	deadline time.Time

	once sync.Once
	done chan struct{}
}

func (c *budgetCtx) Deadline() (time.Time, bool) { return c.deadline, true }

func (c *budgetCtx) Done() <-chan struct{} {
	c.once.Do(func() {
		c.done = make(chan struct{})
		parent := c.Context.Done()
		t := time.NewTimer(time.Until(c.deadline))
		go func() {
			defer t.Stop()
			select {
			case <-t.C:
			case <-parent: // nil for a parent that is never cancelled
			}
			close(c.done)
		}()
	})
	return c.done
}

func (c *budgetCtx) Err() error {
	if err := c.Context.Err(); err != nil {
		return err
	}
	if !time.Now().Before(c.deadline) {
		return context.DeadlineExceeded
	}
	return nil
}
