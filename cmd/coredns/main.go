// Command coredns is the nodelocaldns build of CoreDNS: the stock CoreDNS
// v1.15.0 server with a restricted plugin set (plugin.cfg) and the nodelocal
// plugin compiled in, and node-cache's command line (package nodecache) so
// that the official node-local-dns DaemonSet runs it unchanged.
package main

import (
	"flag"
	"log"
	"os"
	"runtime/debug"

	"github.com/coredns/coredns/coremain"

	"github.com/nodelocaldns/nodelocaldns/build/plugins"
	"github.com/nodelocaldns/nodelocaldns/internal/cachesize"
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
	sizeCaches()
	coremain.Run()
}

// sizeCaches sets the cache capacities the Corefiles reference
// ({$NODELOCAL_CACHE_SUCCESS}, ...) from the container's memory limit, unless
// the environment sets them, and, under a limit, a soft memory limit for the
// Go runtime (GOMEMLIMIT, 90 % of it) unless one is set: the garbage
// collector then works harder instead of the pod being OOM-killed.
func sizeCaches() {
	s, msg, err := cachesize.SetEnv()
	if err != nil {
		log.Fatalf("size the caches: %v", err)
	}
	if s.Limit > 0 && os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(s.Limit / 10 * 9)
	}
	if len(os.Args) > 1 && (os.Args[1] == "-version" || os.Args[1] == "-plugins") {
		return
	}
	log.Printf("[INFO] %s", msg)
}
