package nodelocal

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin"

	"github.com/nodelocaldns/nodelocaldns/plugin/nodelocal/rules"
)

// instanceKey keys the instance's node state in the caddy instance
// storage, so the directive acts once however many server blocks name it.
type instanceKey struct{}

func setup(c *caddy.Controller) error { return process.setup(c) }

// setup parses one server block's directive and joins it to the
// instance's node state, which the first block creates and hooks into the
// instance's callbacks.
func (o *owner) setup(c *caddy.Controller) error {
	c.Next() // the directive name
	line := c.Line()
	pos := fmt.Sprintf("%s:%d", c.File(), line)
	cfg, explicit, err := parse(c)
	if err != nil {
		return plugin.Error(pluginName, err)
	}
	if c.Next() {
		return plugin.Error(pluginName, c.Errf("%s given twice in one server block, first at line %d: give it once", c.Val(), line))
	}
	port, err := strconv.Atoi(dnsserver.GetConfig(c).Port)
	if err != nil {
		return plugin.Error(pluginName, c.Errf("server block port %q is not a number", dnsserver.GetConfig(c).Port))
	}

	in, _ := c.Get(instanceKey{}).(*instance)
	if in == nil {
		in = &instance{o: o, cfg: cfg, explicit: explicit, pos: pos}
		c.Set(instanceKey{}, in)
		o.register(c, in)
	} else if err := in.join(cfg, explicit, pos); err != nil {
		return plugin.Error(pluginName, err)
	}
	if !in.explicit {
		in.addBindIPs(c, pos)
	}
	if !slices.Contains(in.ports, port) {
		in.ports = append(in.ports, port)
		slices.Sort(in.ports)
	}

	dnsserver.GetConfig(c).AddPlugin(func(next plugin.Handler) plugin.Handler {
		return Nodelocal{Next: next, node: in}
	})
	return nil
}

// join adds another server block's directive, given at pos: settings must
// agree with those of the other blocks, and win over bare directives.
func (in *instance) join(cfg Config, explicit bool, pos string) error {
	switch {
	case explicit && in.explicit:
		if name, a, b := differ(in.cfg, cfg); name != "" {
			return fmt.Errorf("%s - Error during parsing: %s %s disagrees with %s %s at %s: every server block must use the same settings", pos, name, b, name, a, in.pos)
		}
	case explicit:
		in.cfg, in.explicit, in.pos, in.bindErr = cfg, true, pos, nil
	}
	return nil
}

// addBindIPs adds the block's bind addresses to the local IPs, as
// node-cache holds the addresses it binds; used while every server block
// has a bare `nodelocal`, so the local IPs are the union of their binds.
// A bind that cannot be a local IP fails the start, naming its block.
func (in *instance) addBindIPs(c *caddy.Controller, pos string) {
	var hosts []string
	for _, h := range dnsserver.GetConfig(c).ListenHosts {
		if h != "" {
			hosts = append(hosts, h)
		}
	}
	if len(hosts) == 0 {
		return
	}
	ips, err := ParseLocalIPs(hosts)
	if err != nil {
		if in.bindErr == nil {
			in.bindErr = fmt.Errorf("%s: local IPs taken from bind: %w", pos, err)
		}
		return
	}
	for _, ip := range ips {
		if !slices.Contains(in.cfg.LocalIPs, ip) {
			in.cfg.LocalIPs = append(in.cfg.LocalIPs, ip)
		}
	}
}

// localIPsErr says why the instance has no usable local IPs: a bind that
// is not one, or bare blocks without any bind.
func (in *instance) localIPsErr() error {
	switch {
	case in.bindErr != nil:
		return fmt.Errorf("%s: %w", pluginName, in.bindErr)
	case len(in.cfg.LocalIPs) == 0:
		return fmt.Errorf("%s: %s: no local IP: name them with localip, or bind them in the server block", pluginName, in.pos)
	}
	return nil
}

