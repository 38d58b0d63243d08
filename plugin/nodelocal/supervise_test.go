package nodelocal

import (
	"fmt"
	"testing"
)

// TestHoldTellsSupervisor: a supervising parent always knows what the
// process holds on the node, before the change, and that it gave the node
// up once it did; otherwise it would undo too little or too much.
func TestHoldTellsSupervisor(t *testing.T) {
	fs := withFakeSystem(t)
	held := func() holding {
		var h holding
		fs.get(func(s *fakeSystem) {
			if s.held != nil {
				h = *s.held
			}
		})
		return h
	}
	inst := start(t, twoBlocks)
	h := held()
	if h.Released || fmt.Sprintf("%v %v %v", h.Link.Addrs, h.Rules.LocalIPs, h.Rules.Mode) != "[169.254.20.10 198.18.0.10] [169.254.20.10 198.18.0.10] iptables" || h.StateDir != defaultStateDir {
		t.Errorf("After start the supervisor was told %+v (%s)", h, fmt.Sprintf("%v %v %v", h.Link.Addrs, h.Rules.LocalIPs, h.Rules.Mode))
	}
	finalShutdown(t, inst)
	if h := held(); !h.Released {
		t.Errorf("After the final shutdown the supervisor was told %+v, want released", h)
	}
}
