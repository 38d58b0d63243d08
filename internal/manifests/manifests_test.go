package manifests

import (
	"strings"
	"testing"
)

const stream = `# Source: chart/templates/disabled.yaml
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: node-local-dns
  namespace: kube-system
---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: node-local-dns
  namespace: kube-system
spec:
  selector:
    matchLabels: {k8s-app: node-local-dns}
  template:
    metadata:
      labels: {k8s-app: node-local-dns}
    spec:
      containers:
      - name: node-cache
        image: nodelocaldns:dev
        envFrom:
        - configMapRef: {name: params}
        env:
        - {name: A, value: "1"}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: params
  namespace: kube-system
data:
  LOCAL_DNS_IP: 169.254.20.10
`

func TestDecode(t *testing.T) {
	o, err := Decode("test", []byte(stream))
	if err != nil {
		t.Fatal(err)
	}
	if len(o.All) != 3 {
		t.Errorf("Decoded %d objects, want 3: %v", len(o.All), o.All)
	}
	env, err := o.PodEnv(map[string]string{"KUBE_DNS_UPSTREAM_SERVICE_HOST": "198.18.0.11"})
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{"A": "1", "LOCAL_DNS_IP": "169.254.20.10", "KUBE_DNS_UPSTREAM_SERVICE_HOST": "198.18.0.11"} {
		if env[k] != v {
			t.Errorf("Pod env %s = %q, want %q", k, env[k], v)
		}
	}
}

const lrp = `---
apiVersion: cilium.io/v2
kind: CiliumLocalRedirectPolicy
metadata: {name: node-local-dns, namespace: kube-system}
spec:
  redirectFrontend:
    serviceMatcher: {serviceName: kube-dns, namespace: kube-system}
  redirectBackend:
    localEndpointSelector:
      matchLabels: {k8s-app: node-local-dns}
    toPorts:
    - {port: "53", name: dns, protocol: UDP}
  skipRedirectFromBackend: true
`

func TestDecodeLocalRedirectPolicy(t *testing.T) {
	o, err := Decode("test", []byte(stream+lrp))
	if err != nil {
		t.Fatal(err)
	}
	p := o.LocalRedirectPolicies["node-local-dns"]
	if p == nil || p.Spec.RedirectFrontend.ServiceMatcher == nil || p.Spec.RedirectFrontend.ServiceMatcher.ServiceName != "kube-dns" ||
		!p.Spec.SkipRedirectFromBackend || len(p.Spec.RedirectBackend.ToPorts) != 1 {
		t.Errorf("Decoded policy %+v", p)
	}
	// A misspelt field fails, as the API server's strict validation would.
	bad := strings.Replace(lrp, "skipRedirectFromBackend", "skipRedirectFromBackends", 1)
	if _, err := Decode("test", []byte(stream+bad)); err == nil || !strings.Contains(err.Error(), "skipRedirectFromBackends") {
		t.Errorf("Decode of a misspelt policy field: %v, want an error naming it", err)
	}
}

func TestDecodeStrict(t *testing.T) {
	for _, tc := range []struct{ name, doc, want string }{
		{"unknown field", strings.Replace(stream, "image: nodelocaldns:dev", "image: nodelocaldns:dev\n        imagePullPolicyy: Always", 1), `unknown field "spec.template.spec.containers[0].imagePullPolicyy"`},
		{"unexpected kind", stream + "---\napiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: kube-system}\n", "Secret kube-system/s: unexpected object"},
		{"no DaemonSet", stream[:strings.Index(stream, "---\napiVersion: apps/v1")], "no DaemonSet"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode("test", []byte(tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Decode error %v, want one containing %q", err, tc.want)
			}
		})
	}
}
