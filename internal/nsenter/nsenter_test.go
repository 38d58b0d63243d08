package nsenter_test

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"testing"

	"github.com/nodelocaldns/nodelocaldns/internal/nsenter"
	"github.com/nodelocaldns/nodelocaldns/internal/nstest"
)

func TestMain(m *testing.M) { nstest.Main(m) }

// TestDoHTTPGet serves HTTP from a socket opened inside a namespace: a GET
// from inside it is answered, the same address from the test's own
// namespace is not there.
func TestDoHTTPGet(t *testing.T) {
	nstest.RequireRoot(t)
	b := make([]byte, 4)
	rand.Read(b)
	name := "nltest-" + hex.EncodeToString(b)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("Add netns %s: %v %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("Delete netns %s: %v %s", name, err, out)
		}
	})
	var ln net.Listener
	err := nsenter.Do(name, func() error {
		if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
			return fmt.Errorf("set lo up: %w: %s", err, out)
		}
		var err error
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	})
	if err != nil {
		t.Fatalf("Listen inside %s: %v", name, err)
	}
	defer ln.Close()
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("inside " + r.URL.Path)) }))
	addr := ln.Addr().String()

	var code int
	var body string
	err = nsenter.Do(name, func() error {
		var err error
		code, body, err = nsenter.HTTPGet(addr, "/x")
		return err
	})
	if err != nil || code != http.StatusOK || body != "inside /x" {
		t.Errorf("GET inside %s: %d %q %v, want 200 \"inside /x\"", name, code, body, err)
	}
	if code, _, err := nsenter.HTTPGet(addr, "/x"); err == nil {
		t.Errorf("GET %s from the test's own namespace answered %d: the listener is not in %s", addr, code, name)
	}
	if err := nsenter.Do("nltest-missing", func() error { return nil }); err == nil {
		t.Error("Do in a namespace that does not exist: no error")
	}
}
