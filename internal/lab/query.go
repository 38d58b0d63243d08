package lab

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/nodelocaldns/nodelocaldns/internal/nsenter"
)

// Query asks server (port 53) for name and type from inside namespace ns,
// with a 2 s timeout, over UDP or TCP. A reply with any rcode is returned;
// only a transport failure is an error.
func Query(ns, server, name, qtype string, tcp bool) (*dns.Msg, error) {
	t, ok := dns.StringToType[strings.ToUpper(qtype)]
	if !ok {
		return nil, fmt.Errorf("unknown query type %q", qtype)
	}
	return Exchange(ns, server, name, t, tcp, 2*time.Second)
}

// Exchange sends one query for name and qtype from inside namespace ns to
// server:53, over UDP or TCP, and waits at most timeout for the reply.
func Exchange(ns, server, name string, qtype uint16, tcp bool, timeout time.Duration) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	c := &dns.Client{Timeout: timeout}
	if tcp {
		c.Net = "tcp"
	}
	var resp *dns.Msg
	err := nsenter.Do(ns, func() error {
		var err error
		resp, _, err = c.Exchange(m, server+":53")
		return err
	})
	return resp, err
}

// HTTPGet fetches http://addr/path from inside namespace ns (for metrics)
// and returns the body of a 200 answer.
func HTTPGet(ns, addr, path string) (string, error) {
	var body string
	err := nsenter.Do(ns, func() error {
		code, b, err := nsenter.HTTPGet(addr, path)
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return fmt.Errorf("GET http://%s%s: status %d", addr, path, code)
		}
		body = b
		return nil
	})
	return body, err
}
