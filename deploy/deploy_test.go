// Package deploy holds the Kubernetes manifests (kustomize base, overlays,
// components, examples). This test renders every overlay with kustomize as a
// library, decodes every object strictly into the Kubernetes API types, and checks
// the invariants the node cache depends on.
package deploy

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/nodelocaldns/nodelocaldns/build/plugins"
	"github.com/nodelocaldns/nodelocaldns/internal/cachesize"
	"github.com/nodelocaldns/nodelocaldns/internal/manifests"
	"github.com/nodelocaldns/nodelocaldns/nodecache"
)

// upstreamFixture stands in for the kubelet's KUBE_DNS_UPSTREAM_SERVICE_HOST
// when a Corefile is expanded (a test-range address; nothing is sent to it).
const upstreamFixture = "198.18.0.11"

// overlay describes what each kustomization must produce.
type overlay struct {
	dir      string
	compat   bool     // node-cache flags and template instead of the nodelocal directive
	localIPs []string // params keys whose values, in order, are the cache's addresses
	rules    string   // nodelocal `rules` arguments
	teardown string
	caps     []string // exact capabilities added
	monitor  bool     // ServiceMonitor and PrometheusRule expected
	cilium   bool     // pod network, no link or rules, CiliumLocalRedirectPolicy
}

// podIPFixture stands in for the pod's IP (downward API) in Cilium mode.
const podIPFixture = "198.18.0.20"

// probeHost is the host the probes ask: the local IP, or in Cilium mode the
// pod's own IP (an empty host).
func (ov overlay) probeHost(params map[string]string) string {
	if ov.cilium {
		return ""
	}
	return params["LOCAL_DNS_IP"]
}

// selfIP is where health and ready listen: LOCAL_DNS_IP, or the pod IP.
func (ov overlay) selfIP(env map[string]string) string {
	if ov.cilium {
		return env["POD_IP"]
	}
	return env["LOCAL_DNS_IP"]
}

var baseCaps = []string{"NET_ADMIN", "NET_BIND_SERVICE", "NET_RAW"}

var overlays = []overlay{
	{dir: "base", localIPs: []string{"LOCAL_DNS_IP", "KUBE_DNS_IP"}, rules: "iptables auto", teardown: "on", caps: baseCaps},
	{dir: "overlays/iptables", localIPs: []string{"LOCAL_DNS_IP", "KUBE_DNS_IP"}, rules: "iptables auto", teardown: "on", caps: baseCaps},
	{dir: "overlays/ipvs", localIPs: []string{"LOCAL_DNS_IP"}, rules: "iptables auto", teardown: "handoff", caps: baseCaps},
	{dir: "overlays/nftables", localIPs: []string{"LOCAL_DNS_IP", "KUBE_DNS_IP"}, rules: "nftables", teardown: "on", caps: []string{"NET_ADMIN", "NET_BIND_SERVICE"}},
	{dir: "overlays/dual-stack", localIPs: []string{"LOCAL_DNS_IP", "LOCAL_DNS_IP6", "KUBE_DNS_IP", "KUBE_DNS_IP6"}, rules: "iptables auto", teardown: "on", caps: baseCaps},
	{dir: "overlays/compat", compat: true, localIPs: []string{"LOCAL_DNS_IP", "KUBE_DNS_IP"}, caps: baseCaps},
	{dir: "overlays/monitoring", localIPs: []string{"LOCAL_DNS_IP", "KUBE_DNS_IP"}, rules: "iptables auto", teardown: "on", caps: baseCaps, monitor: true},
	{dir: "overlays/cilium", localIPs: []string{"POD_IP"}, rules: "none", teardown: "off", caps: []string{"NET_BIND_SERVICE"}, cilium: true},
}

// rendered is one overlay's output, decoded.
type rendered struct{ *manifests.Objects }

// strictDecode decodes JSON into v as the API server's strict field
// validation does.
func strictDecode(t *testing.T, what string, data []byte, v any) {
	t.Helper()
	if err := manifests.StrictDecode(what, data, v); err != nil {
		t.Error(err)
	}
}

// render runs kustomize on dir (relative to deploy/) and decodes every object.
func render(t *testing.T, dir string) *rendered {
	t.Helper()
	o, err := manifests.Render(dir)
	if err != nil {
		t.Fatal(err)
	}
	return &rendered{o}
}

