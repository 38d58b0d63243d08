package hitpath

import (
	"context"
	"encoding/binary"
	"errors"
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
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

const (
	batchSize = 64
	// udpSize is how much of a query is read, as miekg/dns reads for
	// CoreDNS (dns.MinMsgSize).
	udpSize = dns.MinMsgSize
)

// batchConn is what ipv4.PacketConn and ipv6.PacketConn have in common:
// recvmmsg and sendmmsg.
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// listener serves one of CoreDNS's UDP sockets: cache hits it answers from
// its store, in batches; every other query goes to the server's ServeDNS,
// as miekg/dns would have sent it.
type listener struct {
	srv   *dnsserver.Server
	paths *paths
	store *store
	ino   uint64
	conn  *net.UDPConn
	bc    batchConn
	local *net.UDPAddr
	fam   string

	stopOnce sync.Once
	done     chan struct{}
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

// udpSocket is one of this process's UDP sockets bound to an address.
type udpSocket struct {
	fd  int
	ino uint64
}

// udpSockets lists this process's UDP sockets bound to ap, one per socket
// (a socket open under several descriptors is listed once).
func udpSockets(ap netip.AddrPort) ([]udpSocket, error) {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil, fmt.Errorf("list own sockets: %w", err)
	}
	var out []udpSocket
	seen := map[uint64]bool{}
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var st unix.Stat_t
		if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK || seen[st.Ino] {
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
		if got == ap {
			seen[st.Ino] = true
			out = append(out, udpSocket{fd: fd, ino: st.Ino})
		}
	}
	return out, nil
}

// openListener takes one socket of srv's address that no listener of this
// instance serves yet, and returns a listener for it, after stopping any
// listener of an older instance that served it.
func (ps *paths) openListener(srv *dnsserver.Server, ap netip.AddrPort) (*listener, error) {
	socks, err := udpSockets(ap)
	if err != nil {
		return nil, err
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for _, s := range socks {
		if ps.claimed[s.ino] {
			continue
		}
		dup, err := unix.FcntlInt(uintptr(s.fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("duplicate UDP socket %s: %w", ap, err)
		}
		f := os.NewFile(uintptr(dup), "udp "+ap.String())
		pc, err := net.FilePacketConn(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("open UDP socket %s: %w", ap, err)
		}
		conn := pc.(*net.UDPConn)
		l := &listener{srv: srv, paths: ps, store: ps.storeFor(srv.Addr), ino: s.ino, conn: conn,
			local: net.UDPAddrFromAddrPort(ap), fam: familyLabel(ap.Addr().Is6()), done: make(chan struct{})}
		if ap.Addr().Is6() {
			l.bc = ipv6.NewPacketConn(conn)
		} else {
			l.bc = ipv4.NewPacketConn(conn)
		}
		ps.claimed[s.ino] = true
		ps.listeners = append(ps.listeners, l)
		ownersMu.Lock()
		old := owners[s.ino]
		owners[s.ino] = l
		ownersMu.Unlock()
		if old != nil {
			old.stop()
		}
		return l, nil
	}
	return nil, fmt.Errorf("no UDP socket of %s left to serve", ap)
}

// stop makes the listener's loop return.
func (l *listener) stop() {
	l.stopOnce.Do(func() {
		close(l.done)
		l.conn.SetReadDeadline(time.Unix(1, 0))
	})
}

func (l *listener) stopped() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
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
		l.conn.Close()
	}()
	in := make([]ipv4.Message, batchSize)
	for i := range in {
		in[i].Buffers = [][]byte{make([]byte, udpSize)}
	}
	out := make([]ipv4.Message, batchSize)
	outBufs := make([][]byte, batchSize)
	for i := range outBufs {
		outBufs[i] = make([]byte, 0, 512)
		out[i].Buffers = [][]byte{nil}
	}
	key := make([]byte, 0, maxKey)
	for {
		n, err := l.bc.ReadBatch(in, 0)
		if err != nil {
			if l.stopped() {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			log.Warningf("Read from %s: %v", l.local, err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		start := time.Now()
		now := start.UnixNano()
		k := 0
		for i := range in[:n] {
			m := &in[i]
			q := m.Buffers[0][:m.N]
			if m.N < headerLen {
				continue // as miekg/dns: too short to answer
			}
			var (
				nameEnd int
				ok      bool
			)
			key, nameEnd, ok = queryKey(key[:0], q)
			if ok && m.Flags&unix.MSG_TRUNC == 0 {
				if e := l.store.get(key); e != nil {
					var reply []byte
					if reply, ok = e.answerInto(outBufs[k], q, now); ok {
						outBufs[k] = reply
						out[k].Buffers[0] = reply
						out[k].Addr = m.Addr
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
			addr, _ := m.Addr.(*net.UDPAddr)
			go l.slow(p, addr)
		}
		for sent := 0; sent < k; {
			w, err := l.bc.WriteBatch(out[sent:k], 0)
			if err != nil {
				log.Debugf("Write to clients from %s: %v", l.local, err)
				break
			}
			sent += w
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

// slow serves q as miekg/dns serves a UDP query for CoreDNS: a reply for a
// header it rejects, else ServeDNS of the server.
func (l *listener) slow(p *pending, from *net.UDPAddr) {
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
	return w.l.conn.WriteToUDP(b, w.remote)
}

func (w *writer) WriteMsg(m *dns.Msg) error {
	data, err := m.Pack()
	if err != nil {
		return err
	}
	if _, err := w.Write(data); err != nil {
		return err
	}
	if h := w.p.hit; h != nil && w.p.key != "" && !m.Truncated {
		w.l.learn(h, w.p, m, data)
	}
	return nil
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
