package nodecache

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/coredns/caddy/caddyfile"

	"github.com/nodelocaldns/nodelocaldns/plugin/nodelocal"
)

// node-cache's Corefile template placeholders.
const (
	phClusterDNS = "__PILLAR__CLUSTER__DNS__"
	phUpstreams  = "__PILLAR__UPSTREAM__SERVERS__"
	phLocalDNS   = "__PILLAR__LOCAL__DNS__"
	phDNSServer  = "__PILLAR__DNS__SERVER__"
)

var anyPlaceholder = regexp.MustCompile(`__PILLAR__[A-Z0-9_]*__`)

// stubCache is the cache line of node-cache's stub domain blocks.
const stubCache = "cache 30"

// sources is everything a render needs besides the template; the loader
// gathers it, render itself reads nothing.
type sources struct {
	localIPs     []netip.Addr
	clusterDNS   netip.Addr // invalid when unknown
	clusterErr   error      // why clusterDNS is unknown
	upstreams    []string   // for __PILLAR__UPSTREAM__SERVERS__
	upstreamsErr error
	stubs        []stubDomain
	hitPath      bool // add hitpath to every server block with a cache
	// directive gives the settings lines of the nodelocal block to inject
	// into every server block, given the port of the template's health line
	// (0 when it has none); nil injects nothing.
	directive func(templateHealthPort int) ([]string, error)
}

// token is one Corefile token as caddy's lexer cuts it, with its byte span.
type token struct {
	start, end int // raw span in the input, quotes included
	line       int
	depth      int // brace depth before the token
	text       string
}

// tokenize cuts a Corefile the way caddy's lexer does: whitespace separates
// tokens, '#' starts a comment to the end of the line, double quotes group
// (with \" escaped). It also tracks brace depth.
func tokenize(b []byte) []token {
	var out []token
	line, depth := 1, 0
	for i := 0; i < len(b); {
		c := b[i]
		switch {
		case c == '\n':
			line++
			i++
			continue
		case c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v':
			i++
			continue
		case c == '#':
			for i < len(b) && b[i] != '\n' {
				i++
			}
			continue
		}
		t := token{start: i, line: line, depth: depth}
		if c == '"' {
			i++
			for i < len(b) && b[i] != '"' {
				if b[i] == '\\' && i+1 < len(b) {
					i++
				}
				if b[i] == '\n' {
					line++
				}
				i++
			}
			if i < len(b) {
				i++
			}
		} else {
			for i < len(b) && !isSpace(b[i]) && b[i] != '#' {
				i++
			}
		}
		t.end = i
		t.text = string(b[t.start:t.end])
		switch t.text {
		case "{":
			depth++
		case "}":
			depth--
			t.depth = depth
		}
		out = append(out, t)
	}
	return out
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}

// substitute fills the placeholders token by token. A token that is only
// __PILLAR__LOCAL__DNS__ becomes every local IP (as in bind); inside a
// longer token (health __PILLAR__LOCAL__DNS__:8080) it is the first local IP.
// A leftover __PILLAR__DNS__SERVER__ (IPVS mode) is removed. Any other
// placeholder left is an error.
func substitute(file string, tmpl []byte, src sources) ([]byte, error) {
	var out bytes.Buffer
	last := 0
	for _, t := range tokenize(tmpl) {
		if !strings.Contains(t.text, "__PILLAR__") {
			continue
		}
		v := t.text
		var err error
		if v, err = fill(v, src); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", file, t.line, err)
		}
		if m := anyPlaceholder.FindString(v); m != "" {
			return nil, fmt.Errorf("%s:%d: unknown placeholder %s left in %q after rendering", file, t.line, m, t.text)
		}
		prev := tmpl[last:t.start]
		if v == "" {
			// Drop the token with the blanks before it, keep the line.
			prev = bytes.TrimRight(prev, " \t")
		}
		out.Write(prev)
		out.WriteString(v)
		last = t.end
	}
	out.Write(tmpl[last:])
	return out.Bytes(), nil
}

