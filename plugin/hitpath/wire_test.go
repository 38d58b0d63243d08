package hitpath

import (
	"encoding/binary"
	"testing"

	"github.com/miekg/dns"
)

func pack(t *testing.T, m *dns.Msg) []byte {
	t.Helper()
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestQueryKey(t *testing.T) {
	q := func(f func(m *dns.Msg)) []byte {
		m := new(dns.Msg)
		m.SetQuestion("a.test.", dns.TypeA)
		if f != nil {
			f(m)
		}
		return pack(t, m)
	}
	plain := q(nil)
	withOpt := q(func(m *dns.Msg) { m.SetEdns0(1232, false) })
	tests := []struct {
		name string
		b    []byte
		ok   bool
	}{
		{"plain", plain, true},
		{"EDNS", withOpt, true},
		{"EDNS with DO", q(func(m *dns.Msg) { m.SetEdns0(4096, true) }), true},
		{"a response", q(func(m *dns.Msg) { m.Response = true }), false},
		{"an update", q(func(m *dns.Msg) { m.Opcode = dns.OpcodeUpdate }), false},
		{"truncated", q(func(m *dns.Msg) { m.Truncated = true }), false},
		{"class CH", q(func(m *dns.Msg) { m.Question[0].Qclass = dns.ClassCHAOS }), false},
		{"two questions", q(func(m *dns.Msg) { m.Question = append(m.Question, m.Question[0]) }), false},
		{"EDNS option", q(func(m *dns.Msg) {
			m.SetEdns0(1232, false)
			m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_NSID{Code: dns.EDNS0NSID})
		}), false},
		{"EDNS version 1", q(func(m *dns.Msg) { m.SetEdns0(1232, false); m.IsEdns0().SetVersion(1) }), false},
		{"trailing byte", append(plain[:len(plain):len(plain)], 0), false},
		{"cut short", plain[:len(plain)-1], false},
		{"header only", plain[:12], false},
	}
	for _, tc := range tests {
		_, _, ok := queryKey(nil, tc.b)
		if ok != tc.ok {
			t.Errorf("%s: ok %v, want %v", tc.name, ok, tc.ok)
		}
	}
	k1, _, _ := queryKey(nil, plain)
	k2, _, _ := queryKey(nil, withOpt)
	k3, _, _ := queryKey(nil, q(func(m *dns.Msg) { m.Question[0].Name = "A.test." }))
	k4, _, _ := queryKey(nil, q(func(m *dns.Msg) { m.Id = 7 }))
	if string(k1) == string(k2) || string(k1) == string(k3) {
		t.Errorf("Queries differing in EDNS or case share a key")
	}
	if string(k1) != string(k4) {
		t.Errorf("Queries differing in ID only have different keys")
	}
}

func TestEntryAnswers(t *testing.T) {
	req := new(dns.Msg)
	req.SetQuestion("multi.test.", dns.TypeA)
	q := pack(t, req)
	reply := new(dns.Msg)
	reply.SetReply(req)
	for _, s := range []string{"multi.test. 30 IN A 198.18.6.1", "multi.test. 30 IN A 198.18.6.2", "multi.test. 30 IN A 198.18.6.3"} {
		rr, _ := dns.NewRR(s)
		reply.Answer = append(reply.Answer, rr)
	}
	reply.Compress = true
	_, nameEnd, _ := queryKey(nil, q)
	const sec = int64(1e9)
	e := newEntry(pack(t, reply), q, nameEnd, true, 100*sec)
	if e == nil {
		t.Fatal("No entry for a plain answer")
	}
	e.stopAt = 3

	q2 := append([]byte(nil), q...)
	binary.BigEndian.PutUint16(q2, 4242)
	orders := map[string]bool{}
	for range 50 {
		b, ok := e.answerInto(nil, q2, 112*sec+sec/2)
		if !ok {
			t.Fatal("No answer 12.5 s into a 30 s TTL")
		}
		m := new(dns.Msg)
		if err := m.Unpack(b); err != nil {
			t.Fatal(err)
		}
		if m.Id != 4242 || len(m.Answer) != 3 {
			t.Fatalf("Answer %v", m)
		}
		order := ""
		for _, rr := range m.Answer {
			if rr.Header().Ttl != 18 {
				t.Fatalf("TTL %d 12.5 s into 30 s, want 18", rr.Header().Ttl)
			}
			order += rr.(*dns.A).A.String() + " "
		}
		orders[order] = true
	}
	if len(orders) < 2 {
		t.Errorf("One order in 50 answers: %v", orders)
	}
	if _, ok := e.answerInto(nil, q2, 127*sec); ok {
		t.Errorf("Answered with 3 s left, the prefetch point")
	}
	if _, ok := e.answerInto(nil, q2, 131*sec); ok {
		t.Errorf("Answered after the TTL ran out")
	}

	// Not repeated: a TTL of 0, a refused query.
	reply.Answer[0].Header().Ttl = 0
	if newEntry(pack(t, reply), q, nameEnd, false, 0) != nil {
		t.Errorf("Entry for a reply with TTL 0")
	}
	reply.Answer[0].Header().Ttl = 30
	reply.Rcode = dns.RcodeRefused
	if newEntry(pack(t, reply), q, nameEnd, false, 0) != nil {
		t.Errorf("Entry for REFUSED")
	}
}
