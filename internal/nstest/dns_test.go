package nstest

import (
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestServeA(t *testing.T) {
	for _, network := range []string{"udp", "tcp"} {
		addr := ServeA(t, network, "127.0.0.1:0", "198.18.2.1")
		c := &dns.Client{Net: network, Timeout: 2 * time.Second}
		r, _, err := c.Exchange(new(dns.Msg).SetQuestion("web.test.", dns.TypeA), addr)
		if err != nil {
			t.Fatalf("%s A query: %v", network, err)
		}
		if len(r.Answer) == 0 {
			t.Fatalf("%s A query: no answer", network)
		}
		if a, ok := r.Answer[0].(*dns.A); len(r.Answer) != 1 || !ok || a.A.String() != "198.18.2.1" {
			t.Errorf("%s A answer %v, want 198.18.2.1", network, r.Answer)
		}
		r, _, err = c.Exchange(new(dns.Msg).SetQuestion("web.test.", dns.TypeAAAA), addr)
		if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
			t.Errorf("%s AAAA: %v %v, want NOERROR without records", network, r, err)
		}
	}
}
