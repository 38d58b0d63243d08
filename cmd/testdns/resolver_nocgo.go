//go:build !cgo

package main

import "errors"

// errNoCgo explains why -resolver system is unavailable in this binary.
var errNoCgo = errors.New("-resolver system calls glibc's getaddrinfo through cgo, but this binary was built without cgo (CGO_ENABLED=0): use -resolver go, or rebuild with CGO_ENABLED=1")

// systemUnavailable reports why -resolver system cannot be used.
func systemUnavailable() error { return errNoCgo }

// newSystemLookuper always fails: there is no glibc to call.
func newSystemLookuper(Config) (lookuper, error) {
	return nil, errNoCgo
}
