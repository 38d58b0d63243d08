package main

import (
	"context"
	"errors"
	"net"
	"strings"
	"syscall"
)

// ErrorKind names a class of failed lookup. The names are the keys of the
// "errors" object in the JSON summary and appear in the text summary.
type ErrorKind int

// Error kinds, in the order they are printed.
const (
	// KindTimeout: no answer in time (the -timeout expired, or the resolver's
	// own retries ran out).
	KindTimeout ErrorKind = iota
	// KindNXDOMAIN: "no such host": NXDOMAIN, or the name exists without an
	// address of the asked type (NODATA; both resolvers report it so).
	KindNXDOMAIN
	// KindRefused: the server refused (REFUSED, or another rcode the Go
	// resolver lumps into "server misbehaving": NOTIMP, FORMERR), or the port
	// answered with ICMP "connection refused".
	KindRefused
	// KindServFail: SERVFAIL, as reported by the Go resolver.
	KindServFail
	// KindTemporary: glibc's EAI_AGAIN "Temporary failure in name
	// resolution", which glibc returns alike for timeouts, SERVFAIL and
	// REFUSED: it cannot tell them apart.
	KindTemporary
	// KindOther: anything else; the summary keeps one example message.
	KindOther
	numKinds
)

var kindNames = [numKinds]string{"timeout", "nxdomain", "refused", "servfail", "temporary", "other"}

// String returns the kind's stable name.
func (k ErrorKind) String() string {
	if k < 0 || k >= numKinds {
		return "other"
	}
	return kindNames[k]
}

// errTemporary is what the system resolver returns for EAI_AGAIN.
var errTemporary = errors.New("temporary failure in name resolution")

// classify maps a lookup error to its kind. lookupCtx is the context the
// lookup ran under, so a -timeout expiry counts as a timeout whatever the
// resolver made of it.
func classify(lookupCtx context.Context, err error) ErrorKind {
	if errors.Is(lookupCtx.Err(), context.DeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		return KindTimeout
	}
	if errors.Is(err, errTemporary) {
		return KindTemporary
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return KindRefused
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		switch {
		case dnsErr.IsTimeout:
			return KindTimeout
		case dnsErr.IsNotFound:
			return KindNXDOMAIN
		case strings.Contains(dnsErr.Err, "connection refused"):
			return KindRefused
		case strings.Contains(dnsErr.Err, "server misbehaving") && dnsErr.IsTemporary:
			return KindServFail
		case strings.Contains(dnsErr.Err, "server misbehaving"):
			return KindRefused
		}
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return KindTimeout
	}
	return KindOther
}
