// Command coredns is the nodelocaldns build of CoreDNS: the stock CoreDNS
// v1.15.0 server with a restricted plugin set (plugin.cfg) and the nodelocal
// plugin compiled in.
package main

import (
	"log"

	"github.com/coredns/coredns/coremain"

	"github.com/nodelocaldns/nodelocaldns/build/plugins"
)

func main() {
	if err := plugins.Use(); err != nil {
		log.Fatal(err)
	}
	primeStackStart()
	coremain.Run()
}
