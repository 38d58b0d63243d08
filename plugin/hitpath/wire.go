package hitpath

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
)

// DNS wire-format constants the fast path reads (RFC 1035, RFC 6891).
const (
	headerLen = 12
	typeA     = 1
	typeSOA   = 6
	typeMX    = 15
	typeAAAA  = 28
	typeOPT   = 41
	classIN   = 1

	rcodeSuccess  = 0
	rcodeNXDomain = 3
)

// maxKey bounds a key: a name (255), type and class (4), flags (2), OPT (7).
const maxKey = 255 + 4 + 2 + 7

// queryKey checks that q is a query the fast path may answer and appends its
// key to dst. A key holds everything of the query that changes the reply
// besides the ID: the name as spelled, type and class, the header flags,
// and the OPT record (present, UDP size, DO). The name keeps its case: a
// name in a reply that points into the question takes the question's case,
// and CoreDNS's name compression is case sensitive, so whether it points
// there at all depends on the case asked. Anything unusual (not a plain QUERY, more than one question, records
// other than one option-less OPT, EDNS version or flags beyond DO, a
// compressed or malformed name, trailing bytes) gets ok false: the CoreDNS
// chain answers those. nameEnd is where the name ends in q.
func queryKey(dst, q []byte) (key []byte, nameEnd int, ok bool) {
	if len(q) < headerLen+5 {
		return dst, 0, false
	}
	// QR, opcode, TC: a plain, untruncated query.
	if q[2]&0x80 != 0 || q[2]&0x78 != 0 || q[2]&0x02 != 0 {
		return dst, 0, false
	}
	qd := binary.BigEndian.Uint16(q[4:])
	an := binary.BigEndian.Uint16(q[6:])
	ns := binary.BigEndian.Uint16(q[8:])
	ar := binary.BigEndian.Uint16(q[10:])
	if qd != 1 || an != 0 || ns != 0 || ar > 1 {
		return dst, 0, false
	}
	off := headerLen
	for {
		if off >= len(q) {
			return dst, 0, false
		}
		l := int(q[off])
		if l == 0 {
			off++
			break
		}
		if l&0xc0 != 0 {
			return dst, 0, false
		}
		off += l + 1
	}
	nameEnd = off
	if nameEnd-headerLen > 255 || off+4 > len(q) {
		return dst, 0, false
	}
	if binary.BigEndian.Uint16(q[off+2:]) != classIN {
		return dst, 0, false
	}
	off += 4
	dst = append(dst, q[headerLen:nameEnd+4]...)
	dst = append(dst, q[2], q[3])
	if ar == 0 {
		if off != len(q) {
			return dst, 0, false
		}
		return append(dst, 0), nameEnd, true
	}
	// One OPT: root name, type 41, class = UDP size, TTL = extended rcode,
	// version and flags, no options.
	if len(q)-off != 11 || q[off] != 0 || binary.BigEndian.Uint16(q[off+1:]) != typeOPT {
		return dst, 0, false
	}
	if q[off+5] != 0 || q[off+6] != 0 || q[off+7]&0x7f != 0 || q[off+8] != 0 || q[off+9] != 0 || q[off+10] != 0 {
		return dst, 0, false
	}
	return append(dst, 1, q[off+3], q[off+4], q[off+7]), nameEnd, true
}

// addrRun is a run of address records (A or AAAA, one owner) in a reply that
// loadbalance shuffles: n records of stride bytes, the first one's data at
// off, size bytes each.
type addrRun struct {
	off, n, stride, size int
}

// entry is one reply the fast path can give: the packet the CoreDNS chain
// sent for a cache hit, and where to patch it for another query with the
// same key.
type entry struct {
	wire      []byte   // the reply as sent
	ttlOff    []int    // offsets of the TTL fields that count down (all but OPT)
	ttl       []uint32 // their values when the reply was sent
	minTTL    uint32
	stopAt    uint32 // the chain answers again once the TTL left is this or less (prefetch)
	seen      int64  // when the reply was sent (time.Now().UnixNano())
	shuffle   []addrRun
	denial    bool // the cache counts the hit as denial, else success
	rcode     int
	counters  *counters
	respLen   int   // the reply's size as the prometheus plugin counts it
	expiresAt int64 // seen + minTTL seconds
}

// answerInto writes into dst the reply of e to query q (which has e's key),
// as at now, and reports whether e can answer: false once the TTL left is
// at or below the prefetch point.
func (e *entry) answerInto(dst, q []byte, now int64) ([]byte, bool) {
	if now < e.seen {
		return dst, false
	}
	elapsed := uint32((now - e.seen) / 1e9)
	if elapsed >= e.minTTL || e.minTTL-elapsed <= e.stopAt {
		return dst, false
	}
	dst = append(dst[:0], e.wire...)
	dst[0], dst[1] = q[0], q[1]
	for i, off := range e.ttlOff {
		binary.BigEndian.PutUint32(dst[off:], e.ttl[i]-elapsed)
	}
	for _, r := range e.shuffle {
		shuffleRun(dst, r)
	}
	return dst, true
}

// shuffleRun reorders the data of the records of r in b, as loadbalance's
// round_robin does with the records themselves: they share owner, type,
// class and TTL, so only their data differs.
func shuffleRun(b []byte, r addrRun) {
	var tmp [16]byte
	for i := r.n - 1; i > 0; i-- {
		j := rand.IntN(i + 1)
		if i == j {
			continue
		}
		a, c := r.off+i*r.stride, r.off+j*r.stride
		copy(tmp[:r.size], b[a:a+r.size])
		copy(b[a:a+r.size], b[c:c+r.size])
		copy(b[c:c+r.size], tmp[:r.size])
	}
}

