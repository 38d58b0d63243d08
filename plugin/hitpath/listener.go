package hitpath

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/coredns/coredns/core/dnsserver"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

const (
	batchSize = 64
	// udpSize is how much of a query is read, as miekg/dns reads for
	// CoreDNS (dns.MinMsgSize).
	udpSize = dns.MinMsgSize
)

// listener serves one of CoreDNS's UDP sockets: cache hits it answers from
// its store, in batches; every other query goes to the server's ServeDNS,
// as miekg/dns would have sent it.
type listener struct {
	srv   *dnsserver.Server
	paths *paths
	store *store
	ino   uint64
	fd    int // CoreDNS's descriptor of the socket
	io    *batchIO
	local *net.UDPAddr
	fam   string

	stopOnce sync.Once
	exited   chan struct{}
	// slow counts the queries handed to the chain and not yet answered:
	// their replies go out through the listener's descriptor, which closes
	// only when they are done (after a reload, the old instance's).
	slow sync.WaitGroup
}

// owners maps a socket (by inode) to the listener serving it, across
// instances: on a reload the new instance's listener takes the socket over
// from the old one.
var (
	ownersMu sync.Mutex
	owners   = map[uint64]*listener{}
)

// listenAddr returns the address of a server address ("dns://IP:port"), and
// false for a wildcard or anything else.
func listenAddr(addr string) (netip.AddrPort, bool) {
	const prefix = "dns://"
	if len(addr) <= len(prefix) || addr[:len(prefix)] != prefix {
		return netip.AddrPort{}, false
	}
	ap, err := netip.ParseAddrPort(addr[len(prefix):])
	if err != nil || ap.Addr().IsUnspecified() {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}

// udpSocket is a descriptor of one of this process's UDP sockets.
type udpSocket struct {
	fd   int
	ino  uint64
	addr netip.AddrPort
}

// udpSockets lists this process's descriptors of UDP sockets bound to ap,
// or of all its UDP sockets when ap is the zero value.
func udpSockets(ap netip.AddrPort) ([]udpSocket, error) {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil, fmt.Errorf("list own sockets: %w", err)
	}
	var out []udpSocket
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var st unix.Stat_t
		if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
			continue
		}
		if p, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL); err != nil || p != unix.IPPROTO_UDP {
			continue
		}
		sa, err := unix.Getsockname(fd)
		if err != nil {
			continue
		}
		var got netip.AddrPort
		switch a := sa.(type) {
		case *unix.SockaddrInet4:
			got = netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
		case *unix.SockaddrInet6:
			got = netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), uint16(a.Port))
		default:
			continue
		}
		if got == ap || !ap.IsValid() {
			out = append(out, udpSocket{fd: fd, ino: st.Ino, addr: got})
		}
	}
	return out, nil
}

