package imagetest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nodelocaldns/nodelocaldns/internal/lab"
	"github.com/nodelocaldns/nodelocaldns/internal/manifests"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
)

// The images `make image` (build/image/local.sh) builds.
const (
	runtimeImage = "localhost/nodelocaldns:dev"
	staticImage  = "localhost/nodelocaldns:dev-static"
)

// Values an operator would set in params.env for the lab's cluster: its
// kube-dns ClusterIPs, and an IPv6 local address inside the lab's range.
var labParams = map[string]string{
	"KUBE_DNS_IP":   lab.KubeDNSIP,
	"LOCAL_DNS_IP":  lab.LocalIP,
	"KUBE_DNS_IP6":  "2001:2::a", // kube-dns in lab.Services
	"LOCAL_DNS_IP6": "2001:2:0:ff::a",
}

// labServices are the lab's ClusterIPs of the Services the manifests render,
// from which the kubelet's service links come.
var labServices = map[string]string{"kube-dns-upstream": lab.KubeDNSUpIP}

// The pod-network cache's namespace (Cilium mode): a lab pod of its own on a
// veth to the node, as a CNI would wire it.
const (
	cachePodNodeIP = "198.18.8.1"
	cachePodIP     = "198.18.8.2"
)

// imageCase is one pod spec run in the lab.
type imageCase struct {
	overlay string // under deploy/
	image   string
	backend string // iptables backend of the node's kube-proxy rules: nft or legacy
	rules   string // what the cache's rules are made with: iptables, nftables or none
	ipv6    bool   // the overlay serves an IPv6 local address too
	handoff bool   // teardown handoff: the node state and the fallback DNAT stay after stop
}

func (c imageCase) name() string {
	n := filepath.Base(c.overlay) + "-" + c.backend
	if c.image == staticImage {
		n += "-static"
	}
	return n
}

