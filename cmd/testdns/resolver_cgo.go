//go:build cgo

package main

/*
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>

// testdns_getaddrinfo resolves host the way an application would, through
// glibc (nsswitch, /etc/hosts, resolv.conf), and discards the addresses.
// On EAI_SYSTEM it stores errno in *err.
static int testdns_getaddrinfo(const char *host, int family, int *err) {
	struct addrinfo hints, *res = NULL;
	memset(&hints, 0, sizeof hints);
	hints.ai_family = family;
	hints.ai_socktype = SOCK_STREAM; // one entry per address, not three
	int rc = getaddrinfo(host, NULL, &hints, &res);
	*err = errno;
	if (rc == 0) {
		freeaddrinfo(res);
	}
	return rc;
}
*/
import "C"

import (
	"context"
	"fmt"
	"net"
	"syscall"
	"unsafe"
)

// systemUnavailable reports why -resolver system cannot be used: never,
// in a cgo build.
func systemUnavailable() error { return nil }

// systemLookuper calls glibc's getaddrinfo directly (not through the net
// package, which may still choose its own resolver), so lookups go through
// nsswitch and glibc's stub resolver exactly as in a C program: A and AAAA
// from one socket for -type ip (AF_UNSPEC).
type systemLookuper struct {
	family C.int
	// pending is the result channel of a call abandoned at its timeout.
	pending chan gaiResult
}

type gaiResult struct {
	rc    C.int
	errno C.int
}

// newSystemLookuper returns a glibc resolver for one worker.
func newSystemLookuper(cfg Config) (lookuper, error) {
	family := C.int(C.AF_UNSPEC)
	switch cfg.Type {
	case typeA:
		family = C.AF_INET
	case typeAAAA:
		family = C.AF_INET6
	}
	return &systemLookuper{family: family}, nil
}

// lookup runs getaddrinfo in its own goroutine so the -timeout can be
// honoured: glibc cannot be cancelled, so on expiry the call is abandoned
// and settle waits for it before the worker's next lookup.
func (s *systemLookuper) lookup(ctx context.Context, host string) error {
	done := make(chan gaiResult, 1)
	chost := C.CString(host)
	go func() {
		defer C.free(unsafe.Pointer(chost))
		var e C.int
		rc := C.testdns_getaddrinfo(chost, s.family, &e)
		done <- gaiResult{rc: rc, errno: e}
	}()
	select {
	case r := <-done:
		return gaiError(host, r)
	case <-ctx.Done():
		s.pending = done
		return fmt.Errorf("getaddrinfo %q: %w", host, ctx.Err())
	}
}

func (s *systemLookuper) settle(ctx context.Context) {
	if s.pending == nil {
		return
	}
	select {
	case <-s.pending:
	case <-ctx.Done():
	}
	s.pending = nil
}

// gaiError turns a getaddrinfo result into an error the classifier knows.
func gaiError(host string, r gaiResult) error {
	switch r.rc {
	case 0:
		return nil
	case C.EAI_NONAME, C.EAI_NODATA:
		return &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	case C.EAI_AGAIN:
		return fmt.Errorf("getaddrinfo %q: %w", host, errTemporary)
	case C.EAI_SYSTEM:
		return fmt.Errorf("getaddrinfo %q: %w", host, syscall.Errno(r.errno))
	default:
		return fmt.Errorf("getaddrinfo %q: %s", host, C.GoString(C.gai_strerror(r.rc)))
	}
}
