package lab

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/nodelocaldns/nodelocaldns/internal/nsenter"
)

// outageComment marks the rules BlockUpstreams adds in the DNS pods.
const outageComment = "nodelab-outage"

// BlockUpstreams makes every upstream DNS pod silent: their namespaces drop
// all DNS packets coming in, as when the pods' node is gone and packets to
// them vanish (the hardest case for a client: no reset, no ICMP error, only
// timeouts). The dropped packets are counted (UpstreamDropped).
func (l *Lab) BlockUpstreams(ctx context.Context) error {
	for _, ns := range []string{l.DNS1, l.DNS2} {
		for _, r := range [][]string{
			{"-p", "tcp", "--dport", "53", "--syn"}, // new connections, counted apart
			{"-p", "tcp", "--dport", "53"},
			{"-p", "udp", "--dport", "53"},
		} {
			args := append([]string{"-w", "-A", "INPUT"}, r...)
			args = append(args, "-m", "comment", "--comment", outageComment, "-j", "DROP")
			if _, err := nsRun(ctx, ns, "iptables", args...); err != nil {
				return fmt.Errorf("block DNS in %s: %w", ns, err)
			}
		}
	}
	return nil
}

// UnblockUpstreams removes what BlockUpstreams added: the DNS pods answer again.
func (l *Lab) UnblockUpstreams(ctx context.Context) error {
	var errs []error
	for _, ns := range []string{l.DNS1, l.DNS2} {
		out, err := nsRun(ctx, ns, "iptables", "-w", "-S", "INPUT")
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, line := range strings.Split(out, "\n") {
			if !strings.Contains(line, outageComment) {
				continue
			}
			args := append([]string{"-w", "-D"}, strings.Fields(strings.TrimPrefix(line, "-A "))...)
			args = unquote(args)
			if _, err := nsRun(ctx, ns, "iptables", args...); err != nil {
				errs = append(errs, fmt.Errorf("unblock DNS in %s: %w", ns, err))
			}
		}
	}
	return errors.Join(errs...)
}

// unquote strips the quotes iptables -S puts around a comment.
func unquote(args []string) []string {
	for i, a := range args {
		args[i] = strings.Trim(a, `"`)
	}
	return args
}

var dropLine = regexp.MustCompile(`^\s*(\d+)\s+\d+\s+DROP\s+(\w+).*` + outageComment)

// UpstreamDropped counts what the DNS pods dropped while blocked: TCP
// connection attempts (SYNs), other TCP packets and UDP packets.
func (l *Lab) UpstreamDropped(ctx context.Context) (syn, tcp, udp uint64, err error) {
	for _, ns := range []string{l.DNS1, l.DNS2} {
		out, err := nsRun(ctx, ns, "iptables", "-w", "-L", "INPUT", "-v", "-x", "-n")
		if err != nil {
			return 0, 0, 0, err
		}
		for _, line := range strings.Split(out, "\n") {
			m := dropLine.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			n, _ := strconv.ParseUint(m[1], 10, 64)
			switch {
			case m[2] == "udp":
				udp += n
			case strings.Contains(line, "flags:0x17/0x02"):
				syn += n
			default:
				tcp += n
			}
		}
	}
	return syn, tcp, udp, nil
}

// SetUpstreamDelay restarts the upstream pods' delaying proxies so that
// every answer takes d (a slow upstream).
func (l *Lab) SetUpstreamDelay(ctx context.Context, d time.Duration) error {
	for _, u := range []struct{ ns, ip string }{{l.DNS1, DNS1IP}, {l.DNS2, DNS2IP}} {
		for _, p := range l.procs {
			if p.Name == "dnsdelay-"+u.ns && !p.Exited() {
				if err := p.Stop(5 * time.Second); err != nil {
					return err
				}
			}
		}
		if _, err := l.Start(ctx, u.ns, "dnsdelay-"+u.ns, nil, l.Bin("dnsdelay"),
			"-listen", u.ip+":53", "-upstream", fmt.Sprintf("127.0.0.1:%d", upstreamPort),
			"-delay", d.String(), "-max-inflight", fmt.Sprint(max(l.cfg.Inflight, 1024)), "-qps", fmt.Sprint(l.cfg.QPS)); err != nil {
			return err
		}
	}
	return waitFor(ctx, 10*time.Second, func() error {
		_, err := Exchange(l.Node, DNS1IP, Services[0].Name, dns.TypeA, true, d+2*time.Second)
		return err
	})
}

// MixedSpec is a stream of single UDP queries from a pod, each from a fresh
// socket and without retries, so every answer that does not come and every
// second waited is visible: Cached names the cache holds, and a share of
// names asked for the first time.
type MixedSpec struct {
	Pod, Server string
	Cached      []string      // names asked round-robin
	Fresh       func() string // a name never asked before
	FreshShare  float64       // share of queries for Fresh names
	Rate        float64       // queries/s
	Duration    time.Duration
	Timeout     time.Duration // a client's wait for one answer (glibc: 5 s)
}

// Answer is one query of a mixed stream.
type Answer struct {
	At      time.Duration // since the stream started
	Fresh   bool
	Rcode   int // -1: no answer within the timeout
	Answers int
	TTL     uint32 // of the first answer record
	Latency time.Duration
}

