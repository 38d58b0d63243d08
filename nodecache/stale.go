package nodecache

import "bytes"

// ServeStale is the line the loader adds to every cache block of a
// node-cache template that has none: when the cluster DNS is down, failing
// or slow, answers expired up to an hour ago are served (after at most 1 s
// waiting on the upstream, with a 30 s TTL, the upstream asked again at
// most every 10 s per name). node-cache's template has no serve_stale, and
// the template itself stays as the official manifest ships it.
const ServeStale = "serve_stale 1h verify 1s 30s 10s"

// withServeStale adds ServeStale to each server block's cache directive
// that lacks serve_stale: `cache 30` becomes a block holding it, and a
// cache block gets it as its first line.
func withServeStale(body []byte) []byte {
	toks := tokenize(body)
	var out bytes.Buffer
	last := 0
	for i, t := range toks {
		if t.text != "cache" || t.depth != 1 || (i > 0 && toks[i-1].line == t.line) {
			continue
		}
		j := i // the last token of the directive's line
		for j+1 < len(toks) && toks[j+1].line == t.line {
			j++
		}
		if toks[j].text != "{" {
			out.Write(body[last:toks[j].end])
			out.WriteString(" {\n        " + ServeStale + "\n    }")
			last = toks[j].end
			continue
		}
		has := false
		for k := j + 1; k < len(toks) && toks[k].depth > 1; k++ {
			if toks[k].depth == 2 && toks[k].text == "serve_stale" {
				has = true
			}
		}
		if !has {
			out.Write(body[last:toks[j].end])
			out.WriteString("\n        " + ServeStale)
			last = toks[j].end
		}
	}
	out.Write(body[last:])
	return out.Bytes()
}