// imageCases: every overlay's pod spec; the iptables overlay on both
// backends; cilium's pod-network pod with the static image (no iptables
// binary needed with `rules none`). ipvs last: with teardown handoff its node
// state stays behind by design.
var imageCases = []imageCase{
	{overlay: "overlays/iptables", image: runtimeImage, backend: "nft", rules: "iptables"},
	{overlay: "overlays/nftables", image: staticImage, backend: "nft", rules: "nftables"},
	{overlay: "overlays/compat", image: runtimeImage, backend: "nft", rules: "iptables"},
	{overlay: "base", image: runtimeImage, backend: "nft", rules: "iptables"},
	{overlay: "overlays/monitoring", image: runtimeImage, backend: "nft", rules: "iptables"},
	{overlay: "overlays/nftables", image: runtimeImage, backend: "nft", rules: "nftables"},
	{overlay: "overlays/dual-stack", image: runtimeImage, backend: "nft", rules: "iptables", ipv6: true},
	{overlay: "overlays/cilium", image: staticImage, backend: "nft", rules: "none"},
	{overlay: "overlays/ipvs", image: runtimeImage, backend: "nft", rules: "iptables", handoff: true},
	{overlay: "overlays/iptables", image: runtimeImage, backend: "legacy", rules: "iptables"},
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../../..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// podman runs podman with the project's containers.conf.
func podman(ctx context.Context, root string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "podman", args...)
	cmd.Env = append(os.Environ(), "CONTAINERS_CONF="+filepath.Join(root, "build/image/containers.conf"))
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("podman %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

func needImages(t *testing.T, root string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the image test needs root: podman as root, network namespaces (make test runs it as root)")
	}
	if _, err := exec.LookPath("podman"); err != nil {
		t.Fatal("podman not installed: run make deps (it installs podman, runc and mmdebstrap)")
	}
	for _, img := range []string{runtimeImage, staticImage} {
		if _, err := podman(context.Background(), root, "image", "exists", img); err != nil {
			t.Fatalf("image %s missing: run make image first (%v)", img, err)
		}
	}
}

// TestImageLayout checks the images make image built against what the
// Dockerfile declares for the same stage: entrypoint, cmd, user, env, exposed
// ports, /coredns and the /node-cache symlink, the Debian packages (runtime)
// and nothing else (static).
func TestImageLayout(t *testing.T) {
	root := repoRoot(t)
	needImages(t, root)
	stages, err := ParseDockerfile(filepath.Join(root, "build/image/Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tc := range []struct{ stage, image string }{{"runtime", runtimeImage}, {"static", staticImage}} {
		t.Run(tc.stage, func(t *testing.T) {
			st, ok := stages[tc.stage]
			if !ok {
				t.Fatalf("The Dockerfile has no stage %s", tc.stage)
			}
			out, err := podman(ctx, root, "image", "inspect", "--format", "{{json .Config}}", tc.image)
			if err != nil {
				t.Fatal(err)
			}
			var cfg ImageConfig
			if err := json.Unmarshal([]byte(out), &cfg); err != nil {
				t.Fatalf("Image config of %s: %v", tc.image, err)
			}
			for _, m := range st.Mismatches(cfg) {
				t.Errorf("%s: %s", tc.image, m)
			}
			mnt, err := podman(ctx, root, "image", "mount", tc.image)
			if err != nil {
				t.Fatal(err)
			}
			defer podman(ctx, root, "image", "unmount", tc.image)
			dir := strings.TrimSpace(mnt)
			if fi, err := os.Stat(filepath.Join(dir, "coredns")); err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
				t.Errorf("%s: /coredns is not an executable file (%v)", tc.image, err)
			}
			if l, err := os.Readlink(filepath.Join(dir, "node-cache")); err != nil || l != "/coredns" {
				t.Errorf("%s: /node-cache -> %q (%v), want a symlink to /coredns", tc.image, l, err)
			}
			if tc.stage == "static" {
				var all []string
				filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
					if p != dir {
						rel, _ := filepath.Rel(dir, p)
						all = append(all, rel)
					}
					return err
				})
				if !slices.Equal(all, []string{"coredns", "node-cache"}) {
					t.Errorf("%s holds %q, want only coredns and node-cache", tc.image, all)
				}
				return
			}
			status, err := os.ReadFile(filepath.Join(dir, "var/lib/dpkg/status"))
			if err != nil {
				t.Fatal(err)
			}
			installed := dpkgInstalled(string(status))
			for _, p := range st.Packages {
				if !slices.Contains(installed, p) {
					t.Errorf("%s: Debian package %s (Dockerfile ARG PACKAGES) is not installed", tc.image, p)
				}
			}
			for _, b := range []string{"iptables-nft", "iptables-legacy-save", "ip6tables-nft-restore", "ip6tables-legacy"} {
				if _, err := os.Lstat(filepath.Join(dir, "usr/sbin", b)); err != nil {
					t.Errorf("%s: /usr/sbin/%s missing: %v", tc.image, b, err)
				}
			}
			t.Logf("%s: %d Debian packages", tc.image, len(installed))
		})
	}
}

// dpkgInstalled lists the packages dpkg's status file says are installed.
func dpkgInstalled(status string) []string {
	var out []string
	for _, para := range strings.Split(status, "\n\n") {
		var pkg string
		ok := false
		for _, line := range strings.Split(para, "\n") {
			if v, found := strings.CutPrefix(line, "Package: "); found {
				pkg = v
			}
			if line == "Status: install ok installed" {
				ok = true
			}
		}
		if pkg != "" && ok {
			out = append(out, pkg)
		}
	}
	return out
}