// MixedStream runs s and returns every query's outcome in sending order.
func MixedStream(s MixedSpec) ([]Answer, error) {
	var (
		mu  sync.Mutex
		out []Answer
		wg  sync.WaitGroup
	)
	addr := &net.UDPAddr{IP: net.ParseIP(s.Server), Port: 53}
	interval := time.Duration(float64(time.Second) / s.Rate)
	start := time.Now()
	err := nsenter.Do(s.Pod, func() error {
		next := start
		for i := 0; time.Since(start) < s.Duration; i++ {
			fresh := rand.Float64() < s.FreshShare
			name := s.Cached[i%len(s.Cached)]
			if fresh {
				name = s.Fresh()
			}
			conn, err := net.DialUDP("udp", nil, addr)
			if err != nil {
				return fmt.Errorf("stream socket: %w", err)
			}
			wg.Add(1)
			go func(name string, fresh bool) {
				defer wg.Done()
				defer conn.Close()
				m := new(dns.Msg)
				m.SetQuestion(dns.Fqdn(name), dns.TypeA)
				a := Answer{At: time.Since(start), Fresh: fresh, Rcode: -1}
				t0 := time.Now()
				c := &dns.Conn{Conn: conn}
				conn.SetDeadline(t0.Add(s.Timeout))
				if err := c.WriteMsg(m); err == nil {
					if r, err := c.ReadMsg(); err == nil {
						a.Rcode, a.Answers = r.Rcode, len(r.Answer)
						if len(r.Answer) > 0 {
							a.TTL = r.Answer[0].Header().Ttl
						}
					}
				}
				a.Latency = time.Since(t0)
				mu.Lock()
				out = append(out, a)
				mu.Unlock()
			}(name, fresh)
			next = next.Add(interval)
			time.Sleep(time.Until(next))
		}
		return nil
	})
	wg.Wait()
	sort.Slice(out, func(i, j int) bool { return out[i].At < out[j].At })
	return out, err
}

// AnswerStats sums up part of a stream.
type AnswerStats struct {
	N, Answered, ServFail, Refused, NoAnswer, AtOrAbove5s int
	P50, P99, Max                                         time.Duration
}

// Stats sums up the answers for which keep is true.
func Stats(as []Answer, keep func(Answer) bool) AnswerStats {
	var s AnswerStats
	var lat []time.Duration
	for _, a := range as {
		if !keep(a) {
			continue
		}
		s.N++
		switch {
		case a.Rcode == -1:
			s.NoAnswer++
		case a.Rcode == dns.RcodeSuccess && a.Answers > 0:
			s.Answered++
		case a.Rcode == dns.RcodeServerFailure:
			s.ServFail++
		case a.Rcode == dns.RcodeRefused:
			s.Refused++
		}
		if a.Latency >= 5*time.Second || a.Rcode == -1 {
			s.AtOrAbove5s++
		}
		lat = append(lat, a.Latency)
	}
	if len(lat) == 0 {
		return s
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	s.P50 = lat[len(lat)/2]
	s.P99 = lat[min(len(lat)-1, len(lat)*99/100)]
	s.Max = lat[len(lat)-1]
	return s
}

func (s AnswerStats) String() string {
	return fmt.Sprintf("%d queries: %d answered, %d SERVFAIL, %d REFUSED, %d unanswered (≥ 5 s: %d); latency p50 %v p99 %v max %v",
		s.N, s.Answered, s.ServFail, s.Refused, s.NoAnswer, s.AtOrAbove5s, s.P50.Round(10*time.Microsecond), s.P99.Round(10*time.Microsecond), s.Max.Round(10*time.Microsecond))
}

// Fill asks n names (name(i)) from namespace ns to server:53, workers at a
// time, each worker on its own UDP socket, and stops after limit. It
// returns how many got an answer with a record.
func Fill(ns, server string, name func(i int) string, n, workers int, limit time.Duration) (int, error) {
	addr := &net.UDPAddr{IP: net.ParseIP(server), Port: 53}
	conns := make([]*net.UDPConn, workers)
	err := nsenter.Do(ns, func() error {
		for w := range conns {
			c, err := net.DialUDP("udp", nil, addr)
			if err != nil {
				return fmt.Errorf("fill socket: %w", err)
			}
			conns[w] = c
		}
		return nil
	})
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	if err != nil {
		return 0, err
	}
	end := time.Now().Add(limit)
	var answered sync.WaitGroup
	var mu sync.Mutex
	got := 0
	for w, c := range conns {
		answered.Add(1)
		go func() {
			defer answered.Done()
			dc := &dns.Conn{Conn: c}
			for i := w; i < n && time.Now().Before(end); i += workers {
				m := new(dns.Msg)
				m.SetQuestion(dns.Fqdn(name(i)), dns.TypeA)
				c.SetDeadline(time.Now().Add(2 * time.Second))
				if dc.WriteMsg(m) != nil {
					continue
				}
				for {
					r, err := dc.ReadMsg()
					if err != nil {
						break
					}
					if r.Id != m.Id {
						continue // a late answer to an earlier query
					}
					if len(r.Answer) > 0 {
						mu.Lock()
						got++
						mu.Unlock()
					}
					break
				}
			}
		}()
	}
	answered.Wait()
	return got, nil
}
