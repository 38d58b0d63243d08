package main

import (
	"runtime"
	"sync/atomic"
)

// miekg/dns serves every UDP query on a new goroutine. Go starts goroutines
// with a stack the size of the average stack it scanned in the last GC
// (adaptive stack start); a CoreDNS process's goroutines are mostly idle
// listeners with small stacks, so queries start at 2-8 KiB and grow their
// stack two or three times on the way down the plugin chain, each growth a
// copy that walks every frame: 14 % of the cache's CPU per hit in a profile
// under dnsperf. Parked goroutines holding one 14 KiB frame each lift the
// average so that new goroutines start at 16 KiB, which the hit path fits in.
// The cost is about 1.5 MiB of stack. GODEBUG=adaptivestackstart=0 turns the
// runtime's heuristic, and with it this, off.
const (
	stackPrimers    = 96
	stackPrimerSize = 14 << 10 // 14 KiB + the runtime's guard rounds up to 16 KiB, not 32
)

// primeStackStart starts the parked goroutines; they live as long as the process.
func primeStackStart() {
	for range stackPrimers {
		go holdStack()
	}
}

// block parks the primers forever.
var block = make(chan struct{})

// primed counts the primers that hold their frame.
var primed atomic.Int32

func holdStack() {
	var frame [stackPrimerSize]byte
	use(frame[:])
	primed.Add(1)
	<-block
	runtime.KeepAlive(&frame)
}

// use keeps the frame from being optimised away.
//
//go:noinline
func use(b []byte) { b[len(b)-1] = 1 }
