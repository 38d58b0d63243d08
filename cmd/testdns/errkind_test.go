package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"
)

func TestClassify(t *testing.T) {
	expired, cancel := context.WithTimeout(context.Background(), 0)
	defer cancel()
	<-expired.Done()
	live := context.Background()
	tests := []struct {
		name string
		ctx  context.Context
		err  error
		want ErrorKind
	}{
		{"go nxdomain", live, &net.DNSError{Err: "no such host", IsNotFound: true}, KindNXDOMAIN},
		{"go timeout", live, &net.DNSError{Err: "i/o timeout", IsTimeout: true}, KindTimeout},
		{"our timeout", expired, &net.DNSError{Err: "operation was canceled"}, KindTimeout},
		{"go servfail", live, &net.DNSError{Err: "server misbehaving", IsTemporary: true}, KindServFail},
		{"go refused", live, &net.DNSError{Err: "server misbehaving"}, KindRefused},
		{"icmp refused", live, &net.DNSError{Err: "read udp 127.0.0.1:1->127.0.0.1:2: connection refused"}, KindRefused},
		{"errno refused", live, fmt.Errorf("dial: %w", syscall.ECONNREFUSED), KindRefused},
		{"glibc again", live, fmt.Errorf("getaddrinfo: %w", errTemporary), KindTemporary},
		{"deadline wrapped", live, fmt.Errorf("getaddrinfo: %w", context.DeadlineExceeded), KindTimeout},
		{"other", live, errors.New("cannot unmarshal DNS message"), KindOther},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := classify(tt.ctx, tt.err); got != tt.want {
				t.Errorf("classify(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}