// openListener takes one socket of srv's address that no listener of this
// instance serves yet, through this instance's descriptor of it, and
// returns a listener for it, after stopping any listener of an older
// instance that served it.
func (ps *paths) openListener(srv *dnsserver.Server, ap netip.AddrPort) (*listener, error) {
	socks, err := udpSockets(ap)
	if err != nil {
		return nil, err
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ownersMu.Lock()
	// A reload gives the new instance a descriptor of its own for each
	// socket; the older instances' descriptors close when they are gone
	// (or when CoreDNS stops serving them), so a listener must read its own
	// instance's: one opened after the instance started up.
	var pick *udpSocket
	for i, s := range socks {
		if ps.claimed[s.ino] || ps.before[s] {
			continue
		}
		pick = &socks[i]
		break
	}
	if pick == nil {
		ownersMu.Unlock()
		return nil, fmt.Errorf("no UDP socket of %s left to serve", ap)
	}
	old := owners[pick.ino]
	ownersMu.Unlock()
	if old != nil {
		old.stop() // before its instance, and the descriptor it reads, go
	}
	bio, err := newBatchIO(pick.fd, batchSize, udpSize)
	if err != nil {
		return nil, err
	}
	l := &listener{srv: srv, paths: ps, store: ps.storeFor(srv.Addr), ino: pick.ino, fd: pick.fd, io: bio,
		local: net.UDPAddrFromAddrPort(ap), fam: familyLabel(ap.Addr().Is6()), exited: make(chan struct{})}
	ps.claimed[pick.ino] = true
	ps.listeners = append(ps.listeners, l)
	ownersMu.Lock()
	owners[pick.ino] = l
	ownersMu.Unlock()
	return l, nil
}

// stop makes the listener's loop return and waits for it.
func (l *listener) stop() {
	l.stopOnce.Do(l.io.stop)
	<-l.exited
}

// serve reads queries in batches until the listener stops, answers the
// cache hits it holds in batches, and hands every other query to the
// server.
func (l *listener) serve() {
	defer func() {
		ownersMu.Lock()
		if owners[l.ino] == l {
			delete(owners, l.ino)
		}
		ownersMu.Unlock()
		go func() {
			l.slow.Wait()
			l.io.close()
		}()
		close(l.exited)
	}()
	replies := make([][]byte, batchSize)
	bufs := make([][]byte, batchSize)
	for i := range bufs {
		bufs[i] = make([]byte, 0, 512)
	}
	from := make([]int, batchSize)
	key := make([]byte, 0, maxKey)
	for {
		n, err := l.io.read()
		if err != nil {
			if err == errStopped {
				return
			}
			if err == errClosed {
				log.Warningf("Stopped serving a UDP socket of %s: %v", l.local, err)
				return
			}
			log.Debugf("Read from %s: %v", l.local, err)
			time.Sleep(time.Millisecond) // a socket error: do not spin on it
			continue
		}
		start := time.Now()
		now := start.UnixNano()
		k := 0
		for i := range n {
			q := l.io.bufs[i][:l.io.hdrs[i].Len]
			if len(q) < headerLen {
				continue // as miekg/dns: too short to answer
			}
			var (
				nameEnd int
				ok      bool
			)
			key, nameEnd, ok = queryKey(key[:0], q)
			if ok && !l.io.truncated(i) {
				if e := l.store.get(key); e != nil {
					var reply []byte
					if reply, ok = e.answerInto(bufs[k], q, now); ok {
						bufs[k] = reply
						replies[k] = reply
						from[k] = i
						k++
						e.counters.count(time.Since(start).Seconds(), len(q), e.respLen)
						continue
					}
				}
			}
			p := &pending{l: l, q: append([]byte(nil), q...)}
			if ok {
				p.key, p.nameEnd = string(key), nameEnd
			}
			l.slow.Add(1)
			go l.serveSlow(p, l.io.addr(i))
		}
		if k > 0 {
			if err := l.io.write(replies[:k], from[:k]); err != nil {
				log.Debugf("Write to clients of %s: %v", l.local, err)
			}
		}
	}
}

// pending is one query a listener hands to the chain. A HitPath handler in
// the chain sets hit when the cache answered it from its store.
type pending struct {
	l       *listener
	q       []byte
	key     string // empty when the fast path may not answer the query
	nameEnd int

	hit          *HitPath
	respLen      int
	server, view string
}

type pendingKey struct{}

// serveSlow serves q as miekg/dns serves a UDP query for CoreDNS: a reply for a
// header it rejects, else ServeDNS of the server.
func (l *listener) serveSlow(p *pending, from *net.UDPAddr) {
	defer l.slow.Done()
	w := &writer{l: l, remote: from, p: p}
	q := p.q
	dh := dns.Header{Id: binary.BigEndian.Uint16(q), Bits: binary.BigEndian.Uint16(q[2:]),
		Qdcount: binary.BigEndian.Uint16(q[4:]), Ancount: binary.BigEndian.Uint16(q[6:]),
		Nscount: binary.BigEndian.Uint16(q[8:]), Arcount: binary.BigEndian.Uint16(q[10:])}
	req := new(dns.Msg)
	action := dns.DefaultMsgAcceptFunc(dh)
	if action == dns.MsgIgnore {
		return
	}
	if action == dns.MsgAccept {
		if err := req.Unpack(q); err == nil {
			ctx := context.WithValue(context.Background(), dnsserver.Key{}, l.srv)
			ctx = context.WithValue(ctx, dnsserver.LoopKey{}, 0)
			ctx = context.WithValue(ctx, pendingKey{}, p)
			l.srv.ServeDNS(ctx, w, req)
			return
		}
	}
	// Rejected or unreadable: FORMERR (NOTIMP for an opcode it does not
	// take) with the header only, as miekg/dns answers.
	rej := new(dns.Msg)
	setHeader(rej, dh)
	opcode := rej.Opcode
	rej.SetRcodeFormatError(rej)
	rej.Zero = false
	if action == dns.MsgRejectNotImplemented {
		rej.Opcode = opcode
		rej.Rcode = dns.RcodeNotImplemented
	}
	rej.Question = nil
	w.WriteMsg(rej)
}

// setHeader sets m's header fields from dh's bits.
func setHeader(m *dns.Msg, dh dns.Header) {
	m.Id = dh.Id
	m.Response = dh.Bits&(1<<15) != 0
	m.Opcode = int(dh.Bits>>11) & 0xf
	m.Authoritative = dh.Bits&(1<<10) != 0
	m.Truncated = dh.Bits&(1<<9) != 0
	m.RecursionDesired = dh.Bits&(1<<8) != 0
	m.RecursionAvailable = dh.Bits&(1<<7) != 0
	m.Zero = dh.Bits&(1<<6) != 0
	m.AuthenticatedData = dh.Bits&(1<<5) != 0
	m.CheckingDisabled = dh.Bits&(1<<4) != 0
	m.Rcode = int(dh.Bits & 0xf)
}

// writer is the dns.ResponseWriter of a query a listener hands to the
// chain: it writes to the client through the listener's socket, and
// learns the reply when the cache answered from its store.
type writer struct {
	l      *listener
	remote *net.UDPAddr
	p      *pending
}

func (w *writer) LocalAddr() net.Addr  { return w.l.local }
func (w *writer) RemoteAddr() net.Addr { return w.remote }
func (w *writer) Close() error         { return nil }
func (w *writer) TsigStatus() error    { return nil }
func (w *writer) TsigTimersOnly(bool)  {}
func (w *writer) Hijack()              {}

func (w *writer) Write(b []byte) (int, error) {
	if err := w.l.io.sendTo(b, w.remote); err != nil {
		return 0, err
	}
	return len(b), nil
}

func (w *writer) WriteMsg(m *dns.Msg) error {
	data, err := m.Pack()
	if err != nil {
		return err
	}
	// Learn first: the client may ask again as soon as it has the reply.
	if h := w.p.hit; h != nil && w.p.key != "" && !m.Truncated {
		w.l.learn(h, w.p, m, data)
	}
	_, err = w.Write(data)
	return err
}

// learn stores reply, the chain's answer to p from the cache, for the next
// queries with p's key.
func (l *listener) learn(h *HitPath, p *pending, m *dns.Msg, reply []byte) {
	e := newEntry(reply, p.q, p.nameEnd, h.shuffled, time.Now().UnixNano())
	if e == nil {
		return
	}
	// The TTL the fast path counts down runs up to a second behind the
	// cache's (the cache stored the reply a moment before it was seen), so
	// it hands a reply back to the chain a second early: it never answers
	// what the cache would find expired or due for prefetch.
	e.stopAt = 1
	if h.prefetchPct > 0 {
		e.stopAt += uint32((uint64(e.minTTL)*uint64(h.prefetchPct) + 99) / 100)
	}
	lb := h.labels
	lb.server, lb.view, lb.family = p.server, p.view, l.fam
	if h.metrics != nil && len(m.Question) == 1 {
		lb.zone = h.zoneOf(m.Question[0].Name)
	}
	qtype := binary.BigEndian.Uint16(p.q[p.nameEnd:])
	do := p.key[len(p.key)-1]&0x80 != 0 && p.key[len(p.key)-4] == 1
	e.counters = l.paths.counters.get(lb, qtype, do, e.rcode, e.denial)
	e.respLen = p.respLen
	l.store.put(p.key, e)
}

// serveSocket is installed as the blocks' UDPDecorateWriterFunc: CoreDNS
// calls it in ServePacket, on the goroutine that serves a UDP socket, just
// before miekg/dns would start reading it. When a block of srv's address
// has the fast path on, the listener serves the socket on this goroutine
// and, when it stops, ends the goroutine (miekg/dns never reads the
// socket); otherwise it returns and CoreDNS serves the socket as usual.
func (ps *paths) serveSocket(srv *dnsserver.Server) dns.DecorateWriter {
	ap, ok := listenAddr(srv.Addr)
	if !ok || !ps.onFor(srv.Addr) || len(srv.TsigSecret) > 0 {
		if !ok && ps.onFor(srv.Addr) {
			logOnce("Off on %s: it needs a listen address of its own (bind), not a wildcard", srv.Addr)
		}
		return nil
	}
	l, err := ps.openListener(srv, ap)
	if err != nil {
		log.Warningf("Off on one UDP socket of %s: %v", srv.Addr, err)
		return nil
	}
	l.serve()
	runtime.Goexit()
	return nil
}
