// Package manifests renders the project's Kubernetes manifests and decodes
// every object strictly into the Kubernetes API types, as the API server's
// strict field validation would. The deploy tests, the Helm chart's tests and
// the image test read the pod spec they check or run from here, never from a
// hand-written copy.
package manifests

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	yamlutil "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/json"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// Objects is one rendering (a kustomize overlay or a Helm release), decoded.
type Objects struct {
	DaemonSet      *appsv1.DaemonSet
	Services       map[string]*corev1.Service
	ConfigMaps     map[string]*corev1.ConfigMap
	ServiceAccount *corev1.ServiceAccount
	ServiceMonitor *ServiceMonitor
	PrometheusRule *PrometheusRule
	// LocalRedirectPolicies are Cilium mode's CiliumLocalRedirectPolicy objects, by name.
	LocalRedirectPolicies map[string]*LocalRedirectPolicy
	// All names every object as "Kind namespace/name", in rendering order.
	All []Ref
}

// Ref names one rendered object.
type Ref struct{ APIVersion, Kind, Namespace, Name string }

func (r Ref) String() string { return fmt.Sprintf("%s %s/%s", r.Kind, r.Namespace, r.Name) }

// ServiceMonitor is the part of monitoring.coreos.com/v1 ServiceMonitor the
// project writes: a field not here fails the strict decode.
type ServiceMonitor struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	ObjectMeta ObjectMeta `json:"metadata"`
	Spec       struct {
		JobLabel string `json:"jobLabel"`
		Selector struct {
			MatchLabels map[string]string `json:"matchLabels"`
		} `json:"selector"`
		NamespaceSelector struct {
			MatchNames []string `json:"matchNames"`
		} `json:"namespaceSelector"`
		Endpoints []struct {
			Port              string    `json:"port"`
			Interval          string    `json:"interval"`
			ScrapeTimeout     string    `json:"scrapeTimeout,omitempty"`
			HonorLabels       bool      `json:"honorLabels,omitempty"`
			Relabelings       []Relabel `json:"relabelings"`
			MetricRelabelings []Relabel `json:"metricRelabelings,omitempty"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// Relabel is a Prometheus relabel_config as the Prometheus Operator takes it.
type Relabel struct {
	SourceLabels []string `json:"sourceLabels,omitempty"`
	Separator    string   `json:"separator,omitempty"`
	TargetLabel  string   `json:"targetLabel,omitempty"`
	Regex        string   `json:"regex,omitempty"`
	Modulus      uint64   `json:"modulus,omitempty"`
	Replacement  *string  `json:"replacement,omitempty"`
	Action       string   `json:"action,omitempty"`
}

// LocalRedirectPolicy is the part of cilium.io/v2 CiliumLocalRedirectPolicy the
// project writes: a field not here fails the strict decode.
type LocalRedirectPolicy struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	ObjectMeta ObjectMeta `json:"metadata"`
	Spec       struct {
		RedirectFrontend struct {
			ServiceMatcher *struct {
				ServiceName string    `json:"serviceName"`
				Namespace   string    `json:"namespace"`
				ToPorts     []LRPPort `json:"toPorts,omitempty"`
			} `json:"serviceMatcher,omitempty"`
			AddressMatcher *struct {
				IP      string    `json:"ip"`
				ToPorts []LRPPort `json:"toPorts"`
			} `json:"addressMatcher,omitempty"`
		} `json:"redirectFrontend"`
		RedirectBackend struct {
			LocalEndpointSelector struct {
				MatchLabels map[string]string `json:"matchLabels"`
			} `json:"localEndpointSelector"`
			ToPorts []LRPPort `json:"toPorts"`
		} `json:"redirectBackend"`
		SkipRedirectFromBackend bool `json:"skipRedirectFromBackend"`
	} `json:"spec"`
}

// LRPPort is a port of a CiliumLocalRedirectPolicy frontend or backend.
type LRPPort struct {
	Port     string `json:"port"`
	Name     string `json:"name"`
	Protocol string `json:"protocol"`
}

// PrometheusRule is the part of monitoring.coreos.com/v1 PrometheusRule the
// project writes.
type PrometheusRule struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	ObjectMeta ObjectMeta `json:"metadata"`
	Spec       struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Alert       string            `json:"alert"`
				Expr        string            `json:"expr"`
				For         string            `json:"for"`
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
			} `json:"rules"`
		} `json:"groups"`
	} `json:"spec"`
}

// ObjectMeta is the metadata the monitoring objects carry.
type ObjectMeta struct {
	Name      string            `json:"name"`
	Namespace string            `json:"namespace"`
	Labels    map[string]string `json:"labels"`
}

// Render runs kustomize on dir and decodes every object.
func Render(dir string) (*Objects, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	out := newObjects()
	var errs []error
	for _, r := range m.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", dir, err)
		}
		errs = append(errs, out.add(dir, y))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, out.complete(dir)
}

// Decode decodes a stream of YAML documents (`helm template` output, say);
// what names the source in errors.
func Decode(what string, stream []byte) (*Objects, error) {
	out := newObjects()
	r := yamlutil.NewYAMLReader(bufio.NewReader(bytes.NewReader(stream)))
	var errs []error
	for {
		doc, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		if len(bytes.TrimSpace(stripYAMLComments(doc))) == 0 {
			continue
		}
		errs = append(errs, out.add(what, doc))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, out.complete(what)
}

// stripYAMLComments drops comment and blank lines, so a document that holds
// only comments (as Helm renders for a disabled template) counts as empty.
func stripYAMLComments(doc []byte) []byte {
	var b bytes.Buffer
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if t := bytes.TrimSpace(line); len(t) == 0 || t[0] == '#' {
			continue
		}
		b.Write(line)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

func newObjects() *Objects {
	return &Objects{Services: map[string]*corev1.Service{}, ConfigMaps: map[string]*corev1.ConfigMap{}, LocalRedirectPolicies: map[string]*LocalRedirectPolicy{}}
}

// add decodes one YAML document strictly into its API type.
func (o *Objects) add(src string, y []byte) error {
	j, err := yaml.YAMLToJSON(y)
	if err != nil {
		return fmt.Errorf("%s: %w", src, err)
	}
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"metadata"`
	}
	if err := json.UnmarshalCaseSensitivePreserveInts(j, &head); err != nil {
		return fmt.Errorf("%s: %w", src, err)
	}
	ref := Ref{head.APIVersion, head.Kind, head.Metadata.Namespace, head.Metadata.Name}
	o.All = append(o.All, ref)
	what := src + ": " + ref.String()
	switch head.APIVersion + " " + head.Kind {
	case "apps/v1 DaemonSet":
		if o.DaemonSet != nil {
			return fmt.Errorf("%s: more than one DaemonSet", src)
		}
		o.DaemonSet = &appsv1.DaemonSet{}
		return StrictDecode(what, j, o.DaemonSet)
	case "v1 Service":
		s := &corev1.Service{}
		o.Services[ref.Name] = s
		return StrictDecode(what, j, s)
	case "v1 ConfigMap":
		c := &corev1.ConfigMap{}
		o.ConfigMaps[ref.Name] = c
		return StrictDecode(what, j, c)
	case "v1 ServiceAccount":
		o.ServiceAccount = &corev1.ServiceAccount{}
		return StrictDecode(what, j, o.ServiceAccount)
	case "monitoring.coreos.com/v1 ServiceMonitor":
		o.ServiceMonitor = &ServiceMonitor{}
		return StrictDecode(what, j, o.ServiceMonitor)
	case "cilium.io/v2 CiliumLocalRedirectPolicy":
		p := &LocalRedirectPolicy{}
		o.LocalRedirectPolicies[ref.Name] = p
		return StrictDecode(what, j, p)
	case "monitoring.coreos.com/v1 PrometheusRule":
		o.PrometheusRule = &PrometheusRule{}
		return StrictDecode(what, j, o.PrometheusRule)
	}
	return fmt.Errorf("%s: unexpected object", what)
}

