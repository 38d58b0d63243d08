// Command coredns is the nodelocaldns build of CoreDNS: the stock CoreDNS
// v1.15.0 server with a restricted plugin set (plugin.cfg) and the nodelocal
// plugin compiled in, and node-cache's command line (package nodecache) so
// that the official node-local-dns DaemonSet runs it unchanged.
package main

import (
	"flag"
	"log"
	"os"

	"github.com/coredns/coredns/coremain"

	"github.com/nodelocaldns/nodelocaldns/build/plugins"
	"github.com/nodelocaldns/nodelocaldns/nodecache"
	"github.com/nodelocaldns/nodelocaldns/plugin/nodelocal"
)

func main() {
	// The server runs as the child of a small supervising process that
	// undoes the node changes of a child that dies without undoing them
	// (a plugin's log.Fatal at start-up, a listener that cannot bind).
	if code, ok := nodelocal.Supervise(); ok {
		os.Exit(code)
	}
	if err := plugins.Use(); err != nil {
		log.Fatal(err)
	}
	// After every init (coremain's defines -conf), before coremain.Run
	// parses the command line.
	nodecache.Register(flag.CommandLine)
	primeStackStart()
	coremain.Run()
}