func fill(v string, src sources) (string, error) {
	if v == phDNSServer {
		return "", nil
	}
	v = strings.ReplaceAll(v, ","+phDNSServer, "")
	v = strings.ReplaceAll(v, phDNSServer, "")

	if strings.Contains(v, phLocalDNS) {
		if len(src.localIPs) == 0 {
			return "", fmt.Errorf("%s needs the local IPs: give -localip", phLocalDNS)
		}
		if v == phLocalDNS {
			v = joinAddrs(src.localIPs)
		} else {
			v = replaceAddr(v, phLocalDNS, src.localIPs[0])
		}
	}
	if strings.Contains(v, phClusterDNS) {
		if !src.clusterDNS.IsValid() {
			return "", fmt.Errorf("%s: %w", phClusterDNS, src.clusterErr)
		}
		v = replaceAddr(v, phClusterDNS, src.clusterDNS)
	}
	if strings.Contains(v, phUpstreams) {
		if src.upstreamsErr != nil {
			return "", fmt.Errorf("%s: %w", phUpstreams, src.upstreamsErr)
		}
		if len(src.upstreams) == 0 {
			return "", fmt.Errorf("%s: no upstream servers", phUpstreams)
		}
		v = strings.ReplaceAll(v, phUpstreams, strings.Join(src.upstreams, " "))
	}
	return v, nil
}

// replaceAddr puts ip in place of ph, bracketing an IPv6 address that a
// port follows ([2001:2::1]:53) unless the template brackets it already.
func replaceAddr(v, ph string, ip netip.Addr) string {
	for {
		i := strings.Index(v, ph)
		if i < 0 {
			return v
		}
		s := ip.String()
		after := v[i+len(ph):]
		if ip.Is6() && strings.HasPrefix(after, ":") && !strings.HasSuffix(v[:i], "[") {
			s = "[" + s + "]"
		}
		v = v[:i] + s + after
	}
}

func joinAddrs(ips []netip.Addr) string {
	s := make([]string, len(ips))
	for i, ip := range ips {
		s[i] = ip.String()
	}
	return strings.Join(s, " ")
}

// render turns a node-cache template into the Corefile CoreDNS runs:
// placeholders filled, serve_stale added to its cache blocks (withServeStale),
// hitpath to its blocks with a cache when src says so (withHitPath),
// one server block for the stub domains appended, and
// the nodelocal directive injected into every server block when src carries
// one. It is pure: the same template and sources give the same bytes. The
// warnings say what renders but is likely not what the user meant.
func render(file string, tmpl []byte, src sources) ([]byte, []string, error) {
	body, err := substitute(file, tmpl, src)
	if err != nil {
		return nil, nil, err
	}
	body = withServeStale(body)
	if src.hitPath {
		body = withHitPath(body)
	}
	blocks, err := caddyfile.Parse(file, bytes.NewReader(body), nil)
	if err != nil {
		return nil, nil, fmt.Errorf("template after rendering: %w", err)
	}
	root := rootBlock(file, body, blocks)
	if err := checkStubLoops(src, root); err != nil {
		return nil, nil, err
	}
	var warnings []string
	if root.at != "" && len(root.bindArgs) == 0 {
		// Not refused: a block without bind is valid CoreDNS and serves on
		// every address of the node, the local IPs included; the stub block
		// follows it (binds nothing) so both share one listener.
		warnings = append(warnings, fmt.Sprintf("%s: the root block (.) has no bind: it serves on every address of the node, not only on the local IPs; node-cache's template binds __PILLAR__LOCAL__DNS__", root.at))
	}
	health, healthAt, err := healthPort(file, blocks)
	if err != nil {
		return nil, nil, err
	}

	var inject []string
	if src.directive != nil {
		if at := directiveAt(file, blocks); at != "" {
			return nil, nil, fmt.Errorf("%s has its own nodelocal directive (%s) and node-cache flags are given: set the node in one place, the flags or the directive", file, at)
		}
		if inject, err = src.directive(health); err != nil {
			if healthAt != "" {
				err = fmt.Errorf("%w (health line at %s)", err, healthAt)
			}
			return nil, nil, err
		}
		if body, err = injectDirective(file, body, inject); err != nil {
			return nil, nil, err
		}
	}

	var out bytes.Buffer
	out.Write(body)
	if len(body) > 0 && body[len(body)-1] != '\n' {
		out.WriteByte('\n')
	}
	writeStubs(&out, src.stubs, root, inject, src.hitPath)
	result := out.Bytes()
	if err := checkRendered(file, result); err != nil {
		return nil, nil, err
	}
	return result, warnings, nil
}

