package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nodelocaldns/nodelocaldns/internal/dnsload"
)

// UniqueMark in a -host name is replaced, on every lookup, by a number no
// other lookup of the run uses, after a random tag of the run: each lookup
// asks a name no cache holds yet (the miss path).
const UniqueMark = "{n}"

// namer hands out the names to look up.
type namer struct {
	tag string
	seq atomic.Uint64
}

func newNamer() *namer {
	b := make([]byte, 3)
	rand.Read(b)
	return &namer{tag: hex.EncodeToString(b)}
}

// name returns host with UniqueMark replaced by a fresh number.
func (n *namer) name(host string) string {
	if !strings.Contains(host, UniqueMark) {
		return host
	}
	return strings.ReplaceAll(host, UniqueMark, n.tag+"-"+strconv.FormatUint(n.seq.Add(1), 10))
}

// workerStats is what one worker counts. Only its worker writes it, and it
// is read after the workers are done, so it needs no locking.
type workerStats struct {
	hist     *Histogram
	slow     uint64
	aborted  uint64
	kinds    [numKinds]uint64
	examples [numKinds]string
	hosts    []hostStats // indexed like Config.Hosts
}

// hostStats counts the lookups of one name.
type hostStats struct {
	requests, errors, slow uint64
}

func newWorkerStats(hosts int) *workerStats {
	return &workerStats{hist: newHistogram(), hosts: make([]hostStats, hosts)}
}

// merge adds o into s.
func (s *workerStats) merge(o *workerStats) {
	s.hist.Merge(o.hist)
	s.slow += o.slow
	s.aborted += o.aborted
	for k := range s.kinds {
		s.kinds[k] += o.kinds[k]
		if s.examples[k] == "" {
			s.examples[k] = o.examples[k]
		}
	}
	for i := range s.hosts {
		s.hosts[i].requests += o.hosts[i].requests
		s.hosts[i].errors += o.hosts[i].errors
		s.hosts[i].slow += o.hosts[i].slow
	}
}

// liveCounters feed the progress line while workers run.
type liveCounters struct {
	requests, errors, slow atomic.Uint64
}

// Run looks names up with cfg.Concurrency workers, each with a resolver of
// its own, until cfg.Duration has passed, and returns the summary. No lookup
// starts after the deadline; lookups still in flight then are allowed to
// finish, each bounded by cfg.Timeout, so the run ends by Duration+Timeout.
// Cancelling ctx (Ctrl-C) stops at once: in-flight lookups are abandoned,
// counted as aborted rather than as errors, and the partial summary is
// returned with Interrupted set. A progress line is written to progress
// every second unless it is nil.
func Run(ctx context.Context, cfg Config, progress io.Writer) (*dnsload.Summary, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("invalid configuration: %w", err)
	}
	lookupers := make([]lookuper, cfg.Concurrency)
	for i := range lookupers {
		l, err := newLookuper(cfg)
		if err != nil {
			return nil, fmt.Errorf("create resolver for worker %d: %w", i, err)
		}
		lookupers[i] = l
	}

	start := time.Now()
	deadline := start.Add(cfg.Duration)
	// startCtx ends at the deadline: it bounds waiting to start a lookup.
	startCtx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()

	limiter := newRateLimiter(cfg.Rate)
	names := newNamer()
	var live liveCounters
	stats := make([]*workerStats, cfg.Concurrency)
	var wg sync.WaitGroup
	for w := range cfg.Concurrency {
		stats[w] = newWorkerStats(len(cfg.Hosts))
		wg.Go(func() {
			runWorker(ctx, startCtx, cfg, w, lookupers[w], limiter, names, stats[w], &live)
		})
	}

	done := make(chan struct{})
	var progressDone sync.WaitGroup
	if progress != nil {
		progressDone.Go(func() { reportProgress(progress, start, cfg.Limit, &live, done) })
	}
	wg.Wait()
	close(done)
	progressDone.Wait()

	total := newWorkerStats(len(cfg.Hosts))
	for _, s := range stats {
		total.merge(s)
	}
	return newSummary(cfg, total, start, time.Since(start), ctx.Err() != nil), nil
}

// runWorker is one worker's loop: wait for a start slot, look up the next
// name, record the outcome.
func runWorker(ctx, startCtx context.Context, cfg Config, w int, l lookuper, limiter *rateLimiter, names *namer, st *workerStats, live *liveCounters) {
	s, canSettle := l.(settler)
	for i := w; ; i++ {
		if canSettle {
			s.settle(startCtx)
		}
		if !limiter.wait(startCtx) {
			return
		}
		if dl, _ := startCtx.Deadline(); !time.Now().Before(dl) {
			return // the context's timer may fire a little late
		}
		hi := i % len(cfg.Hosts)
		lctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
		t0 := time.Now()
		err := l.lookup(lctx, names.name(cfg.Hosts[hi]))
		lat := time.Since(t0)
		kind := KindOther
		if err != nil {
			kind = classify(lctx, err)
		}
		cancel()

		if err != nil && ctx.Err() != nil {
			// Interrupted mid-lookup: neither an answer nor a DNS error.
			st.aborted++
			return
		}
		st.hist.Record(lat)
		st.hosts[hi].requests++
		live.requests.Add(1)
		if lat >= cfg.Limit {
			st.slow++
			st.hosts[hi].slow++
			live.slow.Add(1)
		}
		if err != nil {
			st.kinds[kind]++
			if st.examples[kind] == "" {
				st.examples[kind] = err.Error()
			}
			st.hosts[hi].errors++
			live.errors.Add(1)
		}
	}
}

// reportProgress writes one line a second until done is closed.
func reportProgress(w io.Writer, start time.Time, limit time.Duration, live *liveCounters, done <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var last uint64
	lastAt := start
	for {
		select {
		case <-done:
			return
		case now := <-t.C:
			n := live.requests.Load()
			rate := float64(n-last) / now.Sub(lastAt).Seconds()
			last, lastAt = n, now
			fmt.Fprintf(w, "%5.0fs  requests: %d  errors: %d  >= %s: %d  lookups/s: %.1f\n",
				now.Sub(start).Seconds(), n, live.errors.Load(), fmtMS(limit), live.slow.Load(), rate)
		}
	}
}
