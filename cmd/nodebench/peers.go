package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/template"
	"time"

	"github.com/nodelocaldns/nodelocaldns/internal/lab"
)

// The peers an operator could run as a node cache instead of this build,
// configured like it: one thread, the same local IPs, the same upstream,
// the same cache caps. Their configs are templates under bench/peers.

// peerDir holds the peers' config templates, relative to the repository.
const peerDir = "bench/peers"

// peerConf is what the templates under bench/peers are rendered with.
type peerConf struct {
	LocalIPs     []string // the node cache's addresses
	Upstream     string   // the kube-dns-upstream Service
	Resolver     string   // the node's own resolver (its resolv.conf)
	ClusterZones []string // forwarded to Upstream, over TCP
	CheckName    string   // a name Upstream answers, for health checks
	Dir          string   // the peer's run directory
}

// labPeerConf is peerConf in the lab's addresses, like Corefile.example.
func labPeerConf(dir string) peerConf {
	return peerConf{
		LocalIPs:     []string{lab.LocalIP, lab.KubeDNSIP},
		Upstream:     lab.KubeDNSUpIP,
		Resolver:     lab.OutsideIP,
		ClusterZones: []string{"cluster.local.", "in-addr.arpa.", "ip6.arpa."},
		CheckName:    lab.Services[0].Name,
		Dir:          dir,
	}
}

// renderPeerConf renders the template file name under bench/peers into dst.
func renderPeerConf(root, name string, c peerConf, dst string) error {
	src := filepath.Join(root, peerDir, name)
	t, err := template.ParseFiles(src)
	if err != nil {
		return fmt.Errorf("read the peer config template: %w", err)
	}
	var b strings.Builder
	if err := t.Execute(&b, c); err != nil {
		return fmt.Errorf("render %s: %w", src, err)
	}
	return os.WriteFile(dst, []byte(b.String()), 0o644)
}

// startFunc starts a peer in the lab and returns its process and the time
// from start to its first answer.
type startFunc func(ctx context.Context, l *lab.Lab) (*lab.Proc, time.Duration, error)

// withPeerConf renders the template conf for the peer name into its run
// directory and starts bin with args, where "{}" stands for the rendered
// file's path.
func withPeerConf(root, name, conf, bin string, args ...string) startFunc {
	return func(ctx context.Context, l *lab.Lab) (*lab.Proc, time.Duration, error) {
		dir := filepath.Join(l.Dir, name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, 0, err
		}
		dst := filepath.Join(dir, conf)
		if err := renderPeerConf(root, conf, labPeerConf(dir), dst); err != nil {
			return nil, 0, err
		}
		argv := make([]string, len(args))
		for i, a := range args {
			argv[i] = strings.ReplaceAll(a, "{}", dst)
		}
		return startServer(ctx, l, name, nil, 20*time.Second, bin, argv...)
	}
}

// withNodeCacheFlags starts bin as the official DaemonSet starts
// node-cache: its container args, the official Corefile template and an
// empty kube-dns ConfigMap, KUBE_DNS_UPSTREAM_SERVICE_HOST from kubelet.
func withNodeCacheFlags(name, bin string) startFunc {
	return func(ctx context.Context, l *lab.Lab) (*lab.Proc, time.Duration, error) {
		f, err := l.NodeCacheFlags(lab.FlagsOptions{})
		if err != nil {
			return nil, 0, err
		}
		return startServer(ctx, l, name, []string{lab.UpstreamEnv}, 20*time.Second, bin, f.Args...)
	}
}

// withFailopen sets the nodelocal directive's failopen setting in every
// nodelocal block of a Corefile (the first one when the others join it).
func withFailopen(value string) func(string) string {
	return func(cf string) string {
		return strings.Replace(cf, "nodelocal {", "nodelocal {\n        failopen "+value, 1)
	}
}

// inEveryBlock returns an edit that adds line as the first line of every
// server block of a Corefile (a line that opens a block at the start of the
// line).
func inEveryBlock(line string) func(string) string {
	return func(cf string) string {
		lines := strings.Split(cf, "\n")
		out := make([]string, 0, len(lines)+8)
		for _, l := range lines {
			out = append(out, l)
			if l != "" && l[0] != ' ' && l[0] != '\t' && l[0] != '#' && strings.HasSuffix(strings.TrimSpace(l), "{") {
				out = append(out, "    "+line)
			}
		}
		return strings.Join(out, "\n")
	}
}

// errNoSetting marks a peer whose Corefile uses a setting the binary does
// not have: the peer is left out with the reason, the run goes on.
var errNoSetting = errors.New("setting not in this build")

// needsSetting turns a start failure caused by an unknown nodelocal
// setting into errNoSetting.
func needsSetting(setting string, start startFunc) startFunc {
	return func(ctx context.Context, l *lab.Lab) (*lab.Proc, time.Duration, error) {
		p, d, err := start(ctx, l)
		if err != nil && strings.Contains(err.Error(), fmt.Sprintf("unknown setting %q", setting)) {
			return nil, 0, fmt.Errorf("%w: bin/coredns's nodelocal directive has no %q setting yet", errNoSetting, setting)
		}
		return p, d, err
	}
}

// version returns the first line a command prints about its version, or
// "" when it cannot say.
func version(bin string, args ...string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	for _, line := range strings.Split(string(out), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.Contains(line, "[INFO]") {
			return line
		}
	}
	return ""
}
