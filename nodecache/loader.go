package nodecache

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/plugin"
	clog "github.com/coredns/coredns/plugin/pkg/log"

	"github.com/nodelocaldns/nodelocaldns/plugin/nodelocal"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

var (
	configChanges = promauto.NewCounter(prometheus.CounterOpts{
		Namespace: plugin.Namespace,
		Subsystem: "nodelocal",
		Name:      "config_changes_total",
		Help:      "Counter of rendered Corefiles that differ from the one before (the first one included).",
	})
	configRejections = promauto.NewCounter(prometheus.CounterOpts{
		Namespace: plugin.Namespace,
		Subsystem: "nodelocal",
		Name:      "config_rejections_total",
		Help:      "Counter of distinct bad templates or kube-dns ConfigMaps rejected; the last good Corefile stays.",
	})
)

var log = clog.NewWithPlugin("nodecache")

// loaderName is the name of the Corefile loader in caddy.
const loaderName = "nodecache"

// corefileLoader is the process's loader, set by Register.
var (
	loaderMu       sync.Mutex
	corefileLoader *templateLoader
	registerOnce   sync.Once
)

// Register defines node-cache's flags on fs (the command line), takes over
// its -conf flag, and registers the Corefile loader that renders
// -basecorefile into -conf when any node-cache flag is given. Call it once,
// after coremain's init defined -conf and before coremain.Run parses the
// command line; a second call only rebinds the loader to fs.
func Register(fs *flag.FlagSet) {
	use(newTemplateLoader(registerFlags(fs)))
}

// use makes l the process's Corefile loader, registering the loader with
// caddy on first use.
func use(l *templateLoader) {
	loaderMu.Lock()
	corefileLoader = l
	loaderMu.Unlock()
	registerOnce.Do(func() {
		caddy.RegisterCaddyfileLoader(loaderName, caddy.LoaderFunc(func(serverType string) (caddy.Input, error) {
			loaderMu.Lock()
			l := corefileLoader
			loaderMu.Unlock()
			return l.Load(serverType)
		}))
	})
}

// templateLoader renders node-cache's Corefile template. The reload plugin
// calls it on every check, so it is cheap, and it is deterministic: the same
// inputs give the same bytes, so an unchanged input never causes a reload.
type templateLoader struct {
	flags      *compatFlags
	resolvConf string

	mu      sync.Mutex
	good    []byte // the last good rendering
	lastErr string // the last rejection logged, "" after a good one
}

func newTemplateLoader(f *compatFlags) *templateLoader {
	return &templateLoader{flags: f, resolvConf: defaultResolvConf}
}

// Load implements caddy.Loader. With node-cache flags it renders
// -basecorefile and writes the result to -conf. Without, it reads -conf as
// CoreDNS does, rendering in memory a file that holds __PILLAR__ placeholders.
// With neither, it returns nothing and CoreDNS's default loader reads
// ./Corefile.
func (l *templateLoader) Load(serverType string) (caddy.Input, error) {
	f := l.flags
	if f.compat() {
		l.mu.Lock()
		first := l.good == nil
		l.mu.Unlock()
		if first {
			if err := f.check(); err != nil {
				return nil, err
			}
		}
		f.serveMetrics()
		return l.load(serverType, f.baseCorefile, f.conf.path, true)
	}
	switch conf := f.conf.path; conf {
	case "":
		return nil, nil
	case "stdin":
		return caddy.CaddyfileFromPipe(os.Stdin, serverType)
	default:
		body, err := os.ReadFile(filepath.Clean(conf))
		if err != nil {
			return nil, err
		}
		if !bytes.Contains(body, []byte("__PILLAR__")) {
			return caddy.CaddyfileInput{Contents: body, Filepath: conf, ServerTypeName: serverType}, nil
		}
		return l.load(serverType, conf, "", false)
	}
}

