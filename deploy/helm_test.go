package deploy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/nodelocaldns/nodelocaldns/build/plugins"
	"github.com/nodelocaldns/nodelocaldns/internal/manifests"
)

const chartDir = "helm/nodelocaldns"

// chartModes pairs each kustomize overlay with the chart values that must render
// the same objects.
var chartModes = []struct {
	overlay string
	values  string
}{
	{"overlays/iptables", "mode: iptables"},
	{"overlays/ipvs", "mode: ipvs"},
	{"overlays/nftables", "mode: nftables"},
	{"overlays/dual-stack", "mode: dual-stack"},
	{"overlays/compat", "mode: compat"},
	{"overlays/cilium", "mode: cilium"},
	{"overlays/monitoring", "mode: iptables\nserviceMonitor: {enabled: true}\nprometheusRule: {enabled: true}"},
}

// renderChart renders the chart as `helm template node-local-dns -n kube-system`
// does (Helm's install action, dry run, client only: schema validation included).
func renderChart(valuesYAML string) (*manifests.Objects, error) {
	chrt, err := loader.Load(chartDir)
	if err != nil {
		return nil, fmt.Errorf("load chart %s: %w", chartDir, err)
	}
	vals, err := chartutil.ReadValues([]byte(valuesYAML))
	if err != nil {
		return nil, fmt.Errorf("read values: %w", err)
	}
	inst := action.NewInstall(&action.Configuration{Log: func(string, ...any) {}})
	inst.DryRun = true
	inst.ClientOnly = true
	inst.ReleaseName = "node-local-dns"
	inst.Namespace = "kube-system"
	rel, err := inst.Run(chrt, vals)
	if err != nil {
		return nil, err
	}
	return manifests.Decode("helm template "+chartDir, []byte(rel.Manifest))
}

func mustRenderChart(t *testing.T, valuesYAML string) *rendered {
	t.Helper()
	o, err := renderChart(valuesYAML)
	if err != nil {
		t.Fatalf("Chart does not render with values\n%s\n%v", valuesYAML, err)
	}
	return &rendered{o}
}

func overlayFor(t *testing.T, dir string) overlay {
	t.Helper()
	for _, ov := range overlays {
		if ov.dir == dir {
			return ov
		}
	}
	t.Fatalf("no overlay %s", dir)
	return overlay{}
}

// TestChartModes holds the chart, mode by mode, to the same invariants as the
// kustomize overlays (the checks of TestOverlays).
func TestChartModes(t *testing.T) {
	for _, m := range chartModes {
		t.Run(strings.ReplaceAll(m.overlay, "/", "_"), func(t *testing.T) {
			ov := overlayFor(t, m.overlay)
			ov.dir = "helm:" + m.overlay
			checkRendered(t, ov, mustRenderChart(t, m.values))
		})
	}
}

// TestChartMatchesKustomize is what keeps the two trees from drifting: for every
// mode the chart's objects, decoded, equal the overlay's field by field. What may
// differ, and only that: kustomize's content hash in ConfigMap names (Helm rolls
// the pods with a checksum annotation instead) and comment lines in the Corefile.
func TestChartMatchesKustomize(t *testing.T) {
	for _, m := range chartModes {
		t.Run(strings.ReplaceAll(m.overlay, "/", "_"), func(t *testing.T) {
			k := render(t, m.overlay)
			h := mustRenderChart(t, m.values)
			if h.DaemonSet.Spec.Template.Annotations["checksum/config"] == "" {
				t.Error("Chart's pod template has no checksum/config: a values change would not roll the pods")
			}
			want, got := comparable(t, k.Objects, false), comparable(t, h.Objects, true)
			var wantNames, gotNames []string
			for n := range want {
				wantNames = append(wantNames, n)
			}
			for n := range got {
				gotNames = append(gotNames, n)
			}
			sort.Strings(wantNames)
			sort.Strings(gotNames)
			if !reflect.DeepEqual(wantNames, gotNames) {
				t.Fatalf("Chart renders %v, kustomize %v", gotNames, wantNames)
			}
			for _, n := range wantNames {
				for _, d := range diff(n, want[n], got[n]) {
					t.Errorf("Chart differs from %s: %s", m.overlay, d)
				}
			}
		})
	}
}

var kustomizeHash = regexp.MustCompile(`^(node-local-dns(?:-params)?)-[a-z0-9]{10}$`)

