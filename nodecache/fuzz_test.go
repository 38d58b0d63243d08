package nodecache

import (
	"bytes"
	"flag"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coredns/caddy/caddyfile"
)

// Seeds for the fuzzers come from the golden files and the test tables;
// plain `go test` runs only these. `go test -fuzz FuzzX` explores further.

func goldenSeeds(f *testing.F) [][]byte {
	f.Helper()
	paths, err := filepath.Glob("testdata/*")
	if err != nil {
		f.Fatal(err)
	}
	var out [][]byte
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

var fuzzStubs = []string{
	`{"v6.example": ["[2001:2::53]:5353", "tls://198.18.5.3"], "acme.example": ["198.18.5.1", "dns://198.18.5.2:5353"]}`,
	`{"acme.example": ["198.18.5.1"], "eu.acme.example": ["198.18.5.2"]}`,
	`{"acme.example": "198.18.5.1"`,
	`{"acme.example {": ["198.18.5.1"]}`,
	`{"acme.example": ["169.254.20.10"]}`,
	`{"": ["198.18.5.1"]}`,
	`{}`,
}

// The renderer never panics; what it renders parses, holds no placeholder,
// and renders the same bytes again.
func FuzzRender(f *testing.F) {
	for _, g := range goldenSeeds(f) {
		f.Add(g, fuzzStubs[0])
	}
	f.Add([]byte(".:53 {\n    bind __PILLAR__LOCAL__DNS__\n    forward . __PILLAR__UPSTREAM__SERVERS__\n}\n"), fuzzStubs[1])
	f.Add([]byte("(snip) {\n    errors\n}\n.:53 {\n    import snip\n    health __PILLAR__LOCAL__DNS__:8080\n}\n"), "")
	f.Fuzz(func(t *testing.T, tmpl []byte, stubs string) {
		src := sources{
			localIPs:   []netip.Addr{netip.MustParseAddr("169.254.20.10"), netip.MustParseAddr("2001:2::a")},
			clusterDNS: netip.MustParseAddr("198.18.0.11"),
			upstreams:  []string{"198.18.6.1"},
			directive: func(health int) ([]string, error) {
				return []string{"localip 169.254.20.10 2001:2::a", "upstreamsvc kube-dns-upstream"}, nil
			},
		}
		if stubs != "" {
			var err error
			if src.stubs, err = parseStubDomains([]byte(stubs)); err != nil {
				return
			}
		}
		got, _, err := render("Corefile.base", tmpl, src)
		if err != nil {
			return
		}
		if _, err := caddyfile.Parse("rendered", bytes.NewReader(got), nil); err != nil {
			t.Fatalf("Rendered Corefile does not parse: %v\n%s", err, got)
		}
		if anyPlaceholder.Match(stripComments(got)) {
			t.Fatalf("Rendered Corefile keeps a placeholder:\n%s", got)
		}
		again, _, err := render("Corefile.base", tmpl, src)
		if err != nil || !bytes.Equal(again, got) {
			t.Fatalf("A second render differs (err %v)", err)
		}
	})
}

// stripComments drops what follows '#' outside quotes, line by line.
func stripComments(b []byte) []byte {
	var out bytes.Buffer
	for _, t := range tokenize(b) {
		out.WriteString(t.text + "\n")
	}
	return out.Bytes()
}

// The kube-dns ConfigMap parser never panics, and what it accepts becomes
// exactly one zone and one forward per stub domain in the rendered Corefile:
// no value can add Corefile syntax.
func FuzzKubeDNS(f *testing.F) {
	for _, s := range fuzzStubs {
		f.Add(s, `["198.18.6.1", "2001:2::6"]`)
	}
	f.Add("", `["198.18.6.1"`)
	f.Add("", `["quic://198.18.6.1"]`)
	f.Add("", `["tls://[2001:2::6]:853"]`)
	f.Fuzz(func(t *testing.T, stubs, ups string) {
		if list, err := parseUpstreams([]byte(ups)); err == nil {
			for _, s := range list {
				if again, err := formatServer(s); err != nil || again != s {
					t.Fatalf("Upstream %q formats to %q (%v) a second time", s, again, err)
				}
			}
		}
		parsed, err := parseStubDomains([]byte(stubs))
		if err != nil {
			return
		}
		if len(parsed) > maxStubDomains {
			t.Fatalf("%d stub domains accepted, limit %d", len(parsed), maxStubDomains)
		}
		var out bytes.Buffer
		writeStubs(&out, parsed, root{port: "53", bindArgs: []string{"169.254.20.10"}}, nil, true)
		blocks, err := caddyfile.Parse("stubs", &out, nil)
		if err != nil {
			t.Fatalf("Stub block does not parse: %v\n%s", err, out.String())
		}
		if len(parsed) == 0 {
			if len(blocks) != 0 {
				t.Fatalf("No stub domains rendered %d blocks", len(blocks))
			}
			return
		}
		if len(blocks) != 1 || len(blocks[0].Keys) != len(parsed) {
			t.Fatalf("%d stub domains rendered %d blocks (keys %q)", len(parsed), len(blocks), blocks[0].Keys)
		}
		d := caddyfile.NewDispenserTokens("stubs", blocks[0].Tokens["forward"])
		n := 0
		for d.Next() {
			if d.Val() == "forward" {
				n++
			}
		}
		if n != len(parsed) {
			t.Fatalf("%d stub domains rendered %d forward lines:\n%s", len(parsed), n, out.String())
		}
	})
}

// The node-cache flag parser never panics, and the directive lines it
// makes are plain one-line settings: no value can add Corefile syntax.
func FuzzFlags(f *testing.F) {
	f.Add("-localip 169.254.20.10,198.18.0.10 -upstreamsvc kube-dns-upstream -skipteardown")
	f.Add("-localip 2001:2::a,2001:2::10 -setupiptables=false -interfacename nodecache0 -syncinterval 30")
	f.Add("-localip 169.254.20.10 -syncinterval 0 -health-port 9090")
	f.Add("-localip 169.254.20.10 -syncinterval 1m30s -setupinterface=false")
	f.Add("-interfacename x{y} -upstreamsvc a\nb")
	f.Fuzz(func(t *testing.T, args string) {
		fs := flag.NewFlagSet("fuzz", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		fs.String("conf", "", "")
		fl := registerFlags(fs)
		if err := fs.Parse(strings.Split(args, " ")); err != nil || !fl.compat() {
			return
		}
		lines, err := fl.directiveLines(0)
		if err != nil {
			return
		}
		text := ".:53 {\n" + directiveText(lines) + "\n}\n"
		blocks, err := caddyfile.Parse("flags", strings.NewReader(text), nil)
		if err != nil {
			return // CoreDNS rejects it at start, naming the line
		}
		toks := blocks[0].Tokens["nodelocal"]
		lineCount := map[int]bool{}
		for _, tk := range toks {
			lineCount[tk.Line] = true
		}
		if len(blocks) != 1 || len(blocks[0].Tokens) != 1 || len(lineCount) != len(lines)+2 {
			t.Fatalf("Flags %q gave directive text that is more than %d settings:\n%s", args, len(lines), text)
		}
	})
}