// checkStubLoops refuses a stub domain or upstream server that is this
// cache itself (a local IP, or an address the root block binds, on the port
// it serves): each query would come back here until the loop plugin stops
// the process, after the node was set up.
func checkStubLoops(src sources, r root) error {
	self := map[netip.Addr]bool{}
	for _, ip := range src.localIPs {
		self[ip] = true
	}
	for _, a := range r.bindArgs {
		if ip, err := netip.ParseAddr(a); err == nil {
			self[ip.Unmap()] = true
		}
	}
	port, _ := strconv.Atoi(r.port)
	loops := func(server string) bool {
		ip, p, ok := serverAddr(server)
		return ok && self[ip] && p == port
	}
	for _, s := range src.stubs {
		for _, srv := range s.servers {
			if loops(srv) {
				return fmt.Errorf("kube-dns ConfigMap %s[%q]: server %q is this cache (a local IP on port %d): queries would loop back to it", keyStubDomains, s.domain, srv, port)
			}
		}
	}
	for _, srv := range src.upstreams {
		if loops(srv) {
			return fmt.Errorf("kube-dns ConfigMap %s: server %q is this cache (a local IP on port %d): queries would loop back to it", keyUpstreams, srv, port)
		}
	}
	return nil
}

// serverAddr splits a server as formatServer writes it into address and
// port, with the transport's default port when none is given.
func serverAddr(s string) (netip.Addr, int, bool) {
	port := 53
	if rest, ok := strings.CutPrefix(s, "tls://"); ok {
		s, port = rest, 853
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), int(ap.Port()), true
	}
	ip, err := netip.ParseAddr(s)
	return ip.Unmap(), port, err == nil
}

// root is what stub domain blocks copy from the template's root zone block:
// its port (node-cache serves stub domains on the port of its other blocks),
// its reload arguments (the reload plugin keeps the last interval it reads),
// and its bind addresses (the local IPs in node-cache's template).
type root struct {
	at         string // file:line of the root block, "" when there is none
	port       string
	reloadArgs []string
	bindArgs   []string
}

func rootBlock(file string, body []byte, blocks []caddyfile.ServerBlock) root {
	r := root{port: "53"}
	for i, b := range blocks {
		isRoot := false
		for _, k := range b.Keys {
			host, p := splitKey(k)
			if host == "." {
				isRoot = true
				if p != "" {
					r.port = p
				}
			} else if i == 0 && p != "" {
				r.port = p
			}
		}
		if isRoot {
			r.at = fmt.Sprintf("%s:%d", file, keyLine(body, b.Keys[0]))
			r.reloadArgs = lineArgs(b.Tokens["reload"])
			r.bindArgs = lineArgs(b.Tokens["bind"])
			return r
		}
	}
	return r
}

// keyLine returns the line of the first server block key key, 0 if none.
func keyLine(body []byte, key string) int {
	for _, t := range tokenize(body) {
		if t.depth == 0 && strings.TrimSuffix(t.text, ",") == key {
			return t.line
		}
	}
	return 0
}

// lineArgs returns the arguments on the line of a directive's first use.
func lineArgs(toks []caddyfile.Token) []string {
	if len(toks) == 0 {
		return nil
	}
	var args []string
	for _, t := range toks[1:] {
		if t.Line != toks[0].Line || t.Text == "{" {
			break
		}
		args = append(args, t.Text)
	}
	return args
}

func splitKey(k string) (host, port string) {
	if i := strings.Index(k, "://"); i >= 0 {
		k = k[i+3:]
	}
	if i := strings.LastIndex(k, ":"); i >= 0 && !strings.Contains(k[i:], "]") {
		return k[:i], k[i+1:]
	}
	return k, ""
}

// healthPort returns the port of the template's health line(s), 0 when there
// is none, and where the first one is.
func healthPort(file string, blocks []caddyfile.ServerBlock) (int, string, error) {
	port, at := 0, ""
	for _, b := range blocks {
		toks := b.Tokens["health"]
		d := caddyfile.NewDispenserTokens(file, toks)
		for d.Next() {
			if d.Val() != "health" {
				continue
			}
			line := d.Line()
			addr := ":8080" // the health plugin's default
			if d.NextArg() {
				addr = d.Val()
			}
			_, ps, err := net.SplitHostPort(addr)
			p, perr := strconv.Atoi(ps)
			if err != nil || perr != nil {
				return 0, "", fmt.Errorf("%s:%d: health address %q has no port", file, line, addr)
			}
			here := fmt.Sprintf("%s:%d", file, line)
			if port != 0 && p != port {
				return 0, "", fmt.Errorf("health ports differ: %d at %s and %d at %s", port, at, p, here)
			}
			if port == 0 {
				port, at = p, here
			}
			for d.NextBlock() {
			}
		}
	}
	return port, at, nil
}

func directiveAt(file string, blocks []caddyfile.ServerBlock) string {
	for _, b := range blocks {
		if toks := b.Tokens[nodelocal.Name]; len(toks) > 0 {
			return fmt.Sprintf("%s:%d", file, toks[0].Line)
		}
	}
	return ""
}

// serverBlock is one server block of a Corefile (snippet definitions are
// not server blocks): where its opening brace ends and its tokens between
// the braces.
type serverBlock struct {
	open int
	body []token
}

