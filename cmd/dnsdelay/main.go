// Command dnsdelay is a DNS proxy that makes a fast local server look like a
// CoreDNS pod on another node: every answer is held back by -delay (the
// cross-node hop this machine cannot add with netem), and at most
// -max-inflight queries are worked on at once, optionally capped at -qps
// (the pod's CPU limit).
//
//	dnsdelay -listen 198.18.2.2:53 -upstream 127.0.0.1:5300 -delay 1.5ms -max-inflight 64
//
// The node lab runs one in front of each upstream CoreDNS. UDP is read by a
// single loop that stops reading while every slot is busy, so under overload
// the kernel's socket receive buffer fills and drops packets exactly as it
// does in front of a saturated CoreDNS (UdpRcvbufErrors); clients then wait
// their resolver timeout. TCP connections take a slot per query too.
//
// On SIGTERM or SIGINT it stops and prints how many queries it answered and
// how many failed on the way to the upstream.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/miekg/dns"
)

type proxy struct {
	upstream string
	delay    time.Duration
	slots    chan struct{}
	tick     <-chan time.Time // nil: no qps cap

	answered atomic.Uint64
	failed   atomic.Uint64
}

func main() {
	listen := flag.String("listen", "", "`ADDR:PORT` to serve on, UDP and TCP")
	upstream := flag.String("upstream", "127.0.0.1:5300", "`ADDR:PORT` of the DNS server behind the proxy")
	delay := flag.Duration("delay", 1500*time.Microsecond, "hold every answer back this long (the cross-node hop)")
	inflight := flag.Int("max-inflight", 64, "queries worked on at once; UDP reading stops while all are busy")
	qps := flag.Float64("qps", 0, "at most this many queries/s (0: no cap)")
	flag.Parse()
	if *listen == "" || *inflight < 1 || *delay < 0 || *qps < 0 {
		fmt.Fprintln(os.Stderr, "dnsdelay: need -listen, -max-inflight >= 1, -delay >= 0, -qps >= 0")
		os.Exit(2)
	}
	p := &proxy{upstream: *upstream, delay: *delay, slots: make(chan struct{}, *inflight)}
	if *qps > 0 {
		t := time.NewTicker(time.Duration(float64(time.Second) / *qps))
		defer t.Stop()
		p.tick = t.C
	}

	uc, err := net.ListenPacket("udp", *listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "dnsdelay: %v\n", err)
		os.Exit(1)
	}
	tl, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "dnsdelay: %v\n", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go p.serveUDP(uc)
	tcp := &dns.Server{Listener: tl, Net: "tcp", Handler: dns.HandlerFunc(p.serveTCP), ReadTimeout: 10 * time.Second}
	go tcp.ActivateAndServe()
	fmt.Fprintf(os.Stderr, "dnsdelay: serving %s → %s, delay %v, max in flight %d, qps cap %v\n", *listen, *upstream, *delay, *inflight, *qps)

	<-ctx.Done()
	uc.Close()
	tcp.Shutdown()
	fmt.Fprintf(os.Stderr, "dnsdelay: answered %d, failed %d\n", p.answered.Load(), p.failed.Load())
}

// acquire takes a slot, waiting for the qps tick when there is a cap.
func (p *proxy) acquire() {
	p.slots <- struct{}{}
	if p.tick != nil {
		<-p.tick
	}
}

func (p *proxy) release() { <-p.slots }

// serveUDP reads one packet at a time and reads the next only once a slot
// is free: back pressure goes to the socket buffer, not to a goroutine pile.
func (p *proxy) serveUDP(c net.PacketConn) {
	pool := sync.Pool{New: func() any { return new(dns.Client) }}
	for {
		buf := make([]byte, dns.MaxMsgSize)
		p.acquire()
		n, addr, err := c.ReadFrom(buf)
		if err != nil {
			p.release()
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		go func() {
			defer p.release()
			req := new(dns.Msg)
			if req.Unpack(buf[:n]) != nil {
				p.failed.Add(1)
				return
			}
			cl := pool.Get().(*dns.Client)
			defer pool.Put(cl)
			resp, err := p.exchange(cl, "udp", req)
			if err != nil {
				p.failed.Add(1)
				return
			}
			out, err := resp.Pack()
			if err != nil {
				p.failed.Add(1)
				return
			}
			if _, err := c.WriteTo(out, addr); err == nil {
				p.answered.Add(1)
			}
		}()
	}
}

func (p *proxy) serveTCP(w dns.ResponseWriter, req *dns.Msg) {
	p.acquire()
	defer p.release()
	resp, err := p.exchange(&dns.Client{Net: "tcp"}, "tcp", req)
	if err != nil {
		p.failed.Add(1)
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeServerFailure)
		w.WriteMsg(m)
		return
	}
	if w.WriteMsg(resp) == nil {
		p.answered.Add(1)
	}
}

// exchange asks the upstream and holds the answer back until delay has
// passed since the query arrived.
func (p *proxy) exchange(cl *dns.Client, network string, req *dns.Msg) (*dns.Msg, error) {
	start := time.Now()
	cl.Net = network
	cl.Timeout = 2 * time.Second
	resp, _, err := cl.Exchange(req, p.upstream)
	if d := p.delay - time.Since(start); d > 0 {
		time.Sleep(d)
	}
	if err != nil {
		return nil, err
	}
	return resp, nil
}
