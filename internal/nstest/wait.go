package nstest

import (
	"testing"
	"time"
)

// Eventually polls cond until it holds and returns how long that took; it
// fails the test, naming what it waited for, when cond does not hold within
// limit. It polls every 20 ms at first, backing off to 200 ms, so a check
// that runs commands does not load the machine while it waits long.
func Eventually(t testing.TB, what string, limit time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for pause := 20 * time.Millisecond; !cond(); pause = min(2*pause, 200*time.Millisecond) {
		if time.Since(start) > limit {
			t.Fatalf("Not within %s: %s", limit, what)
		}
		time.Sleep(pause)
	}
	return time.Since(start)
}
