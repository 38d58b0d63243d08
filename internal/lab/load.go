package lab

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nodelocaldns/nodelocaldns/internal/dnsload"
)

// LoadSpec is one testdns run.
type LoadSpec struct {
	Pod         string        // namespace
	Resolver    string        // "system" (glibc) or "go"
	Concurrency int           // -c
	Duration    time.Duration // -d
	Limit       time.Duration // -l; 0 for 5 s
	Hosts       []string      // -host
	CPU         string        // taskset CPU list, "" for none
	Extra       []string      // more flags
	JSON        string        // where testdns writes its -json summary; "" for a file in the lab's directory
}

// RunLoad runs bin/testdns inside the pod and returns its summary.
func (l *Lab) RunLoad(ctx context.Context, s LoadSpec) (*dnsload.Summary, error) {
	out := s.JSON
	if out == "" {
		out = filepath.Join(l.Dir, fmt.Sprintf("testdns-%d.json", time.Now().UnixNano()))
	}
	args := []string{"netns", "exec", s.Pod}
	if s.CPU != "" {
		args = append(args, "taskset", "-c", s.CPU)
	}
	limit := s.Limit
	if limit == 0 {
		limit = 5 * time.Second
	}
	args = append(args, l.Bin("testdns"), "-resolver", s.Resolver, "-c", strconv.Itoa(s.Concurrency),
		"-d", s.Duration.String(), "-l", strconv.FormatInt(limit.Milliseconds(), 10), "-q", "-json", out)
	for _, h := range s.Hosts {
		args = append(args, "-host", h)
	}
	args = append(args, s.Extra...)
	// Bounded: the run's duration plus testdns's own 10 s lookup timeout.
	ctx, cancel := context.WithTimeout(ctx, s.Duration+30*time.Second)
	defer cancel()
	if _, err := run(ctx, "ip", args...); err != nil {
		return nil, err
	}
	return dnsload.ReadFile(out)
}
