package main

import (
	"io"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		check   func(Config) bool
		wantErr string
	}{
		{"defaults", nil, func(c Config) bool {
			return c.Concurrency == 200 && c.Duration == 30*time.Second && c.Limit == 5*time.Second &&
				c.Timeout == 10*time.Second && c.Resolver == resolverGo && c.Type == typeIP &&
				slices.Equal(c.Hosts, []string{defaultHost})
		}, ""},
		{"hosts repeated and comma separated", []string{"-host", "a,b", "-host", "c"}, func(c Config) bool {
			return slices.Equal(c.Hosts, []string{"a", "b", "c"})
		}, ""},
		{"fractional seconds and durations", []string{"-d", "1.5", "-timeout", "500ms", "-l", "200"}, func(c Config) bool {
			return c.Duration == 1500*time.Millisecond && c.Timeout == 500*time.Millisecond && c.Limit == 200*time.Millisecond
		}, ""},
		{"type is case-insensitive", []string{"-type", "aaaa"}, func(c Config) bool { return c.Type == typeAAAA }, ""},
		{"server without port", []string{"-server", "127.0.0.1"}, func(c Config) bool { return c.Server == "127.0.0.1:53" }, ""},
		{"server v6", []string{"-server", "[::1]:5353"}, func(c Config) bool { return c.Server == "[::1]:5353" }, ""},
		{"bad type", []string{"-type", "MX"}, nil, `-type "MX"`},
		{"no workers", []string{"-c", "0"}, nil, "-c 0"},
		{"bad duration", []string{"-d", "soon"}, nil, `"soon"`},
		{"negative rate", []string{"-rate", "-1"}, nil, "-rate"},
		{"bad resolver", []string{"-resolver", "musl"}, nil, `"musl"`},
		{"server needs go", []string{"-resolver", "system", "-server", "127.0.0.1:53"}, nil, "need -resolver go"},
		{"server must be an IP", []string{"-server", "dns.test:53"}, nil, "IP address"},
		{"empty host", []string{"-host", "a,,b"}, nil, "empty host"},
		{"positional", []string{"kubernetes.default"}, nil, "names go in -host"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseFlags(tt.args, io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseFlags(%q) error = %v, want one containing %q", tt.args, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseFlags(%q): %v", tt.args, err)
			}
			if !tt.check(c) {
				t.Errorf("parseFlags(%q) = %+v", tt.args, c)
			}
		})
	}
}
