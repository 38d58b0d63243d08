package deploy

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestOwnOverlay builds the overlay deploy/README.md tells operators to write
// ("your own overlay": their params as a component, then the project's params
// components) on top of every mode, with values unlike the defaults, and
// checks that each value reaches every field that carries it: the image, the
// probes, node-cache's arguments (compat), the redirect policy (cilium).
func TestOwnOverlay(t *testing.T) {
	deploy, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	values := map[string]string{
		"LOCAL_DNS_IP": "169.254.20.25",
		"KUBE_DNS_IP":  "198.18.0.99",
		"HEALTH_PORT":  "8099",
		"READY_PORT":   "8182",
		"IMAGE":        "registry.example/nodelocaldns:v9",
	}
	for _, tc := range []struct {
		mode       string
		components []string
	}{
		{"iptables", []string{"params"}},
		{"ipvs", []string{"params"}},
		{"nftables", []string{"params"}},
		{"dual-stack", []string{"params"}},
		{"monitoring", []string{"params"}},
		{"compat", []string{"params", "params-compat"}},
		{"cilium", []string{"params-cilium"}},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			dir := t.TempDir()
			var env strings.Builder
			for _, k := range slices.Sorted(maps.Keys(values)) {
				env.WriteString(k + "=" + values[k] + "\n")
			}
			write(t, filepath.Join(dir, "values", "params.env"), env.String())
			write(t, filepath.Join(dir, "values", "kustomization.yaml"), `apiVersion: kustomize.config.k8s.io/v1alpha1
kind: Component
configMapGenerator:
- name: node-local-dns-params
  behavior: merge
  envs:
  - params.env
`)
			// kustomize takes directories by relative path only.
			rel := func(p ...string) string {
				r, err := filepath.Rel(dir, filepath.Join(append([]string{deploy}, p...)...))
				if err != nil {
					t.Fatal(err)
				}
				return r
			}
			k := "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- " +
				rel("overlays", tc.mode) + "\ncomponents:\n- values\n"
			for _, c := range tc.components {
				k += "- " + rel("components", c) + "\n"
			}
			write(t, filepath.Join(dir, "kustomization.yaml"), k)

			r := render(t, dir)
			if p := r.params(t); p["LOCAL_DNS_IP"] != values["LOCAL_DNS_IP"] {
				t.Fatalf("Params LOCAL_DNS_IP %q: the operator's params did not merge", p["LOCAL_DNS_IP"])
			}
			c := r.container(t)
			if c.Image != values["IMAGE"] {
				t.Errorf("Image %q, want %q", c.Image, values["IMAGE"])
			}
			wantReady := values["READY_PORT"]
			if tc.mode == "compat" {
				wantReady = values["HEALTH_PORT"] // node-cache's template has no ready plugin
			}
			if got := c.ReadinessProbe.HTTPGet.Port.String(); tc.mode != "cilium" && got != wantReady {
				t.Errorf("Readiness probe port %s, want %s", got, wantReady)
			}
			wantHost := values["LOCAL_DNS_IP"]
			if tc.mode == "cilium" {
				wantHost = "" // the pod's own IP: the cache is a pod-network endpoint
			}
			if h := c.LivenessProbe.HTTPGet.Host; h != wantHost {
				t.Errorf("Liveness probe host %q, want %q", h, wantHost)
			}
			if h := c.ReadinessProbe.HTTPGet.Host; h != wantHost {
				t.Errorf("Readiness probe host %q, want %q", h, wantHost)
			}
			switch tc.mode {
			case "compat":
				if p := c.LivenessProbe.HTTPGet.Port.String(); p != values["HEALTH_PORT"] {
					t.Errorf("Liveness probe port %s, want %s", p, values["HEALTH_PORT"])
				}
				args := strings.Join(c.Args, " ")
				for _, want := range []string{"-localip " + values["LOCAL_DNS_IP"] + "," + values["KUBE_DNS_IP"], "-health-port " + values["HEALTH_PORT"]} {
					if !strings.Contains(args, want) {
						t.Errorf("Args %q lack %q", args, want)
					}
				}
			case "cilium":
				var ips []string
				for _, p := range r.LocalRedirectPolicies {
					if m := p.Spec.RedirectFrontend.AddressMatcher; m != nil {
						ips = append(ips, m.IP)
					}
				}
				if !slices.Contains(ips, values["LOCAL_DNS_IP"]) {
					t.Errorf("Redirect policies' addresses %v, want %s among them", ips, values["LOCAL_DNS_IP"])
				}
			default:
				if p := c.LivenessProbe.HTTPGet.Port.String(); p != values["HEALTH_PORT"] {
					t.Errorf("Liveness probe port %s, want %s", p, values["HEALTH_PORT"])
				}
			}
		})
	}
}

func write(t *testing.T, path, text string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}
