package nodecache

import (
	"fmt"
	"os"
)

// HitPathEnv turns the hitpath directive the loader adds off ("off") or on
// ("on", or unset).
const HitPathEnv = "NODELOCAL_HITPATH"

// hitPathWanted reads HitPathEnv.
func hitPathWanted() (bool, error) {
	switch v := os.Getenv(HitPathEnv); v {
	case "", "on":
		return true, nil
	case "off":
		return false, nil
	default:
		return false, fmt.Errorf("%s=%q: want on or off", HitPathEnv, v)
	}
}

// withHitPath adds a hitpath line right after the opening brace of every
// server block (snippets excepted) that has a cache and no hitpath: cache
// hits on UDP are then answered by the fast path, as in this project's own
// Corefiles. A block where a plugin must see every query (log, rewrite, ...)
// keeps the fast path off by itself and says so in the log.
func withHitPath(body []byte) []byte {
	var want []serverBlock
	for _, b := range serverBlocks(tokenize(body)) {
		cache, has := false, false
		line := -1
		for _, t := range b.body {
			if t.depth != 1 || t.line == line {
				continue
			}
			line = t.line // the first token of a line in the block: a directive
			cache = cache || t.text == "cache"
			has = has || t.text == "hitpath"
		}
		if cache && !has {
			want = append(want, b)
		}
	}
	return insertAfterOpen(body, want, "\n    hitpath")
}