func (o *Objects) complete(src string) error {
	if o.DaemonSet == nil || o.ServiceAccount == nil {
		return fmt.Errorf("%s: no DaemonSet or ServiceAccount rendered", src)
	}
	return nil
}

// StrictDecode decodes JSON into v, failing on unknown or duplicate fields
// and on case mismatches, as the API server's strict field validation does.
func StrictDecode(what string, data []byte, v any) error {
	strictErrs, err := json.UnmarshalStrict(data, v)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	var errs []error
	for _, e := range strictErrs {
		errs = append(errs, fmt.Errorf("%s: strict decoding: %w", what, e))
	}
	return errors.Join(errs...)
}

// ConfigMapNamed returns the ConfigMap whose name is prefix, or prefix plus
// kustomize's hash suffix (the params ConfigMap aside).
func (o *Objects) ConfigMapNamed(prefix string) (*corev1.ConfigMap, error) {
	if c, ok := o.ConfigMaps[prefix]; ok {
		return c, nil
	}
	var found *corev1.ConfigMap
	for name, c := range o.ConfigMaps {
		if strings.HasPrefix(name, prefix+"-") && !strings.HasPrefix(strings.TrimPrefix(name, prefix+"-"), "params") {
			if found != nil {
				return nil, fmt.Errorf("two ConfigMaps named %s-*", prefix)
			}
			found = c
		}
	}
	if found == nil {
		return nil, fmt.Errorf("no ConfigMap %s-<hash> rendered", prefix)
	}
	return found, nil
}

// Container returns the DaemonSet's one container, node-cache.
func (o *Objects) Container() (*corev1.Container, error) {
	cs := o.DaemonSet.Spec.Template.Spec.Containers
	if len(cs) != 1 || cs[0].Name != "node-cache" {
		return nil, fmt.Errorf("want one container node-cache, got %d", len(cs))
	}
	return &cs[0], nil
}

// PodEnv is the environment the cache process sees: every ConfigMap named in
// envFrom, the container's env, and the kubelet's service variables given
// in kubelet (KUBE_DNS_UPSTREAM_SERVICE_HOST, say). Env entries with a
// valueFrom (the downward API's POD_IP in Cilium mode) are left out: their
// value is the running pod's, so the caller supplies it, in kubelet or as
// imagetest.PodmanArgs does from the pod's IP.
func (o *Objects) PodEnv(kubelet map[string]string) (map[string]string, error) {
	env := map[string]string{}
	for k, v := range kubelet {
		env[k] = v
	}
	c, err := o.Container()
	if err != nil {
		return nil, err
	}
	for _, ef := range c.EnvFrom {
		if ef.ConfigMapRef == nil {
			return nil, fmt.Errorf("envFrom without configMapRef")
		}
		cm, ok := o.ConfigMaps[ef.ConfigMapRef.Name]
		if !ok {
			return nil, fmt.Errorf("envFrom names ConfigMap %q, which is not rendered", ef.ConfigMapRef.Name)
		}
		for k, v := range cm.Data {
			env[k] = v
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom != nil {
			continue
		}
		env[e.Name] = e.Value
	}
	return env, nil
}
