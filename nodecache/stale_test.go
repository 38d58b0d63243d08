package nodecache

import (
	"bytes"
	"strings"
	"testing"

	"github.com/coredns/caddy/caddyfile"
)

func TestWithServeStale(t *testing.T) {
	tmpl := `cluster.local:53 {
    errors
    cache {
        success 9984 30
        denial 9984 5
    }
    forward . 198.18.0.11 {
        force_tcp
    }
}
in-addr.arpa:53 {
    cache 30 # reverse
    forward . 198.18.0.11
}
example.test:53 {
    cache {
        serve_stale 10m immediate
    }
    forward . 198.18.0.11
}
.:53 {
    template ANY ANY {
        answer "cache 30"
    }
}
`
	got := withServeStale([]byte(tmpl))
	blocks, err := caddyfile.Parse("Corefile", bytes.NewReader(got), nil)
	if err != nil {
		t.Fatalf("Rendered Corefile does not parse: %v\n%s", err, got)
	}
	want := []string{ServeStale, ServeStale, "serve_stale 10m immediate", ""}
	for i, b := range blocks {
		var line []string
		toks := b.Tokens["cache"]
		for k, tok := range toks {
			if tok.Text == "serve_stale" {
				for _, a := range toks[k:] {
					if a.Line != tok.Line {
						break
					}
					line = append(line, a.Text)
				}
			}
		}
		if g := strings.Join(line, " "); g != want[i] {
			t.Errorf("Block %v: serve_stale %q, want %q\n%s", b.Keys, g, want[i], got)
		}
	}
	if !strings.Contains(string(got), "success 9984 30\n        denial 9984 5") || !strings.Contains(string(got), "# reverse") {
		t.Errorf("The rest of the template changed:\n%s", got)
	}
	if again := withServeStale(got); !bytes.Equal(again, got) {
		t.Errorf("Adding twice changed it again:\n%s", again)
	}
}