// comparable turns one rendering into generic JSON per object ("Kind/name"),
// with ConfigMap hash suffixes, the chart's checksum annotation and Corefile
// comment lines taken out.
func comparable(t *testing.T, o *manifests.Objects, helm bool) map[string]any {
	t.Helper()
	unhash := func(n string) string {
		if m := kustomizeHash.FindStringSubmatch(n); m != nil {
			return m[1]
		}
		return n
	}
	out := map[string]any{}
	put := func(kind, name string, v any) {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		var g any
		if err := json.Unmarshal(b, &g); err != nil {
			t.Fatal(err)
		}
		out[kind+"/"+name] = g
	}
	ds := o.DaemonSet.DeepCopy()
	if helm {
		delete(ds.Spec.Template.Annotations, "checksum/config")
	}
	for i := range ds.Spec.Template.Spec.Containers {
		for _, ef := range ds.Spec.Template.Spec.Containers[i].EnvFrom {
			if ef.ConfigMapRef != nil {
				ef.ConfigMapRef.Name = unhash(ef.ConfigMapRef.Name)
			}
		}
	}
	for _, v := range ds.Spec.Template.Spec.Volumes {
		if v.ConfigMap != nil {
			v.ConfigMap.Name = unhash(v.ConfigMap.Name)
		}
	}
	put("DaemonSet", ds.Name, ds)
	for n, s := range o.Services {
		put("Service", n, s)
	}
	for n, c := range o.ConfigMaps {
		c = c.DeepCopy()
		c.Name = unhash(n)
		if cf, ok := c.Data["Corefile"]; ok {
			c.Data["Corefile"] = stripCommentLines(cf)
		}
		put("ConfigMap", c.Name, c)
	}
	put("ServiceAccount", o.ServiceAccount.Name, o.ServiceAccount)
	if o.ServiceMonitor != nil {
		put("ServiceMonitor", o.ServiceMonitor.ObjectMeta.Name, o.ServiceMonitor)
	}
	if o.PrometheusRule != nil {
		put("PrometheusRule", o.PrometheusRule.ObjectMeta.Name, o.PrometheusRule)
	}
	for n, p := range o.LocalRedirectPolicies {
		put("CiliumLocalRedirectPolicy", n, p)
	}
	return out
}

// stripCommentLines drops whole-line comments and trailing blank lines.
func stripCommentLines(text string) string {
	var keep []string
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		keep = append(keep, strings.TrimRight(line, " \t"))
	}
	return strings.TrimRight(strings.Join(keep, "\n"), "\n") + "\n"
}

// diff lists where two JSON values differ, by path.
func diff(path string, want, got any) []string {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return []string{fmt.Sprintf("%s: want %v, got %v", path, want, got)}
		}
		keys := map[string]bool{}
		for k := range w {
			keys[k] = true
		}
		for k := range g {
			keys[k] = true
		}
		var sorted []string
		for k := range keys {
			sorted = append(sorted, k)
		}
		sort.Strings(sorted)
		var out []string
		for _, k := range sorted {
			out = append(out, diff(path+"."+k, w[k], g[k])...)
		}
		return out
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			return []string{fmt.Sprintf("%s: want %v, got %v", path, want, got)}
		}
		var out []string
		for i := range w {
			out = append(out, diff(fmt.Sprintf("%s[%d]", path, i), w[i], g[i])...)
		}
		return out
	}
	if reflect.DeepEqual(want, got) {
		return nil
	}
	ws, wok := want.(string)
	gs, gok := got.(string)
	if wok && gok && strings.Contains(ws, "\n") {
		// A file (the Corefile): name the first line that differs.
		wl, gl := strings.Split(ws, "\n"), strings.Split(gs, "\n")
		for i := 0; ; i++ {
			var w, g string
			if i < len(wl) {
				w = wl[i]
			}
			if i < len(gl) {
				g = gl[i]
			}
			if w != g || i >= len(wl) || i >= len(gl) {
				return []string{fmt.Sprintf("%s line %d: want %q, got %q", path, i+1, w, g)}
			}
		}
	}
	return []string{fmt.Sprintf("%s: want %q, got %q", path, fmt.Sprint(want), fmt.Sprint(got))}
}

// TestChartFiles: the chart reads the PrometheusRule and the Cilium policies
// from copies of the kustomize tree's files (Helm reads only files inside the
// chart); `go generate ./deploy` refreshes them.
func TestChartFiles(t *testing.T) {
	for src, dst := range map[string]string{
		"components/monitoring/prometheusrule.yaml": chartDir + "/files/prometheusrule.yaml",
		"overlays/cilium/localredirectpolicy.yaml":  chartDir + "/files/localredirectpolicy.yaml",
	} {
		a, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(dst)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs from %s: run `go generate ./deploy`", dst, src)
		}
	}
}

