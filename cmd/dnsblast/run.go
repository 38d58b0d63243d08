package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"sync"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/ipv4"

	"github.com/nodelocaldns/nodelocaldns/bench"
)

// pending is one query in flight: its ID and when it went out.
type pending struct {
	id   uint16
	sent time.Time
}

// blaster keeps the queries in flight and the figures.
type blaster struct {
	c        config
	inflight map[uint16]time.Time // by ID
	order    []pending            // in the order sent: the oldest times out first
	nextID   uint16
	res      bench.Dnsperf
	latSum   time.Duration
	minLat   time.Duration
	maxLat   time.Duration
	rcodes   [16]uint64
}

// run sends for c.duration (or until c.count queries went out), then waits
// at most c.timeout for the answers still due, from c.sockets sockets at
// once, each with its share of the queries outstanding and of the count.
func run(c config) (bench.Dnsperf, error) {
	raddr, err := net.ResolveUDPAddr("udp4", c.server)
	if err != nil {
		return bench.Dnsperf{}, fmt.Errorf("server %q: %w", c.server, err)
	}
	q, err := c.query()
	if err != nil {
		return bench.Dnsperf{}, fmt.Errorf("pack the query for %s: %w", c.name, err)
	}
	n := max(c.sockets, 1)
	blasters := make([]*blaster, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range blasters {
		share := c
		share.outstanding = c.outstanding / n
		share.count = c.count / uint64(n)
		if i < c.outstanding%n {
			share.outstanding++
		}
		if uint64(i) < c.count%uint64(n) {
			share.count++
		}
		b := &blaster{c: share, inflight: make(map[uint16]time.Time, share.outstanding), minLat: time.Duration(math.MaxInt64)}
		blasters[i] = b
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = b.run(raddr, q, start)
		}()
	}
	wg.Wait()
	total := &blaster{minLat: time.Duration(math.MaxInt64)}
	for _, b := range blasters {
		total.add(b)
	}
	return total.figures(time.Since(start)), errors.Join(errs...)
}

// run is one socket's part of the run.
func (b *blaster) run(raddr *net.UDPAddr, q []byte, start time.Time) error {
	c := b.c
	if c.count == 0 {
		return nil
	}
	conn, err := net.DialUDP("udp4", nil, raddr)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", raddr, err)
	}
	defer conn.Close()
	// Room for a whole window of answers: a burst waits, it is not dropped.
	conn.SetReadBuffer(4 << 20)
	conn.SetWriteBuffer(4 << 20)
	pc := ipv4.NewPacketConn(conn)

	out := make([]ipv4.Message, c.batch)
	for i := range out {
		buf := make([]byte, len(q))
		copy(buf, q)
		out[i].Buffers = [][]byte{buf}
	}
	in := make([]ipv4.Message, c.batch)
	for i := range in {
		in[i].Buffers = [][]byte{make([]byte, 4096)}
	}

	stop := start.Add(c.duration)
	for now := time.Now(); now.Before(stop) && b.res.Sent < c.count; now = time.Now() {
		if err := b.send(pc, out, now); err != nil {
			return err
		}
		if err := b.read(pc, in, now.Add(10*time.Millisecond)); err != nil {
			return err
		}
		b.expire(time.Now())
	}
	// The answers still due.
	for drain := time.Now().Add(c.timeout); len(b.inflight) > 0 && time.Now().Before(drain); {
		if err := b.read(pc, in, drain); err != nil {
			return err
		}
	}
	b.res.Lost += uint64(len(b.inflight))
	return nil
}

// add adds o's counts to b's.
func (b *blaster) add(o *blaster) {
	b.res.Sent += o.res.Sent
	b.res.Completed += o.res.Completed
	b.res.Lost += o.res.Lost
	b.latSum += o.latSum
	if o.res.Completed > 0 {
		b.minLat = min(b.minLat, o.minLat)
		b.maxLat = max(b.maxLat, o.maxLat)
	}
	for i, n := range o.rcodes {
		b.rcodes[i] += n
	}
}

