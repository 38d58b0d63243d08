package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// OfficialTemplate is the repository's copy of the Corefile template that
// the official nodelocaldns.yaml carries in its node-local-dns ConfigMap,
// placeholders and all, before the user's sed.
const OfficialTemplate = "nodecache/testdata/Corefile.base"

// NodeCacheMetrics is where node-cache's own metrics listener
// (-metrics-listen-address, default 0.0.0.0:9353) answers inside the node.
const NodeCacheMetrics = "127.0.0.1:9353"

// Mode is the kube-proxy mode whose documented sed renders the manifest.
type Mode string

// The two modes of the official manifest's instructions.
const (
	IptablesMode Mode = "iptables" // pods ask the kube-dns ClusterIP; the cache holds it too
	IPVSMode     Mode = "ipvs"     // pods ask 169.254.20.10; the cache holds only that
)

// officialArgs are the node-cache container's args in the official
// DaemonSet, before the sed. /etc/Corefile is mapped into the run directory.
var officialArgs = []string{"-localip", "__PILLAR__LOCAL__DNS__,__PILLAR__DNS__SERVER__", "-conf", "/etc/Corefile", "-upstreamsvc", "kube-dns-upstream"}

// Sed applies the substitutions the official manifest documents for mode,
// in this lab's addresses: iptables mode fills the local IP, the kube-dns
// ClusterIP and the cluster domain; IPVS mode drops ",__PILLAR__DNS__SERVER__"
// first and fills __PILLAR__CLUSTER__DNS__ with the kube-dns ClusterIP. The
// node cache fills what is left itself.
func Sed(mode Mode, s string) string {
	switch mode {
	case IPVSMode:
		s = strings.ReplaceAll(s, ",__PILLAR__DNS__SERVER__", "")
		s = strings.ReplaceAll(s, "__PILLAR__LOCAL__DNS__", LocalIP)
		s = strings.ReplaceAll(s, "__PILLAR__DNS__DOMAIN__", "cluster.local")
		return strings.ReplaceAll(s, "__PILLAR__CLUSTER__DNS__", KubeDNSIP)
	default:
		s = strings.ReplaceAll(s, "__PILLAR__DNS__SERVER__", KubeDNSIP)
		s = strings.ReplaceAll(s, "__PILLAR__LOCAL__DNS__", LocalIP)
		return strings.ReplaceAll(s, "__PILLAR__DNS__DOMAIN__", "cluster.local")
	}
}

// FlagsOptions says how to start the node cache the DaemonSet way.
type FlagsOptions struct {
	Mode Mode // IptablesMode when empty
	// Template is the node-local-dns ConfigMap's Corefile before the sed;
	// empty means OfficialTemplate unchanged.
	Template string
	// KubeDNS is the kube-dns ConfigMap's data (stubDomains,
	// upstreamNameservers); nil mounts it empty, as kubelet mounts a missing
	// optional ConfigMap.
	KubeDNS map[string]string
}

// FlagsCache is a node cache started with node-cache's flags.
type FlagsCache struct {
	*Cache            // Conf is the -conf path: the rendered Corefile
	Args     []string // the command line after the binary
	Template string   // -basecorefile: the sed-rendered template
	KubeDNS  string   // -kubednscm: the kube-dns ConfigMap volume
}

// FlagsFiles is the command line and the files the official DaemonSet
// gives node-cache, laid out in the run directory.
type FlagsFiles struct {
	Args     []string // the command line after the binary
	Conf     string   // -conf: where the cache writes the rendered Corefile
	Template string   // -basecorefile: the sed-rendered template
	KubeDNS  string   // -kubednscm: the kube-dns ConfigMap volume
}

// NodeCacheFlags lays out what the official DaemonSet gives node-cache for
// opts.Mode: its container args after the documented sed, the two
// ConfigMap volumes given by -basecorefile and -kubednscm (the manifest
// mounts them at those flags' defaults, which on this machine would be the
// host's /etc) and the -conf path. Any binary that takes node-cache's flags
// can be started with the result: bin/coredns (the drop-in) or node-cache
// itself.
func (l *Lab) NodeCacheFlags(opts FlagsOptions) (FlagsFiles, error) {
	var f FlagsFiles
	if opts.Mode == "" {
		opts.Mode = IptablesMode
	}
	if opts.Mode != IptablesMode && opts.Mode != IPVSMode {
		return f, fmt.Errorf("mode %q: want %q or %q", opts.Mode, IptablesMode, IPVSMode)
	}
	tmpl := opts.Template
	if tmpl == "" {
		b, err := os.ReadFile(filepath.Join(l.cfg.Root, OfficialTemplate))
		if err != nil {
			return f, err
		}
		tmpl = string(b)
	}
	dir, err := os.MkdirTemp(l.Dir, "flags-")
	if err != nil {
		return f, err
	}
	f.Template = filepath.Join(dir, "Corefile.base")
	f.KubeDNS = filepath.Join(dir, "kube-dns")
	f.Conf = filepath.Join(dir, "Corefile")
	if err := os.WriteFile(f.Template, []byte(Sed(opts.Mode, tmpl)), 0o644); err != nil {
		return f, err
	}
	if err := WriteConfigMap(f.KubeDNS, opts.KubeDNS); err != nil {
		return f, err
	}
	for _, a := range officialArgs {
		if a == "/etc/Corefile" {
			a = f.Conf
		}
		f.Args = append(f.Args, Sed(opts.Mode, a))
	}
	f.Args = append(f.Args, "-basecorefile", f.Template, "-kubednscm", f.KubeDNS)
	return f, nil
}