// parse reads the rest of one `nodelocal` directive. explicit is false for a
// bare `nodelocal`, which joins the settings given in another server block
// (or, if there are none, uses the defaults and the block's bind addresses).
func parse(c *caddy.Controller) (cfg Config, explicit bool, err error) {
	cfg = defaultConfig()
	if args := c.RemainingArgs(); len(args) > 0 {
		return cfg, false, c.Errf("unexpected argument %q: settings go in a block", args[0])
	}
	seen := map[string]bool{}
	for c.NextBlock() {
		explicit = true
		key := c.Val()
		if seen[key] {
			return cfg, false, c.Errf("%s given twice", key)
		}
		seen[key] = true
		args := c.RemainingArgs()
		switch key {
		case "localip":
			cfg.LocalIPs, err = ParseLocalIPs(args)
		case "interface":
			cfg.Interface, err = parseInterface(args)
		case "rules":
			cfg.Rules, cfg.Backend, err = parseRules(args)
		case "upstreamsvc":
			cfg.UpstreamSvc, err = oneArg(key, args)
		case "healthport":
			cfg.HealthPort, err = parsePort(key, args)
		case "sync":
			cfg.Sync, err = parseSync(args)
		case "teardown":
			cfg.Teardown, err = parseTeardown(args)
		case "statedir":
			cfg.StateDir, err = parseStateDir(args)
		case "rcvbuf":
			cfg.RcvBuf, err = parseRcvBuf(args)
		case "failopen":
			cfg.FailOpen, err = parseOnOff(key, args)
		default:
			return cfg, false, c.Errf("unknown setting %q", key)
		}
		if err != nil {
			return cfg, false, c.Errf("%v", err)
		}
	}
	if explicit && len(cfg.LocalIPs) == 0 {
		return cfg, false, c.Err("localip is required in a block with settings")
	}
	if err := checkZones(cfg); err != nil {
		return cfg, false, c.Errf("%v", err)
	}
	if cfg.Teardown == TeardownHandoff && (cfg.Rules == rules.ModeNone || cfg.UpstreamSvc == "" || !cfg.FailOpen) {
		return cfg, false, c.Err("teardown handoff needs rules, upstreamsvc and failopen on: the path it leaves is the guarded fallback to that Service")
	}
	if cfg.UpstreamSvc != "" {
		if cfg.Upstream, err = UpstreamIP(cfg.UpstreamSvc); err != nil {
			return cfg, false, c.Errf("%v", err)
		}
	}
	return cfg, explicit, nil
}

func oneArg(key string, args []string) (string, error) {
	if len(args) != 1 {
		return "", fmt.Errorf("%s wants one value, got %d: %q", key, len(args), args)
	}
	return args[0], nil
}

