package main

import (
	"net"
	"testing"

	"github.com/miekg/dns"
)

func TestReply(t *testing.T) {
	tests := []struct {
		qtype   uint16
		answers int
		want    string
	}{
		{dns.TypeA, 1, "198.18.6.1"},
		{dns.TypeAAAA, 1, "2001:2::6:1"},
		{dns.TypeMX, 0, ""},
	}
	for _, tc := range tests {
		q := new(dns.Msg)
		q.SetQuestion("Web.Default.svc.cluster.local.", tc.qtype)
		q.SetEdns0(1232, false)
		wire, err := q.Pack()
		if err != nil {
			t.Fatal(err)
		}
		out := make([]byte, 512)
		n := reply(wire, out)
		r := new(dns.Msg)
		if err := r.Unpack(out[:n]); err != nil {
			t.Fatalf("Type %s: reply does not parse: %v", dns.TypeToString[tc.qtype], err)
		}
		if r.Id != q.Id || !r.Response || r.Rcode != dns.RcodeSuccess || r.Question[0] != q.Question[0] {
			t.Errorf("Type %s: reply header or question wrong: %v", dns.TypeToString[tc.qtype], r)
		}
		if len(r.Answer) != tc.answers {
			t.Fatalf("Type %s: %d answers, want %d", dns.TypeToString[tc.qtype], len(r.Answer), tc.answers)
		}
		if tc.answers == 0 {
			continue
		}
		var got net.IP
		switch rr := r.Answer[0].(type) {
		case *dns.A:
			got = rr.A
		case *dns.AAAA:
			got = rr.AAAA
		}
		if got.String() != tc.want || r.Answer[0].Header().Name != q.Question[0].Name {
			t.Errorf("Type %s: answer %v, want %s for the asked name", dns.TypeToString[tc.qtype], r.Answer[0], tc.want)
		}
	}
}

func TestReplyIgnoresNonQueries(t *testing.T) {
	q := new(dns.Msg)
	q.SetQuestion("a.test.", dns.TypeA)
	q.Response = true
	wire, _ := q.Pack()
	if n := reply(wire, make([]byte, 512)); n != 0 {
		t.Errorf("Answered a response (%d bytes)", n)
	}
	if n := reply([]byte{1, 2, 3}, make([]byte, 512)); n != 0 {
		t.Errorf("Answered a 3-byte packet (%d bytes)", n)
	}
}