// configMapNamed returns the generated ConfigMap whose name is prefix plus
// kustomize's hash suffix.
func (r *rendered) configMapNamed(t *testing.T, prefix string) *corev1.ConfigMap {
	t.Helper()
	c, err := r.ConfigMapNamed(prefix)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (r *rendered) params(t *testing.T) map[string]string {
	return r.configMapNamed(t, "node-local-dns-params").Data
}

func (r *rendered) container(t *testing.T) *corev1.Container {
	t.Helper()
	c, err := r.Container()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// podEnv is the environment the cache process sees: the params ConfigMap (envFrom)
// plus the kubelet's service variable for the upstream.
func podEnv(t *testing.T, r *rendered) map[string]string {
	t.Helper()
	env, err := r.PodEnv(map[string]string{"KUBE_DNS_UPSTREAM_SERVICE_HOST": upstreamFixture, "POD_IP": podIPFixture})
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// binaryEnv is what the binary sets when the pod does not: the cache
// capacities for a container without a memory limit (internal/cachesize).
var binaryEnv = map[string]string{
	cachesize.EnvSuccess: strconv.Itoa(cachesize.MaxCapacity),
	cachesize.EnvDenial:  strconv.Itoa(cachesize.MaxCapacity),
	cachesize.EnvOther:   strconv.Itoa(cachesize.MaxCapacity),
}

var envRef = regexp.MustCompile(`\{\$([A-Za-z_][A-Za-z0-9_]*)\}`)

func expandCorefile(t *testing.T, r *rendered, text string) string {
	t.Helper()
	env := podEnv(t, r)
	lines := strings.Split(text, "\n")
	for i, line := range lines {
		code, comment := splitComment(line)
		lines[i] = envRef.ReplaceAllStringFunc(code, func(ref string) string {
			name := envRef.FindStringSubmatch(ref)[1]
			v, ok := env[name]
			if c, set := binaryEnv[name]; !ok && set {
				v, ok = c, true
			}
			if !ok {
				t.Errorf("Corefile uses {$%s}, which the pod's environment does not set", name)
			}
			return v
		}) + comment
	}
	return strings.Join(lines, "\n")
}

// splitComment splits a Corefile line at its comment (CoreDNS's lexer drops
// comments before it expands {$VAR}).
func splitComment(line string) (code, comment string) {
	if i := strings.Index(line, "#"); i >= 0 {
		return line[:i], line[i:]
	}
	return line, ""
}

func stripComments(text string) string {
	lines := strings.Split(text, "\n")
	for i, line := range lines {
		lines[i], _ = splitComment(line)
	}
	return strings.Join(lines, "\n")
}

// A tiny Corefile reader: enough structure for the invariants (server blocks,
// their directives with arguments, and the nodelocal block's settings).
type directive struct {
	name string
	args []string
	sub  []directive
}

type serverBlock struct {
	keys []string
	dirs []directive
}

func parseCorefile(t *testing.T, text string) []serverBlock {
	t.Helper()
	var toks []string
	for _, line := range strings.Split(stripComments(text), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		toks = append(toks, f...)
		toks = append(toks, "\n")
	}
	var blocks []serverBlock
	i := 0
	next := func() string { s := toks[i]; i++; return s }
	var readBody func() []directive
	readBody = func() []directive {
		var ds []directive
		var cur *directive
		for i < len(toks) {
			tok := next()
			switch tok {
			case "}":
				return ds
			case "\n":
				cur = nil
			case "{":
				if cur == nil {
					t.Fatalf("Corefile: '{' without a directive")
				}
				ds[len(ds)-1].sub = readBody()
				cur = nil
			default:
				if cur == nil {
					ds = append(ds, directive{name: tok})
					cur = &ds[len(ds)-1]
				} else {
					cur.args = append(cur.args, tok)
				}
			}
		}
		t.Fatalf("Corefile: unclosed block")
		return nil
	}
	for i < len(toks) {
		var b serverBlock
		for i < len(toks) {
			tok := next()
			if tok == "\n" {
				continue
			}
			if tok == "{" {
				break
			}
			b.keys = append(b.keys, tok)
		}
		if len(b.keys) == 0 {
			break
		}
		b.dirs = readBody()
		blocks = append(blocks, b)
	}
	return blocks
}

func find(ds []directive, name string) []directive {
	var out []directive
	for _, d := range ds {
		if d.name == name {
			out = append(out, d)
		}
	}
	return out
}

// hostPort splits "IP:PORT" (IPv4 only here: health and ready live on LOCAL_DNS_IP).
func hostPort(t *testing.T, s string) (string, int) {
	t.Helper()
	i := strings.LastIndex(s, ":")
	if i < 0 {
		t.Fatalf("%q: no port", s)
	}
	p, err := strconv.Atoi(s[i+1:])
	if err != nil {
		t.Fatalf("%q: %v", s, err)
	}
	return s[:i], p
}

func intPort(t *testing.T, what string, p intstr.IntOrString) int {
	t.Helper()
	if p.Type != intstr.Int {
		t.Fatalf("%s: port %q is a name, want a number", what, p.StrVal)
	}
	return p.IntValue()
}

func TestOverlays(t *testing.T) {
	for _, ov := range overlays {
		t.Run(strings.ReplaceAll(ov.dir, "/", "_"), func(t *testing.T) {
			checkRendered(t, ov, render(t, ov.dir))
		})
	}
}

// checkRendered checks the invariants of one rendering (a kustomize overlay or
// the Helm chart in the same mode).
func checkRendered(t *testing.T, ov overlay, r *rendered) {
	t.Helper()
	for _, ref := range r.All {
		if ref.Namespace != "kube-system" {
			t.Errorf("%s: %s: namespace %q, want kube-system", ov.dir, ref, ref.Namespace)
		}
	}
	params := r.params(t)
	for _, k := range []string{"LOCAL_DNS_IP", "KUBE_DNS_IP", "CLUSTER_DOMAIN", "HEALTH_PORT", "IMAGE"} {
		if params[k] == "" {
			t.Errorf("params: %s is empty", k)
		}
	}
	env := podEnv(t, r)
	var wantIPs []string
	for _, k := range ov.localIPs {
		if env[k] == "" {
			t.Fatalf("pod environment: %s is empty", k)
		}
		wantIPs = append(wantIPs, env[k])
	}
	healthPort, err := strconv.Atoi(params["HEALTH_PORT"])
	if err != nil {
		t.Fatal(err)
	}

	checkPodSpec(t, ov, r, params)
	checkServices(t, r)

	corefile := expandCorefile(t, r, r.configMapNamed(t, "node-local-dns").Data["Corefile"])
	// The build itself must accept it, as `coredns -conf` would.
	if !ov.compat {
		// kubelet sets it from the kube-dns-upstream Service.
		t.Setenv("KUBE_DNS_UPSTREAM_SERVICE_HOST", upstreamFixture)
		if err := plugins.Validate(ov.dir+"/Corefile", []byte(corefile)); err != nil {
			t.Errorf("Our build rejects the Corefile of %s: %v", ov.dir, err)
		}
	}
	blocks := parseCorefile(t, corefile)
	checkCorefile(t, ov, blocks, env, wantIPs, healthPort)

	c := r.container(t)
	if h, p := c.LivenessProbe.HTTPGet.Host, intPort(t, "liveness", c.LivenessProbe.HTTPGet.Port); h != ov.probeHost(params) || p != healthPort {
		t.Errorf("liveness probe %s:%d, want %s:%d (the health line)", h, p, ov.probeHost(params), healthPort)
	}
	if ov.compat {
		checkCompat(t, r, params, healthPort, corefile)
		checkCompatRenders(t, r, corefile)
	}
	if ov.cilium {
		checkCilium(t, r, params)
	} else if len(r.LocalRedirectPolicies) != 0 {
		t.Errorf("CiliumLocalRedirectPolicy rendered in %s", ov.dir)
	}

	if ov.monitor {
		checkMonitoring(t, r)
	} else if r.ServiceMonitor != nil || r.PrometheusRule != nil {
		t.Errorf("monitoring objects rendered in %s", ov.dir)
	}
}

func checkPodSpec(t *testing.T, ov overlay, r *rendered, params map[string]string) {
	t.Helper()
	ds := r.DaemonSet
	if ds.Name != "node-local-dns" || ds.Spec.Selector == nil || !mapsEqual(ds.Spec.Selector.MatchLabels, map[string]string{"k8s-app": "node-local-dns"}) {
		t.Errorf("DaemonSet name/selector changed: %s %v (must stay the official ones to roll in place)", ds.Name, ds.Spec.Selector)
	}
	u := ds.Spec.UpdateStrategy
	if u.Type != appsv1.RollingUpdateDaemonSetStrategyType || u.RollingUpdate == nil ||
		u.RollingUpdate.MaxSurge == nil || *u.RollingUpdate.MaxSurge != intstr.FromInt32(1) ||
		u.RollingUpdate.MaxUnavailable == nil || *u.RollingUpdate.MaxUnavailable != intstr.FromInt32(0) {
		t.Errorf("updateStrategy %+v, want RollingUpdate maxSurge 1 maxUnavailable 0", u)
	}
	ps := ds.Spec.Template.Spec
	if ps.HostNetwork == ov.cilium {
		t.Errorf("hostNetwork is %v; want it only outside Cilium mode", ps.HostNetwork)
	}
	if ps.DNSPolicy != corev1.DNSDefault {
		t.Errorf("dnsPolicy %q, want Default", ps.DNSPolicy)
	}
	if ps.PriorityClassName != "system-node-critical" {
		t.Errorf("priorityClassName %q", ps.PriorityClassName)
	}
	if ps.ServiceAccountName != r.ServiceAccount.Name {
		t.Errorf("serviceAccountName %q, ServiceAccount %q", ps.ServiceAccountName, r.ServiceAccount.Name)
	}
	if ps.EnableServiceLinks == nil || !*ps.EnableServiceLinks {
		t.Error("enableServiceLinks must be true: the upstream comes from KUBE_DNS_UPSTREAM_SERVICE_HOST")
	}
	tolAll := false
	for _, tol := range ps.Tolerations {
		if tol.Operator == corev1.TolerationOpExists && tol.Key == "" && tol.Effect == "" {
			tolAll = true
		}
	}
	if !tolAll {
		t.Errorf("tolerations %+v: want one {operator: Exists} tolerating every taint", ps.Tolerations)
	}
	if a := ds.Spec.Template.Annotations; a["prometheus.io/scrape"] != "true" || a["prometheus.io/port"] != "9253" {
		t.Errorf("pod annotations %v: want Prometheus scrape on 9253", a)
	}

	c := r.container(t)
	if c.Image != params["IMAGE"] {
		t.Errorf("image %q, want params IMAGE %q", c.Image, params["IMAGE"])
	}
	// No ports: hostNetwork turns containerPorts into hostPorts, which would keep
	// the surge pod from scheduling next to the old one.
	if len(c.Ports) != 0 {
		t.Errorf("container declares ports %v: with hostNetwork they become hostPorts and block maxSurge", c.Ports)
	}
	sc := c.SecurityContext
	if sc == nil || sc.Capabilities == nil {
		t.Fatal("no securityContext.capabilities")
	}
	if got := capStrings(sc.Capabilities.Drop); !slices.Equal(got, []string{"ALL"}) {
		t.Errorf("capabilities drop %v, want [ALL]", got)
	}
	want := slices.Clone(ov.caps)
	sort.Strings(want)
	if got := capStrings(sc.Capabilities.Add); !slices.Equal(got, want) {
		t.Errorf("capabilities add %v, want exactly %v", got, want)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation must be false")
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Error("privileged")
	}
	wantRO := !ov.compat // node-cache's layout writes /etc/Corefile
	if sc.ReadOnlyRootFilesystem == nil || *sc.ReadOnlyRootFilesystem != wantRO {
		t.Errorf("readOnlyRootFilesystem %v, want %v", sc.ReadOnlyRootFilesystem, wantRO)
	}
	if sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Error("seccompProfile must be RuntimeDefault")
	}

	res := c.Resources
	if q := res.Requests[corev1.ResourceCPU]; q.Cmp(resource.MustParse("25m")) != 0 {
		t.Errorf("cpu request %s", q.String())
	}
	if q := res.Requests[corev1.ResourceMemory]; q.Cmp(resource.MustParse("32Mi")) != 0 {
		t.Errorf("memory request %s", q.String())
	}
	if q := res.Limits[corev1.ResourceMemory]; q.Cmp(resource.MustParse("128Mi")) != 0 {
		t.Errorf("memory limit %s", q.String())
	}
	if _, ok := res.Limits[corev1.ResourceCPU]; ok {
		t.Error("cpu limit set: CFS throttling turns into DNS latency")
	}

	lp := c.LivenessProbe
	if lp == nil || lp.HTTPGet == nil || lp.HTTPGet.Path != "/health" {
		t.Fatal("liveness probe must be httpGet /health")
	}
	if lp.TimeoutSeconds < 5 || lp.FailureThreshold*lp.PeriodSeconds < 60 {
		t.Errorf("liveness probe too eager: timeout %ds, %d x %ds", lp.TimeoutSeconds, lp.FailureThreshold, lp.PeriodSeconds)
	}
	rp := c.ReadinessProbe
	if rp == nil || rp.HTTPGet == nil || rp.HTTPGet.Host != ov.probeHost(params) {
		t.Fatalf("readiness probe must be httpGet on %q: %+v", ov.probeHost(params), rp)
	}

	// Volumes and mounts.
	vols := map[string]corev1.Volume{}
	for _, v := range ps.Volumes {
		vols[v.Name] = v
	}
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		if _, ok := vols[m.Name]; !ok {
			t.Errorf("mount %s names no volume", m.Name)
		}
		mounts[m.Name] = m
	}
	checkHostPath := func(name, path string, typ corev1.HostPathType) {
		v, ok := vols[name]
		if !ok || v.HostPath == nil || v.HostPath.Path != path || v.HostPath.Type == nil || *v.HostPath.Type != typ {
			t.Errorf("volume %s: want hostPath %s type %s, got %+v", name, path, typ, v)
		}
		if m, ok := mounts[name]; !ok || m.MountPath != path || m.ReadOnly {
			t.Errorf("mount %s: want read-write at %s, got %+v", name, path, m)
		}
	}
	if ov.cilium {
		// A pod-network cache touches nothing on the node.
		for _, v := range ps.Volumes {
			if v.HostPath != nil {
				t.Errorf("Cilium mode mounts host path %s", v.HostPath.Path)
			}
		}
	} else {
		checkHostPath("xtables-lock", "/run/xtables.lock", corev1.HostPathFileOrCreate)
		checkHostPath("run-nodelocaldns", "/run/nodelocaldns", corev1.HostPathDirectoryOrCreate)
	}
	cv, ok := vols["config-volume"]
	if !ok || cv.ConfigMap == nil {
		t.Fatal("no config-volume ConfigMap volume")
	}
	if cv.ConfigMap.Name != r.configMapNamed(t, "node-local-dns").Name {
		t.Errorf("config-volume names ConfigMap %q, rendered %q", cv.ConfigMap.Name, r.configMapNamed(t, "node-local-dns").Name)
	}
	if m := mounts["config-volume"]; m.MountPath != "/etc/coredns" {
		t.Errorf("config-volume mounted at %q", m.MountPath)
	}
	wantFile := "Corefile"
	if ov.compat {
		wantFile = "Corefile.base"
	}
	if len(cv.ConfigMap.Items) != 1 || cv.ConfigMap.Items[0].Key != "Corefile" || cv.ConfigMap.Items[0].Path != wantFile {
		t.Errorf("config-volume items %+v, want Corefile -> %s", cv.ConfigMap.Items, wantFile)
	}
	if !ov.compat && !slices.Equal(c.Args, []string{"-conf", "/etc/coredns/Corefile"}) {
		t.Errorf("args %v", c.Args)
	}
}

func capStrings(cs []corev1.Capability) []string {
	var out []string
	for _, c := range cs {
		out = append(out, string(c))
	}
	sort.Strings(out)
	return out
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func checkServices(t *testing.T, r *rendered) {
	t.Helper()
	up, ok := r.Services["kube-dns-upstream"]
	if !ok {
		t.Fatal("no kube-dns-upstream Service")
	}
	if !mapsEqual(up.Spec.Selector, map[string]string{"k8s-app": "kube-dns"}) {
		t.Errorf("kube-dns-upstream selector %v", up.Spec.Selector)
	}
	protos := map[corev1.Protocol]bool{}
	for _, p := range up.Spec.Ports {
		if p.Port != 53 || p.TargetPort.IntValue() != 53 {
			t.Errorf("kube-dns-upstream port %+v", p)
		}
		protos[p.Protocol] = true
	}
	if len(up.Spec.Ports) != 2 || !protos[corev1.ProtocolUDP] || !protos[corev1.ProtocolTCP] {
		t.Errorf("kube-dns-upstream must expose 53/UDP and 53/TCP: %+v", up.Spec.Ports)
	}
	if up.Spec.ClusterIP == corev1.ClusterIPNone {
		t.Error("kube-dns-upstream must have a ClusterIP")
	}
	ms, ok := r.Services["node-local-dns"]
	if !ok {
		t.Fatal("no node-local-dns metrics Service")
	}
	if ms.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Error("metrics Service must be headless")
	}
	if !mapsEqual(ms.Spec.Selector, r.DaemonSet.Spec.Template.Labels) {
		t.Errorf("metrics Service selector %v does not select the pods %v", ms.Spec.Selector, r.DaemonSet.Spec.Template.Labels)
	}
	hasMetrics := false
	for _, p := range ms.Spec.Ports {
		if p.Name == "metrics" && p.Port == 9253 && p.TargetPort.IntValue() == 9253 {
			hasMetrics = true
		}
	}
	if !hasMetrics || ms.Annotations["prometheus.io/scrape"] != "true" || ms.Annotations["prometheus.io/port"] != "9253" {
		t.Errorf("metrics Service: want port metrics 9253 and scrape annotations: %+v %v", ms.Spec.Ports, ms.Annotations)
	}
}

func checkCorefile(t *testing.T, ov overlay, blocks []serverBlock, params map[string]string, wantIPs []string, healthPort int) {
	t.Helper()
	if len(blocks) < 4 {
		t.Fatalf("Corefile has %d server blocks, want the cluster domain, reverse zones and .", len(blocks))
	}
	if got := blocks[0].keys; !slices.Equal(got, []string{params["CLUSTER_DOMAIN"] + ":53"}) {
		t.Errorf("first server block %v, want %s:53", got, params["CLUSTER_DOMAIN"])
	}
	var healths, readys, nodelocals []directive
	for _, b := range blocks {
		for _, k := range b.keys {
			if !strings.HasSuffix(k, ":53") {
				t.Errorf("server block %q does not listen on :53", k)
			}
		}
		binds := find(b.dirs, "bind")
		if len(binds) != 1 || !slices.Equal(binds[0].args, wantIPs) {
			t.Errorf("block %v: bind %v, want %v", b.keys, binds, wantIPs)
		}
		if p := find(b.dirs, "prometheus"); len(p) != 1 || !slices.Equal(p[0].args, []string{":9253"}) {
			t.Errorf("block %v: want `prometheus :9253`", b.keys)
		}
		if f := find(b.dirs, "forward"); len(f) != 1 {
			t.Errorf("block %v: want one forward", b.keys)
		} else if len(f[0].args) < 2 || f[0].args[1] == "" || f[0].args[1] == "<nil>" {
			t.Errorf("block %v: forward has no upstream: %v", b.keys, f[0].args)
		}
		healths = append(healths, find(b.dirs, "health")...)
		readys = append(readys, find(b.dirs, "ready")...)
		nodelocals = append(nodelocals, find(b.dirs, "nodelocal")...)
	}
	if len(healths) != 1 || len(healths[0].args) != 1 {
		t.Fatalf("want exactly one `health IP:PORT`, got %+v", healths)
	}
	if h, p := hostPort(t, healths[0].args[0]); h != ov.selfIP(params) || p != healthPort {
		t.Errorf("health %s:%d, want %s:%d", h, p, ov.selfIP(params), healthPort)
	}
	if ov.compat {
		if len(nodelocals) != 0 || len(readys) != 0 {
			t.Error("compat Corefile must stay node-cache's template (no nodelocal, no ready)")
		}
		return
	}
	if len(readys) != 1 || len(readys[0].args) != 1 {
		t.Fatalf("want exactly one `ready IP:PORT`, got %+v", readys)
	}
	if h, p := hostPort(t, readys[0].args[0]); h != ov.selfIP(params) || strconv.Itoa(p) != params["READY_PORT"] {
		t.Errorf("ready %s:%d, want %s:%s", h, p, ov.selfIP(params), params["READY_PORT"])
	}
	if p := find(blocks[0].dirs, "ready"); len(p) != 1 {
		t.Error("ready must sit in the block with nodelocal (it sees only that block's plugins)")
	}
	if len(nodelocals) != 1 || len(find(blocks[0].dirs, "nodelocal")) != 1 {
		t.Fatalf("want one nodelocal block, in the first server block; got %d", len(nodelocals))
	}
	nl := map[string][]string{}
	for _, d := range nodelocals[0].sub {
		if _, dup := nl[d.name]; dup {
			t.Errorf("nodelocal: %s set twice", d.name)
		}
		nl[d.name] = d.args
	}
	want := map[string]string{
		"localip":     strings.Join(wantIPs, " "),
		"interface":   map[bool]string{false: "nodelocaldns", true: "none"}[ov.cilium],
		"rules":       ov.rules,
		"upstreamsvc": "kube-dns-upstream",
		"healthport":  strconv.Itoa(healthPort),
		"sync":        "10s",
		"teardown":    ov.teardown,
	}
	if ov.cilium {
		// Two pods on a node share nothing: no coordination directory.
		want["statedir"] = "none"
	}
	for k, v := range want {
		if got := strings.Join(nl[k], " "); got != v {
			t.Errorf("nodelocal %s = %q, want %q", k, got, v)
		}
	}
	if len(nl) != len(want) {
		t.Errorf("nodelocal has settings %v, want exactly %v", nl, want)
	}
}

func checkCompat(t *testing.T, r *rendered, params map[string]string, healthPort int, corefile string) {
	t.Helper()
	c := r.container(t)
	if !slices.Equal(c.Command, []string{"/node-cache"}) {
		t.Errorf("compat command %v, want [/node-cache]", c.Command)
	}
	flags := map[string]string{}
	for i := 0; i+1 < len(c.Args); i += 2 {
		flags[c.Args[i]] = c.Args[i+1]
	}
	want := map[string]string{
		"-localip":     params["LOCAL_DNS_IP"] + "," + params["KUBE_DNS_IP"],
		"-conf":        "/etc/Corefile",
		"-upstreamsvc": "kube-dns-upstream",
		"-health-port": strconv.Itoa(healthPort),
	}
	if !mapsEqual(flags, want) || len(c.Args) != 2*len(want) {
		t.Errorf("compat args %v, want %v", c.Args, want)
	}
	for _, p := range []string{"__PILLAR__CLUSTER__DNS__", "__PILLAR__UPSTREAM__SERVERS__"} {
		if !strings.Contains(corefile, p) {
			t.Errorf("compat Corefile lacks %s (the binary renders it)", p)
		}
	}
	for _, p := range []string{"__PILLAR__LOCAL__DNS__", "__PILLAR__DNS__SERVER__", "__PILLAR__DNS__DOMAIN__"} {
		if strings.Contains(stripComments(corefile), p) {
			t.Errorf("compat Corefile still has %s (set in params.env instead)", p)
		}
	}
	if rp := c.ReadinessProbe.HTTPGet; rp.Path != "/health" || intPort(t, "readiness", rp.Port) != healthPort {
		t.Errorf("compat readiness %+v, want /health on the health port", rp)
	}
	var kd *corev1.Volume
	for i, v := range r.DaemonSet.Spec.Template.Spec.Volumes {
		if v.Name == "kube-dns-config" {
			kd = &r.DaemonSet.Spec.Template.Spec.Volumes[i]
		}
	}
	if kd == nil || kd.ConfigMap == nil || kd.ConfigMap.Name != "kube-dns" || kd.ConfigMap.Optional == nil || !*kd.ConfigMap.Optional {
		t.Errorf("compat needs the optional kube-dns ConfigMap volume: %+v", kd)
	}
	mounted := false
	for _, m := range c.VolumeMounts {
		if m.Name == "kube-dns-config" && m.MountPath == "/etc/kube-dns" {
			mounted = true
		}
	}
	if !mounted {
		t.Error("compat: kube-dns-config not mounted at /etc/kube-dns")
	}
	hasSetupMetrics := false
	for _, p := range r.Services["node-local-dns"].Spec.Ports {
		if p.Port == 9353 {
			hasSetupMetrics = true
		}
	}
	if !hasSetupMetrics {
		t.Error("compat: metrics Service lacks node-cache's 9353")
	}
}

func checkMonitoring(t *testing.T, r *rendered) {
	t.Helper()
	sm, pr := r.ServiceMonitor, r.PrometheusRule
	if sm == nil || pr == nil {
		t.Fatal("monitoring overlay must render a ServiceMonitor and a PrometheusRule")
	}
	ms := r.Services["node-local-dns"]
	if !mapsEqual(sm.Spec.Selector.MatchLabels, ms.Labels) {
		t.Errorf("ServiceMonitor selects %v, metrics Service labels %v", sm.Spec.Selector.MatchLabels, ms.Labels)
	}
	for _, ep := range sm.Spec.Endpoints {
		found := false
		for _, p := range ms.Spec.Ports {
			found = found || p.Name == ep.Port
		}
		if !found {
			t.Errorf("ServiceMonitor endpoint port %q is not a port of the metrics Service", ep.Port)
		}
	}
	exprs := map[string]string{}
	fors := map[string]string{}
	for _, g := range pr.Spec.Groups {
		for _, rule := range g.Rules {
			exprs[rule.Alert] = rule.Expr
			fors[rule.Alert] = rule.For
			if rule.Labels["severity"] == "" || rule.Annotations["summary"] == "" {
				t.Errorf("alert %s lacks severity or summary", rule.Alert)
			}
		}
	}
	if e := exprs["NodeLocalDNSSetupErrors"]; !strings.Contains(e, "increase(coredns_nodecache_setup_errors_total") {
		t.Errorf("setup error alert: %q", e)
	}
	if e := exprs["NodeLocalDNSNotReady"]; !strings.Contains(e, "coredns_nodelocal_ready") || !strings.Contains(e, "== 0") || fors["NodeLocalDNSNotReady"] != "5m" {
		t.Errorf("not-ready alert: %q for %q", e, fors["NodeLocalDNSNotReady"])
	}
	if e := exprs["NodeLocalDNSHighServfail"]; !strings.Contains(e, `rcode="SERVFAIL"`) || !strings.Contains(e, "/") {
		t.Errorf("SERVFAIL ratio alert: %q", e)
	}
}

// The pod-side examples are plain manifests (not kustomizations): decode strictly.
func TestExamples(t *testing.T) {
	files, err := filepath.Glob("examples/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range strings.Split(string(data), "\n---\n") {
			if strings.TrimSpace(doc) == "" {
				continue
			}
			j, err := yaml.YAMLToJSON([]byte(doc))
			if err != nil {
				t.Fatalf("%s #%d: %v", f, i, err)
			}
			var tm struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
			}
			if err := json.UnmarshalCaseSensitivePreserveInts(j, &tm); err != nil {
				t.Fatal(err)
			}
			what := fmt.Sprintf("%s #%d %s", f, i, tm.Kind)
			var spec *corev1.PodSpec
			switch tm.APIVersion + " " + tm.Kind {
			case "v1 Pod":
				p := &corev1.Pod{}
				strictDecode(t, what, j, p)
				spec = &p.Spec
			case "batch/v1 Job":
				jb := &batchv1.Job{}
				strictDecode(t, what, j, jb)
				spec = &jb.Spec.Template.Spec
			case "apps/v1 Deployment":
				d := &appsv1.Deployment{}
				strictDecode(t, what, j, d)
				spec = &d.Spec.Template.Spec
			default:
				t.Errorf("%s: unexpected kind", what)
				continue
			}
			if spec.DNSConfig != nil {
				for _, ns := range spec.DNSConfig.Nameservers {
					if ns != "169.254.20.10" {
						t.Errorf("%s: nameserver %s, want the node cache 169.254.20.10", what, ns)
					}
				}
				if spec.DNSPolicy != corev1.DNSNone && len(spec.DNSConfig.Nameservers) > 0 {
					t.Errorf("%s: nameservers in dnsConfig need dnsPolicy None (else they are appended after the kube-dns IP)", what)
				}
			}
		}
	}
}