// ParseLocalIPs reads the values of `localip`: IPv4 and IPv6 addresses,
// mixed, space or comma separated (node-cache's -localip is a comma list).
// Errors quote the bad value.
func ParseLocalIPs(args []string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, arg := range args {
		for _, s := range strings.Split(arg, ",") {
			if s == "" {
				continue
			}
			ip, err := netip.ParseAddr(s)
			if err != nil {
				return nil, fmt.Errorf("localip %q is not an IP address", s)
			}
			ip = ip.Unmap()
			switch {
			case ip.IsUnspecified(), ip.IsMulticast(), ip.IsLoopback():
				return nil, fmt.Errorf("localip %q cannot be held on an interface: unspecified, multicast or loopback", s)
			case slices.ContainsFunc(out, func(o netip.Addr) bool { return o.WithZone("") == ip.WithZone("") }):
				return nil, fmt.Errorf("localip %q is listed twice", s)
			}
			out = append(out, ip)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("localip wants at least one IP address")
	}
	return out, nil
}

// checkZones rejects IPv6 link-local local IPs whose zone does not name the
// plugin's own link: such an address is only meaningful on that link.
func checkZones(cfg Config) error {
	for _, ip := range cfg.LocalIPs {
		if !ip.Is6() {
			if ip.Zone() != "" {
				return fmt.Errorf("localip %q: only IPv6 addresses take a zone", ip)
			}
			continue
		}
		switch {
		case ip.IsLinkLocalUnicast() && cfg.Interface == "":
			return fmt.Errorf("localip %q is IPv6 link-local, which needs an interface to live on; not with `interface none`", ip)
		case ip.IsLinkLocalUnicast() && ip.Zone() != cfg.Interface:
			return fmt.Errorf("localip %q is IPv6 link-local: write it with the zone of its link, %q", ip, ip.WithZone(cfg.Interface))
		case !ip.IsLinkLocalUnicast() && ip.Zone() != "":
			return fmt.Errorf("localip %q: a zone only makes sense on a link-local address", ip)
		}
	}
	return nil
}

func parseInterface(args []string) (string, error) {
	name, err := oneArg("interface", args)
	if err != nil {
		return "", err
	}
	switch {
	case name == "none":
		return "", nil
	case len(name) > 15:
		return "", fmt.Errorf("interface %q is %d bytes long; Linux allows 15", name, len(name))
	case name == "." || name == "..", strings.ContainsAny(name, "/: \t\n"):
		return "", fmt.Errorf("interface %q is not a valid link name (no '/', ':' or spaces)", name)
	}
	return name, nil
}

func parseRules(args []string) (rules.Mode, rules.Backend, error) {
	if len(args) == 0 || len(args) > 2 {
		return "", "", fmt.Errorf("rules wants iptables [auto|legacy|nft], nftables or none, got %q", args)
	}
	switch mode := rules.Mode(args[0]); mode {
	case rules.ModeIptables:
		backend := rules.BackendAuto
		if len(args) == 2 {
			backend = rules.Backend(args[1])
		}
		switch backend {
		case rules.BackendAuto, rules.BackendLegacy, rules.BackendNft:
			return mode, backend, nil
		}
		return "", "", fmt.Errorf("rules iptables backend %q: want auto, legacy or nft", args[1])
	case rules.ModeNftables, rules.ModeNone:
		if len(args) == 2 {
			return "", "", fmt.Errorf("rules %s takes no backend, got %q", mode, args[1])
		}
		return mode, "", nil
	default:
		return "", "", fmt.Errorf("rules %q: want iptables, nftables or none", args[0])
	}
}

func parsePort(key string, args []string) (int, error) {
	v, err := oneArg(key, args)
	if err != nil {
		return 0, err
	}
	p, err := strconv.Atoi(v)
	if err != nil || p < 1 || p > 65535 {
		return 0, fmt.Errorf("%s %q is not a port (1-65535)", key, v)
	}
	return p, nil
}

func parseSync(args []string) (time.Duration, error) {
	v, err := oneArg("sync", args)
	if err != nil {
		return 0, err
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		if _, nerr := strconv.Atoi(v); nerr == nil {
			return 0, fmt.Errorf("sync %q has no unit: write a duration such as %ss", v, v)
		}
		return 0, fmt.Errorf("sync %q is not a duration such as 10s", v)
	}
	if d < MinSync {
		return 0, fmt.Errorf("sync %q is below the minimum of %s", v, MinSync)
	}
	return d, nil
}

func parseTeardown(args []string) (Teardown, error) {
	v, err := oneArg("teardown", args)
	if err != nil {
		return "", err
	}
	switch t := Teardown(v); t {
	case TeardownOn, TeardownOff, TeardownHandoff:
		return t, nil
	}
	return "", fmt.Errorf("teardown %q: want on, off or handoff", v)
}

func parseOnOff(key string, args []string) (bool, error) {
	v, err := oneArg(key, args)
	if err != nil {
		return false, err
	}
	switch v {
	case "on":
		return true, nil
	case "off":
		return false, nil
	}
	return false, fmt.Errorf("%s %q: want on or off", key, v)
}

func parseStateDir(args []string) (string, error) {
	v, err := oneArg("statedir", args)
	if err != nil {
		return "", err
	}
	switch {
	case v == "none":
		return "", nil
	case !filepath.IsAbs(v):
		return "", fmt.Errorf("statedir %q is not an absolute path", v)
	}
	dir := filepath.Clean(v)
	if err := checkStateDir(dir); err != nil {
		return "", err
	}
	return dir, nil
}

// checkStateDir refuses a state directory that leads somewhere else than
// it says: the plugin creates and removes files in it, as root. The
// directory itself must not be a symlink (to /etc, say), and a symlink on
// the way must be root's own (as /var/run -> /run is); what exists of the
// path must be directories. Parts not there yet are created at start.
func checkStateDir(dir string) error {
	parts := strings.Split(strings.TrimPrefix(dir, "/"), "/")
	path := "/"
	for i, p := range parts {
		if p == "" {
			continue
		}
		path = filepath.Join(path, p)
		fi, err := os.Lstat(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("statedir %q: %w", dir, err)
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			to, _ := os.Readlink(path)
			if i == len(parts)-1 {
				return fmt.Errorf("statedir %q is a symlink (to %q): refusing to create and remove files where it points; name the directory itself", dir, to)
			}
			if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 {
				return fmt.Errorf("statedir %q: %q is a symlink (to %q) owned by uid %d, not root: refusing to create and remove files where it points", dir, path, to, st.Uid)
			}
			fi, err = os.Stat(path)
			if err != nil {
				return fmt.Errorf("statedir %q: %w", dir, err)
			}
		}
		if !fi.IsDir() {
			return fmt.Errorf("statedir %q: %q is not a directory", dir, path)
		}
	}
	return nil
}

// Bounds of `rcvbuf`: below the kernel's default it would only lose
// queries, and the kernel caps the value at half of INT_MAX anyway.
const (
	minRcvBuf = 64 << 10
	maxRcvBuf = 1 << 30
)

// parseRcvBuf reads `rcvbuf SIZE|none`: bytes, or with a K or M suffix
// (binary multiples, as the kernel counts its buffers).
func parseRcvBuf(args []string) (int, error) {
	v, err := oneArg("rcvbuf", args)
	if err != nil {
		return 0, err
	}
	if v == "none" {
		return 0, nil
	}
	num, mult := v, 1
	switch {
	case strings.HasSuffix(v, "K"), strings.HasSuffix(v, "k"):
		num, mult = v[:len(v)-1], 1<<10
	case strings.HasSuffix(v, "M"), strings.HasSuffix(v, "m"):
		num, mult = v[:len(v)-1], 1<<20
	}
	n, err := strconv.Atoi(num)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("rcvbuf %q is not a size such as 4M, 512K or 1048576", v)
	}
	if n > maxRcvBuf/mult || n*mult < minRcvBuf {
		return 0, fmt.Errorf("rcvbuf %q is out of range: want 64K to 1024M, or none", v)
	}
	return n * mult, nil
}

// UpstreamEnv is the kubelet's service environment variable holding the
// ClusterIP of Service svc: upper-cased, '-' to '_', plus _SERVICE_HOST.
func UpstreamEnv(svc string) string {
	return strings.ToUpper(strings.ReplaceAll(svc, "-", "_")) + "_SERVICE_HOST"
}

// UpstreamIP reads the ClusterIP of Service svc from its environment variable.
func UpstreamIP(svc string) (netip.Addr, error) {
	env := UpstreamEnv(svc)
	v, ok := os.LookupEnv(env)
	if !ok || v == "" {
		return netip.Addr{}, fmt.Errorf("upstreamsvc %q: %s is not set; kubelet sets it when Service %q exists in the pod's namespace before the pod starts", svc, env, svc)
	}
	ip, err := netip.ParseAddr(v)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("upstreamsvc %q: %s=%q is not an IP address", svc, env, v)
	}
	return ip, nil
}