// load renders tmplPath, keeping the last good rendering on a bad input.
// out, when set, receives each new rendering. On the first load a bad
// input is an error, so the start fails with it.
func (l *templateLoader) load(serverType, tmplPath, out string, compat bool) (caddy.Input, error) {
	body, warnings, err := l.render(tmplPath, compat)

	l.mu.Lock()
	defer l.mu.Unlock()
	path := tmplPath
	if out != "" {
		path = out
	}
	if err != nil {
		if msg := err.Error(); msg != l.lastErr {
			l.lastErr = msg
			nodelocal.CountConfigMapError()
			configRejections.Inc()
			if l.good != nil {
				log.Errorf("Corefile not changed, keeping the last good one: %v", err)
			}
		}
		if l.good == nil {
			return nil, err
		}
		return caddy.CaddyfileInput{Contents: l.good, Filepath: path, ServerTypeName: serverType}, nil
	}
	if l.lastErr != "" {
		log.Infof("Corefile inputs good again")
		l.lastErr = ""
	}
	if !bytes.Equal(body, l.good) {
		configChanges.Inc()
		if out != "" {
			if werr := writeFileAtomic(out, body); werr != nil {
				log.Errorf("Write rendered Corefile: %v", werr)
			}
		}
		log.Infof("Rendered Corefile from %s:\n%s", tmplPath, body)
		for _, w := range warnings {
			log.Warning(w)
		}
		l.good = body
	}
	return caddy.CaddyfileInput{Contents: l.good, Filepath: path, ServerTypeName: serverType}, nil
}

// render gathers the sources and renders the template; it changes nothing.
func (l *templateLoader) render(tmplPath string, compat bool) ([]byte, []string, error) {
	f := l.flags
	tmpl, err := os.ReadFile(tmplPath)
	if err != nil {
		return nil, nil, fmt.Errorf("read Corefile template: %w", err)
	}
	var src sources
	if src.hitPath, err = hitPathWanted(); err != nil {
		return nil, nil, err
	}
	if f.localIP != "" {
		if src.localIPs, err = nodelocal.ParseLocalIPs([]string{f.localIP}); err != nil {
			return nil, nil, fmt.Errorf("-localip: %w", err)
		}
	}
	src.clusterDNS, src.clusterErr = nodelocal.UpstreamIP(f.upstreamSvc)
	if compat && src.clusterErr != nil {
		// The injected directive names the Service too: fail here, clearly.
		return nil, nil, src.clusterErr
	}
	kd, err := readKubeDNS(f.kubeDNSCM)
	if err != nil {
		return nil, nil, err
	}
	src.stubs = kd.stubs
	if src.upstreams = kd.upstreams; len(src.upstreams) == 0 {
		src.upstreams, src.upstreamsErr = resolvConfServers(l.resolvConf)
	}
	if compat {
		src.directive = f.directiveLines
	}
	return render(tmplPath, tmpl, src)
}

// writeFileAtomic replaces path with body, so a reader never sees half a file.
func writeFileAtomic(path string, body []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(body); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// RenderNodeCache renders a template the way the binary does when started
// with node-cache's command line args: the flags are parsed and checked, the
// template named by -basecorefile is rendered with the ClusterIP of
// -upstreamsvc (from the environment) and the kube-dns ConfigMap directory
// of -kubednscm, and the result, a Corefile with the injected nodelocal
// block, is returned. Nothing is written and no listener is opened. It lets
// manifests and tools check a DaemonSet's args and template with the one
// implementation the binary uses.
func RenderNodeCache(args []string) ([]byte, error) {
	fs := flag.NewFlagSet("node-cache", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.String("conf", "", "Corefile to load")
	f := registerFlags(fs)
	if err := fs.Parse(args); err != nil {
		return nil, fmt.Errorf("node-cache args %q: %w", args, err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("node-cache args: unexpected %q", fs.Args())
	}
	if !f.compat() {
		return nil, fmt.Errorf("node-cache args %q: no node-cache flag given", args)
	}
	if err := f.check(); err != nil {
		return nil, err
	}
	body, _, err := newTemplateLoader(f).render(f.baseCorefile, true)
	return body, err
}