// checkCompatRenders runs the compat DaemonSet's args and template through
// the loader the binary uses (nodecache.RenderNodeCache), with a
// kube-dns ConfigMap as kubelet mounts it, and has our build accept the
// rendered Corefile.
func checkCompatRenders(t *testing.T, r *rendered, corefile string) {
	t.Helper()
	dir := t.TempDir()
	base := filepath.Join(dir, "Corefile.base")
	if err := os.WriteFile(base, []byte(corefile), 0o644); err != nil {
		t.Fatal(err)
	}
	cm := filepath.Join(dir, "kube-dns")
	data := filepath.Join(cm, "..2026_11_26_00_00_00.000000001")
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"upstreamNameservers": `["198.18.6.1"]`,
		"stubDomains":         `{"acme.example": ["198.18.5.1"]}`,
	}
	for k, v := range files {
		if err := os.WriteFile(filepath.Join(data, k), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Base(data), filepath.Join(cm, "..data")); err != nil {
		t.Fatal(err)
	}
	for k := range files {
		if err := os.Symlink(filepath.Join("..data", k), filepath.Join(cm, k)); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("KUBE_DNS_UPSTREAM_SERVICE_HOST", "198.18.0.11")
	args := append(slices.Clone(r.container(t).Args), "-basecorefile", base, "-kubednscm", cm, "-conf", filepath.Join(dir, "Corefile"))
	out, err := nodecache.RenderNodeCache(args)
	if err != nil {
		t.Fatalf("The compat args and Corefile do not render: %v", err)
	}
	got := string(out)
	for _, want := range []string{"forward . 198.18.0.11", "forward . 198.18.6.1", "acme.example:53", "forward acme.example 198.18.5.1", "nodelocal"} {
		if !strings.Contains(got, want) {
			t.Errorf("Rendered compat Corefile lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(stripComments(got), "__PILLAR__") {
		t.Errorf("Rendered compat Corefile keeps a placeholder:\n%s", got)
	}
	if err := plugins.Validate("compat/Corefile", out); err != nil {
		t.Errorf("Our build rejects the rendered compat Corefile: %v\n%s", err, got)
	}
}

// checkCilium checks Cilium mode's redirect policies: the kube-dns Service and
// LOCAL_DNS_IP, both to the cache pods' port 53 over UDP and TCP, never
// redirecting the cache's own queries, and a readiness probe quick enough for
// Cilium to drop a cache that is going away inside health's lameduck.
func checkCilium(t *testing.T, r *rendered, params map[string]string) {
	t.Helper()
	lrps := r.LocalRedirectPolicies
	svc, addr := lrps["node-local-dns"], lrps["node-local-dns-local-ip"]
	if svc == nil || addr == nil || len(lrps) != 2 {
		t.Fatalf("want the policies node-local-dns and node-local-dns-local-ip, got %d", len(lrps))
	}
	if m := svc.Spec.RedirectFrontend.ServiceMatcher; m == nil || m.ServiceName != "kube-dns" || m.Namespace != "kube-system" {
		t.Errorf("node-local-dns must redirect the kube-dns Service: %+v", m)
	}
	if m := addr.Spec.RedirectFrontend.AddressMatcher; m == nil || m.IP != params["LOCAL_DNS_IP"] || !dnsPorts(m.ToPorts) {
		t.Errorf("node-local-dns-local-ip must redirect %s:53 UDP and TCP: %+v", params["LOCAL_DNS_IP"], m)
	}
	for name, p := range lrps {
		if !mapsEqual(p.Spec.RedirectBackend.LocalEndpointSelector.MatchLabels, r.DaemonSet.Spec.Template.Labels) {
			t.Errorf("%s selects %v, the cache pods are %v", name, p.Spec.RedirectBackend.LocalEndpointSelector.MatchLabels, r.DaemonSet.Spec.Template.Labels)
		}
		if !dnsPorts(p.Spec.RedirectBackend.ToPorts) {
			t.Errorf("%s: backend ports %+v, want 53 UDP and TCP", name, p.Spec.RedirectBackend.ToPorts)
		}
		if !p.Spec.SkipRedirectFromBackend {
			t.Errorf("%s: skipRedirectFromBackend must be true (else the cache's own queries loop back to it)", name)
		}
	}
	rp := r.container(t).ReadinessProbe
	if rp.HTTPGet.Path != "/ready" || rp.PeriodSeconds*rp.FailureThreshold > 5 {
		t.Errorf("readiness %s every %ds x %d: Cilium must see the cache not ready within 5 s", rp.HTTPGet.Path, rp.PeriodSeconds, rp.FailureThreshold)
	}
	hasPodIP := false
	for _, e := range r.container(t).Env {
		hasPodIP = hasPodIP || e.Name == "POD_IP" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "status.podIP"
	}
	if !hasPodIP {
		t.Error("Cilium mode needs POD_IP from status.podIP (the Corefile binds it)")
	}
}

func dnsPorts(ps []manifests.LRPPort) bool {
	seen := map[string]bool{}
	for _, p := range ps {
		if p.Port != "53" {
			return false
		}
		seen[p.Protocol] = true
	}
	return len(ps) == 2 && seen["UDP"] && seen["TCP"]
}