// TestChartDeliveryheroValues installs a values file written for the
// deliveryhero node-local-dns chart: every key it sets must arrive where that
// chart would have put it, and the result must still hold the invariants.
func TestChartDeliveryheroValues(t *testing.T) {
	data, err := os.ReadFile("testdata/deliveryhero-values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Config struct {
			LocalDns, DnsServer, DnsDomain string
			HealthPort                     int
			ExtraServerBlocks              string
		}
		Resources   corev1.ResourceRequirements
		Tolerations []corev1.Toleration
		Affinity    *corev1.Affinity
	}
	if err := yaml.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	r := mustRenderChart(t, string(data))

	params := r.params(t)
	for k, want := range map[string]string{"LOCAL_DNS_IP": v.Config.LocalDns, "KUBE_DNS_IP": v.Config.DnsServer, "CLUSTER_DOMAIN": v.Config.DnsDomain, "HEALTH_PORT": fmt.Sprint(v.Config.HealthPort), "IMAGE": "registry.example/nodelocaldns:1.0.0"} {
		if params[k] != want {
			t.Errorf("params %s = %q, want %q from the values file", k, params[k], want)
		}
	}
	if r.DaemonSet.Spec.Template.Labels["team"] != "platform" {
		t.Errorf("pod labels %v lack the file's podLabels team=platform", r.DaemonSet.Spec.Template.Labels)
	}
	ps := r.DaemonSet.Spec.Template.Spec
	c := r.container(t)
	if !reflect.DeepEqual(c.Resources, v.Resources) {
		t.Errorf("resources %+v, want the file's %+v", c.Resources, v.Resources)
	}
	if !reflect.DeepEqual(ps.Tolerations, v.Tolerations) {
		t.Errorf("tolerations %+v, want the file's %+v", ps.Tolerations, v.Tolerations)
	}
	if !reflect.DeepEqual(ps.Affinity, v.Affinity) {
		t.Errorf("affinity %+v, want the file's %+v", ps.Affinity, v.Affinity)
	}
	if u := r.DaemonSet.Spec.UpdateStrategy.RollingUpdate; u == nil || u.MaxSurge == nil || *u.MaxSurge != intstr.FromString("10%") {
		t.Errorf("updateStrategy %+v, want the file's maxSurge 10%%", r.DaemonSet.Spec.UpdateStrategy)
	}

	corefile := expandCorefile(t, r, r.configMapNamed(t, "node-local-dns").Data["Corefile"])
	t.Setenv("KUBE_DNS_UPSTREAM_SERVICE_HOST", upstreamFixture)
	if err := plugins.Validate("deliveryhero/Corefile", []byte(corefile)); err != nil {
		t.Errorf("Our build rejects the Corefile rendered from the deliveryhero values: %v\n%s", err, corefile)
	}
	blocks := parseCorefile(t, corefile)
	for _, b := range blocks[:4] {
		cache := find(b.dirs, "cache")
		if len(cache) != 1 || len(find(cache[0].sub, "prefetch")) != 1 || len(find(cache[0].sub, "serve_stale")) != 1 {
			t.Errorf("block %v: cache without the file's prefetch and serve_stale: %+v", b.keys, cache)
		}
		if f := find(b.dirs, "forward"); len(f) != 1 || (f[0].args[1] != "/etc/resolv.conf" && len(find(f[0].sub, "prefer_udp")) != 1) {
			t.Errorf("block %v: forward without the file's prefer_udp: %+v", b.keys, f)
		}
	}
	if !strings.Contains(corefile, strings.TrimSpace(v.Config.ExtraServerBlocks)) {
		t.Errorf("Corefile lacks the file's extraServerBlocks:\n%s", corefile)
	}
	if last := blocks[len(blocks)-1]; len(last.keys) != 1 || last.keys[0] != "consul.local:53" {
		t.Errorf("last server block %v, want the extra consul.local:53", last.keys)
	}
	sm := r.ServiceMonitor
	if sm == nil || sm.ObjectMeta.Name != "kube-prometheus-stack-node-local-dns" || sm.ObjectMeta.Namespace != "monitoring" || sm.ObjectMeta.Labels["release"] != "kube-prometheus-stack" {
		t.Fatalf("ServiceMonitor %+v, want the file's name prefix, namespace and labels", sm)
	}
	ep := sm.Spec.Endpoints[0]
	if ep.Interval != "15s" || len(ep.MetricRelabelings) != 1 || len(ep.Relabelings) != 2 || ep.Relabelings[1].TargetLabel != "nodename" {
		t.Errorf("ServiceMonitor endpoint %+v, want the file's interval and relabelings after ours", ep)
	}

	// Everything not set by the file keeps the invariants of iptables mode.
	ov := overlayFor(t, "overlays/iptables")
	ov.dir = "helm:deliveryhero"
	ov.monitor = true
	checkRendered(t, ov, withDefaults(r))
}

