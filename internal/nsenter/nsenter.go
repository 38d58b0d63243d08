// Package nsenter runs Go code inside a network namespace: on the calling
// goroutine's OS thread, locked and switched into the namespace, so the
// sockets the code opens live there. The node lab reaches its pods and node
// with it; privileged tests (internal/nstest) dial from their namespace with
// HTTPGet.
package nsenter

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"time"

	"github.com/vishvananda/netns"
)

// Do runs fn on an OS thread switched into the named network namespace (as
// `ip netns add NAME` made it) and switches the thread back afterwards.
// Sockets fn opens stay in the namespace; fn must not start goroutines that
// open sockets (they would run on other threads, in the caller's namespace).
func Do(name string, fn func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open own network namespace: %w", err)
	}
	defer orig.Close()
	target, err := netns.GetFromName(name)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open network namespace %s: %w", name, err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter network namespace %s: %w", name, err)
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		// Keep the thread locked: it dies with the goroutine instead of
		// serving others in the wrong namespace.
		return fmt.Errorf("return from network namespace %s: %w", name, err)
	}
	runtime.UnlockOSThread()
	return ferr
}

// HTTPGet GETs path on addr (host:port) over a connection made from the
// calling goroutine, so from the namespace its thread is in (inside Do, or
// after nstest.Enter): an http.Client dials from other threads, which sit
// in the host's namespace. It returns the status code and the body.
func HTTPGet(addr, path string) (int, string, error) {
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return 0, "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, addr)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, "", fmt.Errorf("GET http://%s%s: %w", addr, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}
