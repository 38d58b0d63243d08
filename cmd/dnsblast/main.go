// Command dnsblast asks one DNS server one question over UDP as fast as it
// answers, with a fixed number of queries outstanding, sending and reading
// in batches (sendmmsg and recvmmsg): one core of it keeps a server's core
// busy where dnsperf's one core cannot, so the server's qps per core is the
// server's figure. With -sockets it asks from several source ports, so that
// a server with several reuseport sockets gets queries on each. It runs for at most -d and sends at most -n queries, then
// prints the figures as JSON on stdout (the fields of bench.Dnsperf).
//
//	dnsblast -s 198.18.0.10 -name kubernetes.default.svc.cluster.local -q 200 -d 5s
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/miekg/dns"
)

// Limits of the flags: every run is bounded in time and count.
const (
	maxDuration    = 10 * time.Minute
	maxQueries     = 100_000_000
	maxOutstanding = 10000
	maxBatch       = 1024
	maxSockets     = 64
)

// config is the run's settings.
type config struct {
	server      string
	name        string
	qtype       uint16
	outstanding int
	batch       int
	duration    time.Duration
	count       uint64
	timeout     time.Duration
	sockets     int
}

func main() {
	var c config
	var qtype string
	flag.StringVar(&c.server, "s", "", "server address, host or host:port (port 53 when none)")
	flag.StringVar(&c.name, "name", "", "the name asked in every query")
	flag.StringVar(&qtype, "type", "A", "the query type")
	flag.IntVar(&c.outstanding, "q", 100, "queries outstanding at once")
	flag.IntVar(&c.batch, "batch", 32, "queries sent and answers read per system call, at most")
	flag.DurationVar(&c.duration, "d", 5*time.Second, "how long to send queries (at most 10m)")
	flag.Uint64Var(&c.count, "n", 10_000_000, "most queries to send")
	flag.DurationVar(&c.timeout, "timeout", time.Second, "a query not answered this long is lost")
	flag.IntVar(&c.sockets, "sockets", 1, "client sockets (source ports), each with its share of -q and -n: a server with several reuseport sockets (multisocket) spreads them by the 4-tuple's hash")
	flag.Parse()
	var ok bool
	if c.qtype, ok = dns.StringToType[qtype]; !ok {
		fail(fmt.Errorf("-type %q: not a DNS query type", qtype))
	}
	if err := c.check(); err != nil {
		fail(err)
	}
	res, err := run(c)
	if err != nil {
		fail(err)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(res); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "dnsblast: %v\n", err)
	os.Exit(1)
}

// check rejects settings out of bounds, naming the flag and the value.
func (c *config) check() error {
	switch {
	case c.server == "":
		return errors.New("-s: give the server's address")
	case c.name == "":
		return errors.New("-name: give the name to ask")
	case c.duration <= 0 || c.duration > maxDuration:
		return fmt.Errorf("-d %v: want more than 0 and at most %v", c.duration, maxDuration)
	case c.count == 0 || c.count > maxQueries:
		return fmt.Errorf("-n %d: want 1 to %d", c.count, maxQueries)
	case c.outstanding < 1 || c.outstanding > maxOutstanding:
		return fmt.Errorf("-q %d: want 1 to %d", c.outstanding, maxOutstanding)
	case c.batch < 1 || c.batch > maxBatch:
		return fmt.Errorf("-batch %d: want 1 to %d", c.batch, maxBatch)
	case c.timeout <= 0 || c.timeout > time.Minute:
		return fmt.Errorf("-timeout %v: want more than 0 and at most 1m", c.timeout)
	case c.sockets < 1 || c.sockets > maxSockets || c.sockets > c.outstanding:
		return fmt.Errorf("-sockets %d: want 1 to %d and at most -q", c.sockets, maxSockets)
	}
	if _, _, err := net.SplitHostPort(c.server); err != nil {
		c.server = net.JoinHostPort(c.server, "53")
	}
	return nil
}

// query packs the question with recursion desired, as a stub resolver asks.
func (c *config) query() ([]byte, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(c.name), c.qtype)
	return m.Pack()
}