// rr is one resource record of a reply, as parsed by parseReply.
type rr struct {
	start   int // first byte of the owner name
	nameEnd int // first byte after the owner name
	typ     uint16
	ttlOff  int
	data    int // first byte of the data
	size    int // data length
}

// skipName returns the offset after the (possibly compressed) name at off.
func skipName(b []byte, off int) (int, bool) {
	for n := 0; n < 128; n++ {
		if off >= len(b) {
			return 0, false
		}
		l := int(b[off])
		switch {
		case l == 0:
			return off + 1, true
		case l&0xc0 == 0xc0:
			if off+2 > len(b) {
				return 0, false
			}
			return off + 2, true
		case l&0xc0 != 0:
			return 0, false
		}
		off += l + 1
	}
	return 0, false
}

// parseReply splits a packed reply into its sections' records. It returns
// the offset after the question and false when the packet is malformed.
func parseReply(b []byte) (sections [3][]rr, qEnd int, ok bool) {
	if len(b) < headerLen {
		return sections, 0, false
	}
	if binary.BigEndian.Uint16(b[4:]) != 1 {
		return sections, 0, false
	}
	off, ok := skipName(b, headerLen)
	if !ok || off+4 > len(b) {
		return sections, 0, false
	}
	off += 4
	qEnd = off
	for s := 0; s < 3; s++ {
		count := int(binary.BigEndian.Uint16(b[6+2*s:]))
		for range count {
			start := off
			end, ok := skipName(b, off)
			if !ok || end+10 > len(b) {
				return sections, 0, false
			}
			size := int(binary.BigEndian.Uint16(b[end+8:]))
			if end+10+size > len(b) {
				return sections, 0, false
			}
			sections[s] = append(sections[s], rr{start: start, nameEnd: end, typ: binary.BigEndian.Uint16(b[end:]),
				ttlOff: end + 4, data: end + 10, size: size})
			off = end + 10 + size
		}
	}
	if off != len(b) {
		return sections, 0, false
	}
	return sections, qEnd, true
}

// newEntry builds the entry for reply, the packet the chain sent for query q
// (whose name ends at nameEnd). shuffled says loadbalance reorders the
// reply's address records. It returns nil for a reply the fast path must not
// repeat: a question that differs from q's, a TTL already at 0, or records
// loadbalance would reorder in a way the fast path does not copy.
func newEntry(reply, q []byte, nameEnd int, shuffled bool, now int64) *entry {
	secs, qEnd, ok := parseReply(reply)
	if !ok || qEnd != nameEnd+4 || !bytes.Equal(reply[headerLen:qEnd], q[headerLen:qEnd]) {
		return nil
	}
	if reply[2]&0x80 == 0 {
		return nil
	}
	e := &entry{wire: reply, seen: now, rcode: int(reply[3] & 0x0f)}
	switch e.rcode {
	case rcodeNXDomain:
		e.denial = true
	case rcodeSuccess:
		if len(secs[0]) == 0 {
			for _, r := range secs[1] {
				if r.typ == typeSOA {
					e.denial = true // NODATA
				}
			}
		}
	default:
		return nil
	}
	e.minTTL = ^uint32(0)
	for _, sec := range secs {
		for _, r := range sec {
			if r.typ == typeOPT {
				continue
			}
			t := binary.BigEndian.Uint32(reply[r.ttlOff:])
			e.ttlOff = append(e.ttlOff, r.ttlOff)
			e.ttl = append(e.ttl, t)
			e.minTTL = min(e.minTTL, t)
		}
	}
	if len(e.ttl) == 0 || e.minTTL == 0 {
		return nil
	}
	e.expiresAt = now + int64(e.minTTL)*1e9
	if shuffled && e.rcode == rcodeSuccess {
		for _, sec := range secs {
			run, ok := addressRun(reply, sec)
			if !ok {
				return nil
			}
			if run.n > 1 {
				e.shuffle = append(e.shuffle, run)
			}
		}
	}
	return e
}

// addressRun finds the address records of one section, which loadbalance
// shuffles. The fast path copies that for one run of records of one type
// that share owner, class and TTL, and when at most one MX record is there
// (loadbalance shuffles those too); else ok is false.
func addressRun(b []byte, sec []rr) (addrRun, bool) {
	first, n, mx := -1, 0, 0
	for i, r := range sec {
		switch r.typ {
		case typeA, typeAAAA:
			if first < 0 {
				first = i
			}
			n++
		case typeMX:
			mx++
		}
	}
	if mx > 1 {
		return addrRun{}, false
	}
	if n <= 1 {
		return addrRun{n: n}, true
	}
	f := sec[first]
	head := b[f.start:f.data]
	stride := f.data + f.size - f.start
	for i := first; i < first+n; i++ {
		if i >= len(sec) {
			return addrRun{}, false
		}
		r := sec[i]
		if r.data+r.size-r.start != stride || r.start != f.start+(i-first)*stride || !bytes.Equal(b[r.start:r.data], head) {
			return addrRun{}, false
		}
	}
	return addrRun{off: f.data, n: n, stride: stride, size: f.size}, true
}
