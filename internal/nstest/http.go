package nstest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// HTTPGet GETs path on addr (host:port) over a connection made from the
// calling goroutine, so from the namespace Enter put it in: an http.Client
// dials from other threads, which sit in the host's namespace. It returns
// the status code and the body.
func HTTPGet(addr, path string) (int, string, error) {
	conn, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
	if err != nil {
		return 0, "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	fmt.Fprintf(conn, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, addr)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}