// send fills the window, a batch per call, once a whole batch is missing
// (or nothing is in flight): topping it up one query per answer would cost
// a system call per query, as much as the server's.
func (b *blaster) send(pc *ipv4.PacketConn, out []ipv4.Message, now time.Time) error {
	k := b.c.outstanding - len(b.inflight)
	if k < min(len(out), b.c.outstanding) && len(b.inflight) > 0 {
		return nil
	}
	if left := b.c.count - b.res.Sent; uint64(k) > left {
		k = int(left)
	}
	for k > 0 {
		n := min(k, len(out))
		ids := make([]uint16, 0, n)
		for i := 0; i < n; i++ {
			id := b.freeID()
			binary.BigEndian.PutUint16(out[i].Buffers[0], id)
			ids = append(ids, id)
		}
		sent, err := pc.WriteBatch(out[:n], 0)
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("send queries: %w", err)
		}
		for _, id := range ids[:sent] {
			b.inflight[id] = now
			b.order = append(b.order, pending{id, now})
		}
		b.res.Sent += uint64(sent)
		if sent < n {
			return nil // the socket buffer is full: read first
		}
		k -= n
	}
	return nil
}

// freeID returns the next query ID not in flight.
func (b *blaster) freeID() uint16 {
	for {
		b.nextID++
		if _, busy := b.inflight[b.nextID]; !busy {
			return b.nextID
		}
	}
}

// read takes the answers that have arrived, waiting until deadline for the
// first one.
func (b *blaster) read(pc *ipv4.PacketConn, in []ipv4.Message, deadline time.Time) error {
	if len(b.inflight) == 0 {
		return nil
	}
	pc.SetReadDeadline(deadline)
	n, err := pc.ReadBatch(in, 0)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read answers: %w", err)
	}
	now := time.Now()
	for _, m := range in[:n] {
		p := m.Buffers[0][:m.N]
		if len(p) < 12 || p[2]&0x80 == 0 { // not a DNS response
			continue
		}
		id := binary.BigEndian.Uint16(p)
		sent, ok := b.inflight[id]
		if !ok {
			continue // late: counted lost already
		}
		delete(b.inflight, id)
		lat := now.Sub(sent)
		b.latSum += lat
		b.minLat = min(b.minLat, lat)
		b.maxLat = max(b.maxLat, lat)
		b.rcodes[p[3]&0x0f]++
		b.res.Completed++
	}
	return nil
}

// expire counts the queries in flight longer than the timeout as lost.
func (b *blaster) expire(now time.Time) {
	i := 0
	for ; i < len(b.order); i++ {
		p := b.order[i]
		sent, ok := b.inflight[p.id]
		if ok && !sent.Equal(p.sent) {
			continue // the ID was answered and reused; the new query is later in order
		}
		if ok && now.Sub(sent) < b.c.timeout {
			break
		}
		if ok {
			delete(b.inflight, p.id)
			b.res.Lost++
		}
	}
	b.order = b.order[i:]
}

// figures fills the summary for a run of elapsed.
func (b *blaster) figures(elapsed time.Duration) bench.Dnsperf {
	r := b.res
	r.RunTimeS = elapsed.Seconds()
	if r.RunTimeS > 0 {
		r.QPS = float64(r.Completed) / r.RunTimeS
	}
	if r.Completed > 0 {
		r.AvgLatMS = float64(b.latSum) / float64(r.Completed) / 1e6
		r.MinLatMS = float64(b.minLat) / 1e6
		r.MaxLatMS = float64(b.maxLat) / 1e6
	}
	r.NoError = b.rcodes[dns.RcodeSuccess]
	for code, n := range b.rcodes {
		if n > 0 {
			if r.Responses != "" {
				r.Responses += ", "
			}
			r.Responses += fmt.Sprintf("%s %d", dns.RcodeToString[code], n)
		}
	}
	return r
}
