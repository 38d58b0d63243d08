// Command testdns tests a cluster's DNS the way the Kubernetes "5 second
// DNS stall" is usually hunted: it runs -c concurrent lookups for -d seconds
// and reports how many there were, how many failed and why, their latency
// distribution, and how many took -l milliseconds or more.
//
// Each worker has a resolver of its own. A shared Go net.Resolver coalesces
// identical concurrent lookups (singleflight), so the server would see fewer
// queries than the tool counts; here it sees every one.
//
//	testdns -host kubernetes.default -c 200 -d 30 -l 5000
//	testdns -resolver system -type ip -json result.json   # through glibc
//	testdns -server 127.0.0.1:5353 -host fast.test. -rate 1000 -q
//
// -resolver go (the default) is the pure-Go resolver: it reads
// /etc/resolv.conf, so a pod's search path and ndots:5 apply. -server makes
// it send every query to HOST:PORT instead of resolv.conf's nameserver
// (search path and ndots still come from resolv.conf); -tcp makes it use TCP.
// -resolver system calls glibc's getaddrinfo through cgo, exactly as a C
// program in the pod would (nsswitch, /etc/hosts, resolv.conf, A and AAAA from
// one socket); a binary built with CGO_ENABLED=0 says so and exits.
//
// The text summary goes to stdout, a progress line to stderr every second
// (-q silences it). Ctrl-C or SIGTERM stops the run and prints the partial
// summary; the exit status is then 130.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/nodelocaldns/nodelocaldns/internal/dnsload"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without the process: it returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "testdns: %v\n", err)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		// After the first signal, a second one kills the process as usual.
		<-ctx.Done()
		stop()
	}()

	var progress io.Writer
	if !cfg.Quiet {
		progress = stderr
	}
	sum, err := Run(ctx, cfg, progress)
	if err != nil {
		fmt.Fprintf(stderr, "testdns: %v\n", err)
		return 1
	}

	text := stdout
	if cfg.JSONPath == "-" {
		text = stderr
	}
	if err := writeText(text, sum); err != nil {
		fmt.Fprintf(stderr, "testdns: write summary: %v\n", err)
		return 1
	}
	if err := writeJSON(cfg.JSONPath, sum, stdout); err != nil {
		fmt.Fprintf(stderr, "testdns: %v\n", err)
		return 1
	}
	if sum.Interrupted {
		return 130
	}
	return 0
}

// writeJSON writes the summary to path, to stdout for "-", or nowhere for "".
func writeJSON(path string, sum *dnsload.Summary, stdout io.Writer) error {
	switch path {
	case "":
		return nil
	case "-":
		return sum.WriteJSON(stdout)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write JSON summary: %w", err)
	}
	if err := sum.WriteJSON(f); err != nil {
		f.Close()
		return fmt.Errorf("write JSON summary to %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write JSON summary to %s: %w", path, err)
	}
	return nil
}