// StartNodeCacheFlags starts bin/coredns in the node namespace as the
// official DaemonSet starts node-cache (NodeCacheFlags),
// KUBE_DNS_UPSTREAM_SERVICE_HOST from kubelet and the node's resolv.conf
// (dnsPolicy Default). It waits until the cache answers on 169.254.20.10
// and has its rules in.
func (l *Lab) StartNodeCacheFlags(ctx context.Context, opts FlagsOptions) (*FlagsCache, error) {
	if l.Caches() > 0 {
		return nil, errors.New("the node cache is already running")
	}
	f, err := l.NodeCacheFlags(opts)
	if err != nil {
		return nil, err
	}
	c := &FlagsCache{Args: f.Args, Template: f.Template, KubeDNS: f.KubeDNS}

	// Peers are instances in the same network namespace (plugin/nodelocal
	// peers.go), so the default /run/nodelocaldns is shared safely with
	// other labs' caches on this machine.
	p, err := l.start(l.Node, "node-cache-flags", l.cfg.ServerCPU, []string{UpstreamEnv}, l.Bin("coredns"), c.Args...)
	if err != nil {
		return nil, err
	}
	c.Cache = &Cache{lab: l, Proc: p, Conf: f.Conf}
	err = l.waitCacheUp(ctx, p, true)
	if err != nil {
		p.Stop(10 * time.Second)
		return nil, fmt.Errorf("node cache (node-cache flags %s) did not come up: %w; its log:\n%s", strings.Join(c.Args, " "), err, p.Tail(20))
	}
	l.mu.Lock()
	l.caches = append(l.caches, c.Cache)
	l.mu.Unlock()
	l.cfg.Logf("node cache with node-cache flags up (pid %d): %s", p.PID(), strings.Join(c.Args, " "))
	return c, nil
}

// Rendered returns the Corefile the cache wrote to its -conf path.
func (c *FlagsCache) Rendered() (string, error) {
	b, err := os.ReadFile(c.Conf)
	return string(b), err
}

// NodeCacheMetrics returns what node-cache's metrics listener (:9353)
// serves, fetched inside the node.
func (c *FlagsCache) NodeCacheMetrics() (string, error) {
	return HTTPGet(c.lab.Node, NodeCacheMetrics, "/metrics")
}

// UpdateKubeDNS replaces the kube-dns ConfigMap's data the way kubelet
// updates a mounted ConfigMap.
func (c *FlagsCache) UpdateKubeDNS(data map[string]string) error {
	return WriteConfigMap(c.KubeDNS, data)
}

// WriteConfigMap lays out data in dir as kubelet mounts a ConfigMap: the
// files in a timestamped directory, ..data a symlink to it, each key a
// symlink through ..data. Called again, it swaps ..data atomically (a new
// symlink renamed over the old), fixes the key links and removes the old
// timestamped directory, as kubelet's atomic writer does.
func WriteConfigMap(dir string, data map[string]string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	ts, err := os.MkdirTemp(dir, ".."+time.Now().UTC().Format("2006_01_02_15_04_05.")) // unique per call
	if err != nil {
		return err
	}
	for k, v := range data {
		if err := os.WriteFile(filepath.Join(ts, k), []byte(v), 0o644); err != nil {
			return err
		}
	}
	dataLink := filepath.Join(dir, "..data")
	old, _ := os.Readlink(dataLink)
	tmp := filepath.Join(dir, "..data_tmp")
	os.Remove(tmp)
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, dataLink); err != nil {
		return err
	}
	for k := range data {
		link := filepath.Join(dir, k)
		if _, err := os.Lstat(link); err == nil {
			continue
		}
		if err := os.Symlink(filepath.Join("..data", k), link); err != nil {
			return err
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			continue
		}
		if _, ok := data[name]; !ok {
			os.Remove(filepath.Join(dir, name)) // a key the new data dropped
		}
	}
	if old != "" {
		return os.RemoveAll(filepath.Join(dir, old))
	}
	return nil
}