// serverBlocks finds the server blocks among a Corefile's tokens.
func serverBlocks(toks []token) []serverBlock {
	var out []serverBlock
	keyStart, snippet, in := true, false, -1
	for i, t := range toks {
		if t.depth != 0 {
			continue
		}
		switch t.text {
		case "{":
			if !snippet {
				out = append(out, serverBlock{open: t.end})
				in = i + 1
			}
		case "}":
			if in >= 0 {
				out[len(out)-1].body = toks[in:i]
				in = -1
			}
			keyStart, snippet = true, false
		default:
			if keyStart {
				snippet = strings.HasPrefix(t.text, "(") && strings.HasSuffix(t.text, ")")
				keyStart = false
			}
		}
	}
	if in >= 0 { // unclosed: the parser refuses it later
		out[len(out)-1].body = toks[in:]
	}
	return out
}

// insertAfterOpen writes text right after the opening brace of each of
// blocks (in order).
func insertAfterOpen(body []byte, blocks []serverBlock, text string) []byte {
	var out bytes.Buffer
	last := 0
	for _, b := range blocks {
		out.Write(body[last:b.open])
		out.WriteString(text)
		last = b.open
	}
	out.Write(body[last:])
	return out.Bytes()
}

// injectDirective writes a nodelocal block right after the opening brace of
// every server block (snippet definitions excepted).
func injectDirective(file string, body []byte, lines []string) ([]byte, error) {
	blocks := serverBlocks(tokenize(body))
	if len(blocks) == 0 {
		return nil, fmt.Errorf("%s: no server block in braces to add the nodelocal directive to", file)
	}
	return insertAfterOpen(body, blocks, "\n"+directiveText(lines)), nil
}

// directiveText indents the nodelocal block as node-cache's template does.
func directiveText(lines []string) string {
	var b strings.Builder
	b.WriteString("    nodelocal {\n")
	for _, l := range lines {
		b.WriteString("        " + l + "\n")
	}
	b.WriteString("    }")
	return b.String()
}

// writeStubs writes one server block for every stub domain: each domain a
// zone of the block, with node-cache's settings for stub domains (errors,
// cache 30, reload, loop) once, and one forward per domain, the most specific
// domain first (forward tries them in order and the first that matches the
// query's name answers). One block shares its cache, its plugins and its
// loop probe among all stub domains, where a block per domain cost each
// domain a cache of its own. It binds what the root block binds.
func writeStubs(out *bytes.Buffer, stubs []stubDomain, r root, inject []string, hitPath bool) {
	if len(stubs) == 0 {
		return
	}
	for i, s := range stubs {
		if i > 0 {
			out.WriteString(",\n")
		}
		fmt.Fprintf(out, "%s:%s", s.domain, r.port)
	}
	out.WriteString(" {\n")
	if inject != nil {
		out.WriteString(directiveText(inject) + "\n")
	}
	if hitPath {
		out.WriteString("    hitpath\n")
	}
	out.WriteString("    errors\n")
	out.WriteString("    " + stubCache + " {\n        " + ServeStale + "\n    }\n")
	out.WriteString("    " + strings.Join(append([]string{"reload"}, r.reloadArgs...), " ") + "\n")
	out.WriteString("    loop\n")
	if len(r.bindArgs) > 0 {
		out.WriteString("    bind " + strings.Join(r.bindArgs, " ") + "\n")
	}
	byDepth := slices.Clone(stubs)
	slices.SortStableFunc(byDepth, func(a, b stubDomain) int {
		return strings.Count(b.domain, ".") - strings.Count(a.domain, ".")
	})
	for _, s := range byDepth {
		out.WriteString("    forward " + s.domain + " " + strings.Join(s.servers, " ") + "\n")
	}
	out.WriteString("}\n")
}

// checkRendered parses the result and checks what CoreDNS would only find
// later or not at all: every forward line has a destination.
func checkRendered(file string, body []byte) error {
	blocks, err := caddyfile.Parse(file, bytes.NewReader(body), nil)
	if err != nil {
		return fmt.Errorf("rendered Corefile: %w", err)
	}
	for _, b := range blocks {
		d := caddyfile.NewDispenserTokens(file, b.Tokens["forward"])
		for d.Next() {
			if d.Val() != "forward" {
				continue
			}
			line := d.Line()
			args := d.RemainingArgs()
			if len(args) < 2 {
				return fmt.Errorf("%s:%d: forward has no upstream after rendering (%q)", file, line, args)
			}
			for d.NextBlock() {
			}
		}
	}
	return nil
}
