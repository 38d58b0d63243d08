package lab

import (
	"fmt"
	"net"
	"sort"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/nodelocaldns/nodelocaldns/internal/nsenter"
)

// ProbeResult is what a probe run saw: single UDP queries without retries,
// so every answer that did not come is visible, as is the longest time the
// pod went without any answer.
type ProbeResult struct {
	Sent       int
	Answered   int
	LongestGap time.Duration // longest time between two answers, or from the start or to the end of sending
}

// Probe sends one UDP query for name to server:53 from inside namespace ns
// every interval for d, each from a fresh socket (a fresh source port, as
// resolvers use), each waiting at most timeout for its answer.
func Probe(ns, server, name string, interval, timeout, d time.Duration) (*ProbeResult, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	var (
		mu      sync.Mutex
		answers []time.Time
		wg      sync.WaitGroup
	)
	res := &ProbeResult{}
	start := time.Now()
	addr := &net.UDPAddr{IP: net.ParseIP(server), Port: 53}
	// The sockets are made on the thread inside ns; waiting for the answers
	// needs no namespace, so it runs in goroutines.
	err := nsenter.Do(ns, func() error {
		next := start
		for time.Since(start) < d {
			conn, err := net.DialUDP("udp", nil, addr)
			if err != nil {
				return fmt.Errorf("probe socket: %w", err)
			}
			res.Sent++
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer conn.Close()
				c := &dns.Conn{Conn: conn}
				conn.SetDeadline(time.Now().Add(timeout))
				if err := c.WriteMsg(m.Copy()); err != nil {
					return
				}
				r, err := c.ReadMsg()
				if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0 {
					return
				}
				at := time.Now()
				mu.Lock()
				answers = append(answers, at)
				mu.Unlock()
			}()
			next = next.Add(interval)
			time.Sleep(time.Until(next))
		}
		return nil
	})
	wg.Wait()
	end := start.Add(d)
	if err != nil {
		return nil, err
	}
	sort.Slice(answers, func(i, j int) bool { return answers[i].Before(answers[j]) })
	res.Answered = len(answers)
	prev := start
	for _, a := range append(answers, end) {
		if g := a.Sub(prev); g > res.LongestGap {
			res.LongestGap = g
		}
		prev = a
	}
	return res, nil
}
