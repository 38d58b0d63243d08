// Package plugins is the plugin set of the nodelocaldns CoreDNS build. Its
// z*.go files are generated from plugin.cfg; importing the package registers
// every plugin the build has, and Use makes CoreDNS run them in plugin.cfg's
// order.
package plugins

//go:generate go run ../gen -cfg ../../plugin.cfg -out .

import (
	"fmt"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
)

// Use registers the dns server type and sets the directive order to
// plugin.cfg's. Call it before starting CoreDNS.
func Use() error {
	if err := dnsserver.Register(); err != nil {
		return err
	}
	if err := dnsserver.SetDirectives(Directives); err != nil {
		return fmt.Errorf("plugin list: %w", err)
	}
	return nil
}

// Validate parses corefile and runs every plugin's setup on it, as start-up
// does, without starting anything: what `coredns -conf` would reject, it
// rejects with the same file:line message. Env placeholders ({$VAR}) are
// replaced from the environment, as at start-up.
func Validate(path string, corefile []byte) error {
	if err := Use(); err != nil {
		return err
	}
	in := caddy.CaddyfileInput{Filepath: path, Contents: corefile, ServerTypeName: "dns"}
	return caddy.ValidateAndExecuteDirectives(in, nil, true)
}
