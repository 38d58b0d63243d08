package nodecache

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Keys of the kube-dns ConfigMap that node-cache reads.
const (
	keyStubDomains = "stubDomains"
	keyUpstreams   = "upstreamNameservers"
)

// maxUpstreams is the most servers CoreDNS's forward plugin takes in one line.
const maxUpstreams = 15

// maxStubDomains is the most stub domains a kube-dns ConfigMap may hold.
// Each costs a forward (its connections and health checks) in the shared
// stub block, and forward tries them in turn on a cache miss; past this, a
// ConfigMap is more likely a mistake than a cluster's DNS layout.
const maxStubDomains = 1000

// kubeDNS is what the kube-dns ConfigMap says, validated and formatted for
// a forward line.
type kubeDNS struct {
	stubs     []stubDomain // sorted by domain
	upstreams []string     // empty when the ConfigMap has no upstreamNameservers
}

type stubDomain struct {
	domain  string
	servers []string
}

// readKubeDNS reads the kube-dns ConfigMap as kubelet mounts it: a directory
// whose keys are symlinks through ..data to a timestamped directory that
// kubelet swaps atomically. Both keys are read through one resolution of
// ..data, so a swap between the two reads cannot mix old and new values. A
// missing directory or key is an empty ConfigMap (the volume is optional).
func readKubeDNS(dir string) (kubeDNS, error) {
	var kd kubeDNS
	if dir == "" {
		return kd, nil
	}
	base := dir
	if target, err := os.Readlink(filepath.Join(dir, "..data")); err == nil {
		if !filepath.IsAbs(target) {
			target = filepath.Join(dir, target)
		}
		base = target
	}
	read := func(key string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(base, key))
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("kube-dns ConfigMap %s: %w", key, err)
		}
		return bytes.TrimSpace(b), nil
	}

	raw, err := read(keyStubDomains)
	if err != nil {
		return kd, err
	}
	if len(raw) > 0 {
		if kd.stubs, err = parseStubDomains(raw); err != nil {
			return kd, err
		}
	}
	raw, err = read(keyUpstreams)
	if err != nil {
		return kd, err
	}
	if len(raw) > 0 {
		if kd.upstreams, err = parseUpstreams(raw); err != nil {
			return kd, err
		}
	}
	return kd, nil
}

// parseStubDomains reads stubDomains: a JSON map of domain to server list.
func parseStubDomains(raw []byte) ([]stubDomain, error) {
	var m map[string][]string
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("kube-dns ConfigMap %s %q is not a JSON map of domain to a list of servers: %v", keyStubDomains, raw, err)
	}
	if len(m) > maxStubDomains {
		return nil, fmt.Errorf("kube-dns ConfigMap %s: %d domains, at most %d are taken", keyStubDomains, len(m), maxStubDomains)
	}
	out := make([]stubDomain, 0, len(m))
	for domain, list := range m {
		if err := checkDomain(domain); err != nil {
			return nil, fmt.Errorf("kube-dns ConfigMap %s: %w", keyStubDomains, err)
		}
		key := fmt.Sprintf("%s[%q]", keyStubDomains, domain)
		servers, err := formatServers(key, list)
		if err != nil {
			return nil, fmt.Errorf("kube-dns ConfigMap %w", err)
		}
		out = append(out, stubDomain{domain: domain, servers: servers})
	}
	slices.SortFunc(out, func(a, b stubDomain) int { return strings.Compare(a.domain, b.domain) })
	return out, nil
}

// parseUpstreams reads upstreamNameservers: a JSON list of servers.
func parseUpstreams(raw []byte) ([]string, error) {
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, fmt.Errorf("kube-dns ConfigMap %s %q is not a JSON list of servers: %v", keyUpstreams, raw, err)
	}
	servers, err := formatServers(keyUpstreams, list)
	if err != nil {
		return nil, fmt.Errorf("kube-dns ConfigMap %w", err)
	}
	return servers, nil
}

// checkDomain accepts what can stand as a server block key: letters,
// digits, '-', '_' and dots; anything else could inject Corefile syntax.
func checkDomain(d string) error {
	if d == "" || d == "." {
		return fmt.Errorf("domain %q is empty", d)
	}
	for _, r := range d {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
		default:
			return fmt.Errorf("domain %q is not a domain name (character %q)", d, r)
		}
	}
	if strings.Contains(d, "..") || strings.HasPrefix(d, ".") {
		return fmt.Errorf("domain %q is not a domain name (empty label)", d)
	}
	return nil
}

// formatServers validates a server list and writes each server the way the
// forward plugin reads it. key names the list in errors.
func formatServers(key string, list []string) ([]string, error) {
	switch {
	case len(list) == 0:
		return nil, fmt.Errorf("%s: the list of servers is empty", key)
	case len(list) > maxUpstreams:
		return nil, fmt.Errorf("%s: %d servers, forward takes at most %d", key, len(list), maxUpstreams)
	}
	out := make([]string, 0, len(list))
	for _, s := range list {
		f, err := formatServer(s)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
		out = append(out, f)
	}
	return out, nil
}

// formatServer turns "IP", "IP:port", "[IPv6]:port", optionally with a dns://
// or tls:// transport, into forward's form: dns:// dropped (the default),
// IPv6 bracketed when a port follows.
func formatServer(s string) (string, error) {
	rest, scheme := strings.TrimSpace(s), ""
	if i := strings.Index(rest, "://"); i >= 0 {
		switch t := rest[:i]; t {
		case "dns":
		case "tls":
			scheme = "tls://"
		default:
			return "", fmt.Errorf("server %q: transport %q is not supported, want dns:// or tls://", s, t+"://")
		}
		rest = rest[i+3:]
	}
	if ip, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(rest, "["), "]")); err == nil && !strings.Contains(ip.String(), "%") {
		return scheme + ip.Unmap().String(), nil
	}
	ap, err := netip.ParseAddrPort(rest)
	if err != nil || ap.Addr().Zone() != "" {
		return "", fmt.Errorf("server %q is not an IP address or IP:port", s)
	}
	if ap.Port() == 0 {
		return "", fmt.Errorf("server %q: port 0", s)
	}
	return scheme + netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).String(), nil
}

// resolvConfServers reads the nameservers of a resolv.conf, in order.
func resolvConfServers(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read nameservers: %w", err)
	}
	var list []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "nameserver" {
			list = append(list, f[1])
		}
	}
	if len(list) == 0 {
		return nil, fmt.Errorf("%s has no nameserver line", path)
	}
	return formatServers(path+" nameservers", list)
}
