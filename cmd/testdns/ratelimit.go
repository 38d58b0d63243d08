package main

import (
	"context"
	"sync"
	"time"
)

// rateLimiter spaces lookup starts evenly across all workers: each wait
// reserves the next free slot, one interval after the previous one. A
// limiter that falls behind (workers slower than the rate) does not save up
// slots, so there is never a catch-up burst.
type rateLimiter struct {
	mu       sync.Mutex
	interval time.Duration
	next     time.Time
}

// newRateLimiter returns a limiter for perSecond starts per second, or nil
// (no limit) when perSecond is 0.
func newRateLimiter(perSecond float64) *rateLimiter {
	if perSecond <= 0 {
		return nil
	}
	return &rateLimiter{interval: time.Duration(float64(time.Second) / perSecond)}
}

// wait blocks until the caller's slot comes and reports false if ctx ended
// first. A nil limiter never waits.
func (l *rateLimiter) wait(ctx context.Context) bool {
	if l == nil {
		return ctx.Err() == nil
	}
	l.mu.Lock()
	now := time.Now()
	slot := l.next
	if slot.Before(now) {
		slot = now
	}
	l.next = slot.Add(l.interval)
	l.mu.Unlock()

	d := time.Until(slot)
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