// TestImageInLab runs each overlay's rendered pod spec with podman in the node
// lab's network namespace, as the kubelet would, and checks what a user
// would: pods resolve through the cache, the probes and metrics answer, the
// cache's rules use the node's iptables backend, and `podman stop` leaves the
// node as it found it.
func TestImageInLab(t *testing.T) {
	root := repoRoot(t)
	needImages(t, root)
	for _, backend := range []string{"nft", "legacy"} {
		var cases []imageCase
		for _, c := range imageCases {
			if c.backend == backend {
				cases = append(cases, c)
			}
		}
		if len(cases) == 0 {
			continue
		}
		t.Run(backend, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			l, err := lab.Up(ctx, lab.DefaultConfig(root))
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := l.Close(); err != nil {
					t.Errorf("Lab close: %v", err)
				}
			}()
			if backend == "legacy" {
				moveKubeProxyToLegacy(ctx, t, l)
			}
			for _, c := range cases {
				if !t.Run(c.name(), func(t *testing.T) { runCase(ctx, t, root, l, c) }) {
					// A failed case may leave the node changed; later cases
					// would fail for its reason.
					return
				}
			}
		})
	}
}

// moveKubeProxyToLegacy makes the lab's node an iptables-legacy node: the
// kube-proxy rules the lab wrote with iptables-nft go to iptables-legacy, and
// the nft tables go.
func moveKubeProxyToLegacy(ctx context.Context, t *testing.T, l *lab.Lab) {
	t.Helper()
	rules, err := l.NodeRun(ctx, "iptables-nft-save")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.NodeRunInput(ctx, rules, "iptables-legacy-restore"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.NodeRun(ctx, "nft", "flush", "ruleset"); err != nil {
		t.Fatal(err)
	}
	// kube-proxy's path works on legacy alone.
	if err := resolves(l.Pod1, lab.KubeDNSIP, "web.default.svc.cluster.local.", "198.18.0.20", false); err != nil {
		t.Fatalf("Through legacy kube-proxy rules: %v", err)
	}
}

// render copies deploy/ to a temporary directory, sets labParams and the image
// in every params.env there (as an operator edits them), and renders the
// overlay.
func render(t *testing.T, root, overlay, image string) *manifests.Objects {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(root, "deploy")
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		dst := filepath.Join(dir, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if d.Name() == "params.env" {
			data = []byte(setParams(string(data), labParams, image))
		}
		return os.WriteFile(dst, data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	objs, err := manifests.Render(filepath.Join(dir, overlay))
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// setParams replaces the values of the keys params.env already has.
func setParams(env string, values map[string]string, image string) string {
	lines := strings.Split(env, "\n")
	for i, line := range lines {
		k, _, ok := strings.Cut(line, "=")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		if v, found := values[k]; found {
			lines[i] = k + "=" + v
		}
		if k == "IMAGE" {
			lines[i] = k + "=" + image
		}
	}
	return strings.Join(lines, "\n")
}

// serviceLinks is what the kubelet adds to the environment from the
// namespace's Services (enableServiceLinks): NAME_SERVICE_HOST and
// NAME_SERVICE_PORT, here with the lab's ClusterIPs.
func serviceLinks(t *testing.T, objs *manifests.Objects) map[string]string {
	t.Helper()
	env := map[string]string{}
	spec := objs.DaemonSet.Spec.Template.Spec
	if spec.EnableServiceLinks != nil && !*spec.EnableServiceLinks {
		return env
	}
	for name, svc := range objs.Services {
		if svc.Spec.ClusterIP == corev1.ClusterIPNone {
			continue
		}
		ip, ok := labServices[name]
		if !ok {
			t.Fatalf("Service %s has no ClusterIP in the lab", name)
		}
		prefix := strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
		env[prefix+"_SERVICE_HOST"] = ip
		if len(svc.Spec.Ports) > 0 {
			env[prefix+"_SERVICE_PORT"] = fmt.Sprint(svc.Spec.Ports[0].Port)
		}
	}
	return env
}

// podInLab turns the rendered DaemonSet's pod into podman arguments for a
// container named name in the lab, with the kubelet's environment and the
// ConfigMap volumes as files, and returns them with the pod's namespace and
// IP. A host-network pod is the node: its namespace and, for the probes and
// metrics, the node's address. A pod-network pod gets a namespace and IP of
// its own, and the downward API's status.podIP is that IP.
func podInLab(ctx context.Context, t *testing.T, l *lab.Lab, objs *manifests.Objects, name string) (args []string, podNS, podIP string) {
	t.Helper()
	env, err := objs.PodEnv(serviceLinks(t, objs))
	if err != nil {
		t.Fatal(err)
	}
	vols, err := Materialize(objs, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	podNS, podIP = l.Node, lab.BridgeIP
	if !objs.DaemonSet.Spec.Template.Spec.HostNetwork {
		if podNS, err = l.AddPod(ctx, "cpod", cachePodNodeIP, cachePodIP); err != nil {
			t.Fatal(err)
		}
		podIP = cachePodIP
	}
	args, err = PodmanArgs(Pod{
		Name:       name,
		Spec:       &objs.DaemonSet.Spec.Template.Spec,
		Env:        env,
		Volumes:    vols,
		Netns:      "/run/netns/" + podNS,
		PodIP:      podIP,
		ResolvConf: "/etc/netns/" + l.Node + "/resolv.conf",
	})
	if err != nil {
		t.Fatal(err)
	}
	return args, podNS, podIP
}

func runCase(ctx context.Context, t *testing.T, root string, l *lab.Lab, c imageCase) {
	objs := render(t, root, c.overlay, c.image)
	ctr, err := objs.Container()
	if err != nil {
		t.Fatal(err)
	}
	if ctr.Image != c.image {
		t.Fatalf("Rendered image %q, want %q (params.env IMAGE)", ctr.Image, c.image)
	}
	name := "nodelocaldns-imagetest-" + l.ID + "-" + c.name()
	hostNetwork := objs.DaemonSet.Spec.Template.Spec.HostNetwork
	args, podNS, podIP := podInLab(ctx, t, l, objs, name)
	before, err := nodeState(ctx, l.Node, podNS)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("podman run %s", strings.Join(args, " "))
	if _, err := podman(ctx, root, append([]string{"run"}, args...)...); err != nil {
		t.Fatal(err)
	}
	defer podman(context.Background(), root, "rm", "--force", "--time", "0", name)
	logs := func() string {
		out, _ := podman(ctx, root, "logs", "--tail", "30", name)
		return out
	}

	// The kubelet's probes, from the node's namespace.
	probe := ctr.ReadinessProbe
	if probe == nil {
		probe = ctr.LivenessProbe
	}
	started := time.Now()
	if err := waitProbe(ctx, root, l, name, probe, podIP, time.Minute); err != nil {
		t.Fatalf("Not ready: %v\n%s", err, logs())
	}
	t.Logf("ready %v after podman run", time.Since(started).Round(time.Millisecond))
	for what, p := range map[string]*corev1.Probe{"liveness": ctr.LivenessProbe, "readiness": ctr.ReadinessProbe} {
		if p == nil {
			continue
		}
		if _, err := lab.HTTPGet(l.Node, probeAddr(p, podIP), p.HTTPGet.Path); err != nil {
			t.Errorf("The %s probe fails: %v", what, err)
		}
	}

	// Metrics: the port Prometheus is told to scrape and every port of the
	// metrics Service, on the pod's address (the node's, with hostNetwork).
	ports := []string{objs.DaemonSet.Spec.Template.Annotations["prometheus.io/port"]}
	if svc, ok := objs.Services["node-local-dns"]; ok {
		for _, p := range svc.Spec.Ports {
			ports = append(ports, p.TargetPort.String())
		}
	}
	slices.Sort(ports)
	for _, port := range slices.Compact(ports) {
		body, err := lab.HTTPGet(l.Node, net.JoinHostPort(podIP, port), "/metrics")
		if err != nil {
			t.Errorf("Metrics on port %s: %v", port, err)
		} else if !strings.Contains(body, "coredns_") {
			t.Errorf("Metrics on port %s hold no coredns_ metric", port)
		}
	}
	metricsAddr := net.JoinHostPort(podIP, objs.DaemonSet.Spec.Template.Annotations["prometheus.io/port"])

	// Pods resolve through the cache: a cluster name (forwarded to the
	// kube-dns-upstream Service) and an outside name (forwarded to the
	// node's resolv.conf, mounted for dnsPolicy Default), over UDP and TCP.
	type ask struct{ ns, server string }
	var asks []ask
	switch {
	case !hostNetwork:
		// What Cilium's Local Redirect Policy sends to the cache: other pods'
		// queries, to the cache pod's IP (the redirect itself needs Cilium).
		asks = []ask{{l.Pod1, podIP}, {l.Pod2, podIP}}
	case c.handoff:
		asks = []ask{{l.Pod2, lab.LocalIP}}
	default:
		asks = []ask{{l.Pod2, lab.LocalIP}, {l.Pod1, lab.KubeDNSIP}} // the cache holds the kube-dns IP
	}
	if c.ipv6 {
		asks = append(asks, ask{l.Node, "[" + labParams["LOCAL_DNS_IP6"] + "]"}, ask{l.Node, "[" + labParams["KUBE_DNS_IP6"] + "]"})
	}
	served := func() float64 {
		body, err := lab.HTTPGet(l.Node, metricsAddr, "/metrics")
		if err != nil {
			t.Fatalf("Metrics: %v", err)
		}
		return lab.SumMetric(body, "coredns_dns_requests_total")
	}
	n0 := served()
	counted := func(want float64) float64 {
		// The prometheus plugin counts a request after its reply is
		// written: give the last ones a moment.
		var n float64
		for range 20 {
			if n = served() - n0; n >= want {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		return n
	}
	queries := 0
	for _, a := range asks {
		for _, tcp := range []bool{false, true} {
			if err := resolves(a.ns, a.server, "web.default.svc.cluster.local.", "198.18.0.20", tcp); err != nil {
				t.Errorf("From %s: %v", a.ns, err)
			}
			if err := resolves(a.ns, a.server, lab.OutsideName+".", lab.OutsideAddr, tcp); err != nil {
				t.Errorf("From %s: %v", a.ns, err)
			}
			queries += 2
		}
	}
	if n := counted(float64(queries)); n < float64(queries) {
		t.Errorf("The cache counted %v requests for %d queries: some were answered by another path", n, queries)
	}

	// The rules: the node's backend, or nftables.
	saves := map[string]string{}
	for _, b := range []string{"nft", "legacy"} {
		for _, f := range []string{"iptables", "ip6tables"} {
			out, err := l.NodeRun(ctx, f+"-"+b+"-save")
			if err != nil {
				t.Fatal(err)
			}
			saves[f+"-"+b] = out
		}
	}
	nft, err := l.NodeRun(ctx, "nft", "list", "ruleset")
	if err != nil {
		t.Fatal(err)
	}
	switch c.rules {
	case "iptables":
		other := map[string]string{"nft": "legacy", "legacy": "nft"}[c.backend]
		if !strings.Contains(saves["iptables-"+c.backend], "NODELOCALDNS") {
			t.Errorf("No NODELOCALDNS chains in iptables-%s-save on a %s node", c.backend, c.backend)
		}
		if strings.Contains(saves["iptables-"+other], "NODELOCALDNS") {
			t.Errorf("NODELOCALDNS chains in iptables-%s-save on a %s node", other, c.backend)
		}
		if c.ipv6 && !strings.Contains(saves["ip6tables-"+c.backend], "NODELOCALDNS") {
			t.Errorf("No NODELOCALDNS chains in ip6tables-%s-save", c.backend)
		}
		if lg := logs(); !strings.Contains(lg, "iptables backend "+c.backend) {
			t.Errorf("The cache did not log `iptables backend %s`:\n%s", c.backend, lg)
		}
	case "nftables":
		if !strings.Contains(nft, "table inet nodelocaldns") {
			t.Errorf("No table inet nodelocaldns in the node's nft ruleset")
		}
		for k, s := range saves {
			if strings.Contains(s, "NODELOCALDNS") {
				t.Errorf("NODELOCALDNS chains in %s-save in nftables mode", k)
			}
		}
	case "none":
		// Nothing at all, in the node's namespace or the pod's: not even an
		// empty table, while it runs.
		running, err := nodeState(ctx, l.Node, podNS)
		if err != nil {
			t.Fatal(err)
		}
		gone, added := diffLines(before, running)
		for _, g := range gone {
			t.Errorf("Gone while the cache runs with rules none: %s", g)
		}
		for _, a := range added {
			t.Errorf("Made by the cache with rules none: %s", a)
		}
	}

	// podman stop: SIGTERM, the grace period, as the kubelet stops a pod.
	stopAt := time.Now()
	if _, err := podman(ctx, root, "stop", name); err != nil {
		t.Fatal(err)
	}
	t.Logf("stopped in %v", time.Since(stopAt).Round(time.Millisecond))
	if code, err := podman(ctx, root, "inspect", "--format", "{{.State.ExitCode}}", name); err != nil || strings.TrimSpace(code) != "0" {
		t.Errorf("Exit code %q (%v) after SIGTERM, want 0:\n%s", strings.TrimSpace(code), err, logs())
	}
	after, err := nodeState(ctx, l.Node, podNS)
	if err != nil {
		t.Fatal(err)
	}
	gone, left := diffLines(before, after)
	for _, g := range gone {
		t.Errorf("Gone from the node after stop: %s", g)
	}
	var empty []string
	for _, s := range left {
		switch {
		case c.handoff && handoffLeft.MatchString(s):
		case c.rules != "none" && emptyBuiltin.MatchString(s):
			empty = append(empty, s)
		default:
			t.Errorf("Left on the node after stop: %s", s)
		}
	}
	if len(empty) > 0 {
		t.Logf("left after stop, without a rule in them: %d lines of empty tables and built-in chains (iptables makes them on first use):\n%s", len(empty), strings.Join(empty, "\n"))
	}
	if c.handoff {
		// What the handoff is for: pods asking the local IP still resolve.
		if err := resolves(l.Pod2, lab.LocalIP, "web.default.svc.cluster.local.", "198.18.0.20", false); err != nil {
			t.Errorf("After stop with teardown handoff: %v", err)
		}
	}
}

// probeAddr is host:port of an HTTP probe; with no host, the kubelet probes
// the pod's IP.
func probeAddr(p *corev1.Probe, podIP string) string {
	host := p.HTTPGet.Host
	if host == "" {
		host = podIP
	}
	return net.JoinHostPort(host, p.HTTPGet.Port.String())
}

// waitProbe polls an HTTP probe from the node until it answers 200, the
// container exits, or limit passes.
func waitProbe(ctx context.Context, root string, l *lab.Lab, name string, p *corev1.Probe, podIP string, limit time.Duration) error {
	if p == nil || p.HTTPGet == nil {
		return fmt.Errorf("no HTTP probe to wait on")
	}
	deadline := time.Now().Add(limit)
	var err error
	for time.Now().Before(deadline) {
		if _, err = lab.HTTPGet(l.Node, probeAddr(p, podIP), p.HTTPGet.Path); err == nil {
			return nil
		}
		if st, _ := podman(ctx, root, "inspect", "--format", "{{.State.Status}}", name); strings.TrimSpace(st) == "exited" {
			return fmt.Errorf("the container exited")
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("GET %s%s: %w", probeAddr(p, podIP), p.HTTPGet.Path, err)
}

// resolves asks server for name's A record from namespace ns and wants addr.
func resolves(ns, server, name, addr string, tcp bool) error {
	var r *dns.Msg
	var err error
	for range 3 { // a lost UDP packet is not what this test looks for
		if r, err = lab.Query(ns, server, name, "A", tcp); err == nil {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("%s A from %s (tcp %v): %w", name, server, tcp, err)
	}
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok && a.A.String() == addr {
			return nil
		}
	}
	return fmt.Errorf("%s A from %s (tcp %v): %s %v, want %s", name, server, tcp, dns.RcodeToString[r.Rcode], r.Answer, addr)
}

// emptyBuiltin matches the lines of nodeState that an empty table or an
// empty built-in chain with policy ACCEPT makes, and nothing that holds a
// rule or names a chain of the plugin's own.
var emptyBuiltin = regexp.MustCompile(`^(` +
	`ip6?tables-(nft|legacy)-save: (\*(raw|filter|nat|mangle)|COMMIT|:(PREROUTING|INPUT|FORWARD|OUTPUT|POSTROUTING) ACCEPT \[0:0\])` +
	`|nft: (table ip6? (raw|filter|nat|mangle) \{|chain (PREROUTING|INPUT|FORWARD|OUTPUT|POSTROUTING) \{|type (filter|nat) hook \w+ priority \w+; policy accept;|\})` +
	`)$`)

// handoffLeft matches what `teardown handoff` leaves by design: everything
// (the link, its addresses, the socket-guarded rules and the standing
// fallback DNAT to the cluster DNS that carries pods' DNS to the local IP
// while no cache runs; the next start adopts it).
var handoffLeft = regexp.MustCompile(`nodelocaldns|NODELOCALDNS|` + regexp.QuoteMeta(lab.LocalIP) + `|^nft: \}$`)

var (
	counters    = regexp.MustCompile(`\[\d+:\d+\]`)
	nftCounters = regexp.MustCompile(`counter packets \d+ bytes \d+`)
)

// nodeState is the links, addresses, iptables rules of both backends and
// families, and nft ruleset of the node's namespace and the pod's (when it
// has its own), one line per item, counters zeroed.
func nodeState(ctx context.Context, node, pod string) ([]string, error) {
	lines, err := nsState(ctx, node, "")
	if err != nil || pod == node {
		return lines, err
	}
	podLines, err := nsState(ctx, pod, "pod ")
	return append(lines, podLines...), err
}

// nsState is nodeState for one namespace, each line prefixed with prefix.
func nsState(ctx context.Context, ns, prefix string) ([]string, error) {
	var lines []string
	for _, cmd := range [][]string{
		{"ip", "-o", "link", "show"}, {"ip", "-o", "addr", "show"},
		{"iptables-nft-save"}, {"iptables-legacy-save"}, {"ip6tables-nft-save"}, {"ip6tables-legacy-save"},
		{"nft", "list", "ruleset"},
	} {
		out, err := lab.PodRun(ctx, ns, cmd[0], cmd[1:]...)
		if err != nil {
			return nil, err
		}
		for _, line := range strings.Split(out, "\n") {
			line = strings.TrimSpace(line)
			// `ip -o link` says this on stderr now and then for a veth
			// whose peer's namespace has no id here yet: not node state.
			if line == "" || strings.HasPrefix(line, "#") || strings.Contains(line, "Peer netns reference is invalid") {
				continue
			}
			line = counters.ReplaceAllString(line, "[0:0]")
			line = nftCounters.ReplaceAllString(line, "counter")
			// IPv6 duplicate address detection ends on its own schedule.
			line = strings.Replace(line, " tentative ", " ", 1)
			lines = append(lines, prefix+cmd[0]+": "+line)
		}
	}
	return lines, nil
}

// diffLines returns the lines of a missing from b and those of b new to a.
func diffLines(a, b []string) (gone, added []string) {
	count := map[string]int{}
	for _, s := range a {
		count[s]++
	}
	for _, s := range b {
		if count[s] > 0 {
			count[s]--
			continue
		}
		added = append(added, s)
	}
	for _, s := range a {
		if count[s] > 0 {
			count[s]--
			gone = append(gone, s)
		}
	}
	return gone, added
}

// capCase is one capability the manifest adds, and whether the cache needs
// it in that mode: without it the pod does not get ready, or does not
// resolve, or picks the wrong iptables backend.
type capCase struct {
	c      imageCase
	cap    corev1.Capability
	needed bool
}

// capCases: each capability each mode's manifest adds, dropped one at a time.
var capCases = []capCase{
	{imageCases[0], "NET_ADMIN", true},
	{imageCases[0], "NET_BIND_SERVICE", true},
	{imageCases[0], "NET_RAW", false}, // iptables-nft talks netlink only
	{imageCases[len(imageCases)-1], "NET_ADMIN", true},
	{imageCases[len(imageCases)-1], "NET_BIND_SERVICE", true},
	// iptables-legacy reads and writes the tables through a raw socket:
	// without NET_RAW, iptables-legacy-save sees no KUBE- rule and `rules
	// iptables auto` puts its rules in nft on a legacy node.
	{imageCases[len(imageCases)-1], "NET_RAW", true},
	{imageCases[1], "NET_ADMIN", true},
	{imageCases[1], "NET_BIND_SERVICE", true},
	// Cilium mode keeps only this one.
	{imageCases[slices.IndexFunc(imageCases, func(c imageCase) bool { return c.rules == "none" })], "NET_BIND_SERVICE", true},
}

// TestImageCapabilities (IMAGE_TEST=caps, make test-image) starts the pod
// spec with one added capability taken away, and checks that the cache is
// ready without exactly the capabilities it does not need.
func TestImageCapabilities(t *testing.T) {
	if os.Getenv("IMAGE_TEST") != "caps" {
		t.Skip("set IMAGE_TEST=caps (make test-image) to drop each capability in turn")
	}
	root := repoRoot(t)
	needImages(t, root)
	for _, backend := range []string{"nft", "legacy"} {
		t.Run(backend, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			l, err := lab.Up(ctx, lab.DefaultConfig(root))
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			if backend == "legacy" {
				moveKubeProxyToLegacy(ctx, t, l)
			}
			for _, cc := range capCases {
				if cc.c.backend != backend {
					continue
				}
				t.Run(cc.c.name()+"-without-"+string(cc.cap), func(t *testing.T) {
					objs := render(t, root, cc.c.overlay, cc.c.image)
					ctr, err := objs.Container()
					if err != nil {
						t.Fatal(err)
					}
					add := Capabilities(ctr)
					if !slices.Contains(add, cc.cap) {
						t.Fatalf("%s adds %v, not %s", cc.c.overlay, add, cc.cap)
					}
					ctr.SecurityContext.Capabilities.Add = slices.DeleteFunc(add, func(c corev1.Capability) bool { return c == cc.cap })
					name := "nodelocaldns-imagetest-" + l.ID + "-caps"
					args, _, podIP := podInLab(ctx, t, l, objs, name)
					// Where the pod's DNS, probes and metrics are: the local IP
					// and the node's address, or a pod-network pod's own.
					server := lab.LocalIP
					if !objs.DaemonSet.Spec.Template.Spec.HostNetwork {
						server = cachePodIP
					}
					if _, err := podman(ctx, root, append([]string{"run"}, args...)...); err != nil {
						t.Fatal(err)
					}
					// Stop as the kubelet would (teardown runs), then remove.
					defer podman(context.Background(), root, "rm", "--force", "--time", "30", name)
					err = waitProbe(ctx, root, l, name, ctr.ReadinessProbe, podIP, 20*time.Second)
					if err == nil {
						err = resolves(l.Pod2, server, "web.default.svc.cluster.local.", "198.18.0.20", false)
					}
					out, _ := podman(ctx, root, "logs", "--tail", "8", name)
					if err == nil && cc.c.rules == "iptables" && !strings.Contains(out, "iptables backend "+cc.c.backend) {
						// Working means on the node's backend: rules on the
						// other one would mix two rule sets on the node.
						err = fmt.Errorf("not on the node's iptables backend %s", cc.c.backend)
					}
					t.Logf("without %s: works: %v (%v)\n%s", cc.cap, err == nil, err, out)
					if works := err == nil; works == cc.needed {
						t.Errorf("Without %s the cache works: %v; the manifest's comment says it is needed: %v", cc.cap, works, cc.needed)
					}
				})
			}
		})
	}
}
