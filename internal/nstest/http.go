package nstest

import "github.com/nodelocaldns/nodelocaldns/internal/nsenter"

// HTTPGet is nsenter.HTTPGet, kept under this name for the plugin's tests
// (plugin/nodelocal/dropin_test.go) until they call nsenter.HTTPGet.
func HTTPGet(addr, path string) (int, string, error) { return nsenter.HTTPGet(addr, path) }
