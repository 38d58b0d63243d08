// Command coredns is the nodelocaldns build of CoreDNS: the stock CoreDNS
// v1.15.0 server with a restricted plugin set (plugin.cfg) and the nodelocal
// plugin compiled in.
package main

//go:generate go run ../../build/gen -cfg ../../plugin.cfg -out .

import (
	"log"

	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"
)

func main() {
	if err := dnsserver.SetDirectives(directives); err != nil {
		log.Fatalf("plugin list: %v", err)
	}
	coremain.Run()
}
