package nodecache

import (
	"bytes"
	"fmt"
	"os"
	"strings"
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
	type block struct {
		open          int // end of the opening brace
		cache, hasHit bool
	}
	var blocks []block
	keyStart, snippet := true, false
	lineOf := -1 // line of the directive being read at depth 1
	for _, t := range tokenize(body) {
		switch {
		case t.depth == 0 && t.text == "{":
			if !snippet {
				blocks = append(blocks, block{open: t.end})
			}
		case t.depth == 0 && t.text == "}":
			keyStart, snippet = true, false
		case t.depth == 0:
			if keyStart {
				snippet = strings.HasPrefix(t.text, "(") && strings.HasSuffix(t.text, ")")
				keyStart = false
			}
		case t.depth == 1 && !snippet && len(blocks) > 0 && t.line != lineOf:
			// The first token of a line in a server block: a directive.
			lineOf = t.line
			b := &blocks[len(blocks)-1]
			b.cache = b.cache || t.text == "cache"
			b.hasHit = b.hasHit || t.text == "hitpath"
		}
	}
	var out bytes.Buffer
	last := 0
	for _, b := range blocks {
		if !b.cache || b.hasHit {
			continue
		}
		out.Write(body[last:b.open])
		out.WriteString("\n    hitpath")
		last = b.open
	}
	out.Write(body[last:])
	return out.Bytes()
}