// withDefaults puts the chart's defaults back into the fields the deliveryhero
// values file sets on purpose, so checkRendered can hold the rest to the
// invariants. (Those fields were compared with the file above.)
func withDefaults(r *rendered) *rendered {
	ds := r.DaemonSet.DeepCopy()
	ps := &ds.Spec.Template.Spec
	ps.Tolerations = []corev1.Toleration{{Operator: corev1.TolerationOpExists}}
	ps.Affinity = nil
	delete(ds.Spec.Template.Labels, "team")
	one, zero := intstr.FromInt32(1), intstr.FromInt32(0)
	ds.Spec.UpdateStrategy.RollingUpdate.MaxSurge = &one
	ds.Spec.UpdateStrategy.RollingUpdate.MaxUnavailable = &zero
	ps.Containers[0].Resources = corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("25m"), corev1.ResourceMemory: resource.MustParse("32Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")},
	}
	o := *r.Objects
	o.DaemonSet = ds
	if o.ServiceMonitor != nil {
		sm := *o.ServiceMonitor
		sm.ObjectMeta.Namespace = "kube-system"
		o.ServiceMonitor = &sm
	}
	o.All = nil
	for _, ref := range r.All {
		if ref.Kind == "ServiceMonitor" {
			ref.Namespace = "kube-system"
		}
		o.All = append(o.All, ref)
	}
	return &rendered{&o}
}

// TestChartRefuses: keys the chart does not know, and deliveryhero settings it
// does not honour, fail the render with a message naming them.
func TestChartRefuses(t *testing.T) {
	tests := []struct {
		values string
		want   []string
	}{
		{"colour: blue", []string{"colour"}},
		{"config: {customUpstreamsvc: coredns}", []string{"customUpstreamsvc"}},
		{"config: {upstreamForwardConfig: {max_fails: 3}}", []string{"upstreamForwardConfig"}},
		{"config: {port: {number: 5353}}", []string{"port"}},
		{"dashboard: {enabled: true}", []string{"dashboard", "enabled"}},
		{"fullnameOverride: nld", []string{"fullnameOverride"}},
		{"lifecycle: {preStop: {exec: {command: [sleep, '30']}}}", []string{"lifecycle"}},
		{"securityContext: {privileged: true}", []string{"securityContext"}},
		{"serviceAccount: {create: false}", []string{"serviceAccount", "create"}},
		{"serviceMonitor: {path: /other}", []string{"serviceMonitor", "path"}},
		{"config: {bindIp: false}", []string{"config.bindIp"}},
		{"config: {setupIptables: false}", []string{"config.setupIptables", "mode cilium"}},
		{"mode: cilium\nconfig: {setupInterface: true}", []string{"config.setupInterface", "mode cilium"}},
		{"mode: ipvs\nconfig: {customConfig: 'forward . __PILLAR__CLUSTER__DNS__'}", []string{"config.customConfig", "__PILLAR__", "compat"}},
		{"mode: compat\nconfig: {prefetch: {enabled: true}}", []string{"config.customConfig", "prefetch"}},
		{"mode: weave", []string{"mode"}},
		{"config: {commProtocol: prefer_tcp}", []string{"commProtocol"}},
	}
	for _, tc := range tests {
		_, err := renderChart(tc.values)
		if err == nil {
			t.Errorf("Values %q render; want a failure naming %v", tc.values, tc.want)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("Values %q: error %q does not name %q", tc.values, err, w)
			}
		}
	}
}

// TestChartSkipTeardown: deliveryhero's config.skipTeardown reaches the cache in
// both forms, the directive (`teardown off`) and node-cache's flag (compat).
func TestChartSkipTeardown(t *testing.T) {
	r := mustRenderChart(t, "config: {skipTeardown: true}")
	blocks := parseCorefile(t, r.configMapNamed(t, "node-local-dns").Data["Corefile"])
	nl := find(blocks[0].dirs, "nodelocal")
	if len(nl) != 1 || len(find(nl[0].sub, "teardown")) != 1 || find(nl[0].sub, "teardown")[0].args[0] != "off" {
		t.Errorf("skipTeardown: want `teardown off` in the nodelocal block, got %+v", nl)
	}
	r = mustRenderChart(t, "mode: compat\nconfig: {skipTeardown: true}")
	if args := r.container(t).Args; args[len(args)-1] != "-skipteardown=true" {
		t.Errorf("compat skipTeardown: args %v, want -skipteardown=true", args)
	}
}

// TestChartCiliumFromDeliveryheroFlags: deliveryhero's way of saying "no link,
// no rules" is accepted in mode cilium and renders what mode cilium alone does.
func TestChartCiliumFromDeliveryheroFlags(t *testing.T) {
	a := comparable(t, mustRenderChart(t, "mode: cilium").Objects, true)
	b := comparable(t, mustRenderChart(t, "mode: cilium\nconfig: {setupInterface: false, setupIptables: false}").Objects, true)
	if !reflect.DeepEqual(a, b) {
		t.Error("mode cilium with setupInterface/setupIptables false renders differently from mode cilium")
	}
}
