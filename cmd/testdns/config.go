package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// Record types accepted by -type.
const (
	typeA    = "A"
	typeAAAA = "AAAA"
	typeIP   = "ip"
)

// defaultHost is the name looked up when no -host is given: the API server
// Service, which every cluster has.
const defaultHost = "kubernetes.default.svc.cluster.local"

// Config holds everything a run needs; parseFlags fills it from the command
// line and tests build it directly.
type Config struct {
	Hosts       []string      // names to look up; workers take them in turn
	Concurrency int           // workers, each with one lookup in flight
	Duration    time.Duration // no lookup starts after this much time
	Limit       time.Duration // lookups at or above this are counted as slow
	Timeout     time.Duration // per-lookup bound
	Rate        float64       // lookups/s across all workers; 0 means no limit
	Resolver    string        // resolverGo or resolverSystem
	Type        string        // typeA, typeAAAA or typeIP
	TCP         bool          // Go resolver over TCP
	Server      string        // host:port the Go resolver dials instead of resolv.conf's nameserver
	JSONPath    string        // where to write the JSON summary; "-" is stdout
	Quiet       bool          // no progress lines
}

// hostList is a repeatable flag whose values may also be comma separated.
type hostList []string

func (h *hostList) String() string { return strings.Join(*h, ",") }

func (h *hostList) Set(v string) error {
	for _, name := range strings.Split(v, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			return fmt.Errorf("empty host name in %q", v)
		}
		*h = append(*h, name)
	}
	return nil
}

// seconds is a duration flag given in (possibly fractional) seconds, or as
// a Go duration such as 500ms.
type seconds struct{ d *time.Duration }

func (s seconds) String() string {
	if s.d == nil {
		return ""
	}
	return strconv.FormatFloat(s.d.Seconds(), 'f', -1, 64)
}

func (s seconds) Set(v string) error {
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		*s.d = time.Duration(f * float64(time.Second))
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return fmt.Errorf("want seconds or a duration such as 500ms, got %q", v)
	}
	*s.d = d
	return nil
}

// parseFlags parses the command line into a Config and validates it. Usage
// and flag errors are written to stderr.
func parseFlags(args []string, stderr io.Writer) (Config, error) {
	cfg := Config{
		Concurrency: 200,
		Duration:    30 * time.Second,
		Timeout:     10 * time.Second,
		Resolver:    resolverGo,
		Type:        typeIP,
	}
	var hosts hostList
	limitMS := 5000

	fs := flag.NewFlagSet("testdns", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: testdns [flags]\n\n"+
			"Runs -c concurrent lookups for -d seconds and prints request and error counts,\n"+
			"latency percentiles and how many lookups took -l milliseconds or more.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.Var(&hosts, "host", "`NAME` to look up; repeat or comma-separate for several; "+UniqueMark+" in a name becomes a number unique to each lookup (default "+defaultHost+")")
	fs.IntVar(&cfg.Concurrency, "c", cfg.Concurrency, "concurrent workers, one lookup in flight each")
	fs.Var(seconds{&cfg.Duration}, "d", "run `SECONDS`; no lookup starts after that (also accepts 500ms, 2m)")
	fs.IntVar(&limitMS, "l", limitMS, "count lookups taking at least `LIMIT_MS` milliseconds")
	fs.Var(seconds{&cfg.Timeout}, "timeout", "per-lookup timeout in `SECONDS`, generous so 5 s stalls show")
	fs.Float64Var(&cfg.Rate, "rate", 0, "global limit in lookups/s across all workers (0: as fast as they go)")
	fs.StringVar(&cfg.Resolver, "resolver", cfg.Resolver, "go: pure-Go resolver, one per worker; system: glibc getaddrinfo (needs cgo)")
	fs.StringVar(&cfg.Type, "type", cfg.Type, "A, AAAA or ip (A and AAAA, like getaddrinfo with AF_UNSPEC)")
	fs.BoolVar(&cfg.TCP, "tcp", false, "Go resolver: query over TCP")
	fs.StringVar(&cfg.Server, "server", "", "Go resolver: send every query to `HOST:PORT` instead of resolv.conf's nameserver (search path and ndots still apply)")
	fs.StringVar(&cfg.JSONPath, "json", "", "write the full summary as JSON to `FILE` (- for stdout; the text summary then goes to stderr)")
	fs.BoolVar(&cfg.Quiet, "q", false, "no progress line on stderr")

	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q: names go in -host", fs.Arg(0))
	}
	cfg.Hosts = hosts
	if len(cfg.Hosts) == 0 {
		cfg.Hosts = []string{defaultHost}
	}
	cfg.Limit = time.Duration(limitMS) * time.Millisecond
	return cfg, cfg.validate()
}

// validate checks the bounds and normalises -type and -server.
func (c *Config) validate() error {
	var errs []error
	if len(c.Hosts) == 0 {
		errs = append(errs, errors.New("no host to look up"))
	}
	if c.Concurrency < 1 {
		errs = append(errs, fmt.Errorf("-c %d: need at least one worker", c.Concurrency))
	}
	if c.Duration <= 0 {
		errs = append(errs, fmt.Errorf("-d %v: the run needs a positive duration", c.Duration))
	}
	if c.Limit <= 0 {
		errs = append(errs, fmt.Errorf("-l %v: the limit must be positive", c.Limit))
	}
	if c.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("-timeout %v: must be positive", c.Timeout))
	}
	if c.Rate < 0 {
		errs = append(errs, fmt.Errorf("-rate %v: must be 0 (no limit) or positive", c.Rate))
	}
	switch strings.ToLower(c.Type) {
	case "a":
		c.Type = typeA
	case "aaaa":
		c.Type = typeAAAA
	case "ip", "":
		c.Type = typeIP
	default:
		errs = append(errs, fmt.Errorf("-type %q: want A, AAAA or ip", c.Type))
	}
	switch c.Resolver {
	case resolverGo:
	case resolverSystem:
		if err := systemUnavailable(); err != nil {
			errs = append(errs, err)
		}
		if c.Server != "" || c.TCP {
			errs = append(errs, errors.New("-server and -tcp need -resolver go: glibc takes its nameserver and transport from /etc/resolv.conf (options use-vc there forces TCP)"))
		}
	default:
		errs = append(errs, fmt.Errorf("-resolver %q: want %q or %q", c.Resolver, resolverGo, resolverSystem))
	}
	if c.Server != "" {
		if _, _, err := net.SplitHostPort(c.Server); err != nil {
			// A bare address means port 53.
			c.Server = net.JoinHostPort(strings.Trim(c.Server, "[]"), "53")
		}
		host, _, _ := net.SplitHostPort(c.Server)
		if net.ParseIP(host) == nil {
			errs = append(errs, fmt.Errorf("-server %q: want an IP address and port such as 127.0.0.1:5353", c.Server))
		}
	}
	return errors.Join(errs...)
}
