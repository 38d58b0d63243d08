package main

import (
	"runtime"
	"runtime/metrics"
	"testing"
	"time"
)

// TestStackStart: after the primers and a GC, new goroutines (every UDP
// query) start with 16 KiB of stack, and no more.
func TestStackStart(t *testing.T) {
	primeStackStart()
	deadline := time.Now().Add(5 * time.Second)
	for primed.Load() < stackPrimers && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	runtime.GC()
	s := []metrics.Sample{{Name: "/gc/stack/starting-size:bytes"}}
	metrics.Read(s)
	if got := s[0].Value.Uint64(); got != 16<<10 {
		t.Errorf("Goroutines start with %d bytes of stack, want %d", got, 16<<10)
	}
}
