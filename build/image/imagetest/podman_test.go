package imagetest

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nodelocaldns/nodelocaldns/internal/manifests"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

func ptr[T any](v T) *T { return &v }

func TestPodmanArgs(t *testing.T) {
	base := func(mod func(*corev1.PodSpec)) *corev1.PodSpec {
		s := &corev1.PodSpec{
			HostNetwork: true,
			Containers:  []corev1.Container{{Name: "node-cache", Image: "img:1"}},
		}
		if mod != nil {
			mod(s)
		}
		return s
	}
	tests := []struct {
		name    string
		pod     Pod
		want    []string // expected arguments, in order, after the fixed prefix
		failing string   // part of the error
	}{
		{
			name: "args only: the image's entrypoint runs them",
			pod:  Pod{Spec: base(func(s *corev1.PodSpec) { s.Containers[0].Args = []string{"-conf", "/c"} })},
			want: []string{"--security-opt", "seccomp=unconfined", "img:1", "-conf", "/c"},
		},
		{
			name: "command replaces the entrypoint",
			pod: Pod{Spec: base(func(s *corev1.PodSpec) {
				s.Containers[0].Command = []string{"/node-cache"}
				s.Containers[0].Args = []string{"-localip", "169.254.20.10"}
			})},
			want: []string{"--entrypoint", `["/node-cache"]`, "--security-opt", "seccomp=unconfined", "img:1", "-localip", "169.254.20.10"},
		},
		{
			name: "security context, resources, grace period",
			pod: Pod{Spec: base(func(s *corev1.PodSpec) {
				s.TerminationGracePeriodSeconds = ptr(int64(30))
				c := &s.Containers[0]
				c.SecurityContext = &corev1.SecurityContext{
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}, Add: []corev1.Capability{"NET_ADMIN", "NET_RAW"}},
					ReadOnlyRootFilesystem:   ptr(true),
					AllowPrivilegeEscalation: ptr(false),
					RunAsUser:                ptr(int64(0)),
					SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
				}
				c.Resources = corev1.ResourceRequirements{
					Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")},
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("25m")},
				}
			})},
			want: []string{"--cap-drop", "ALL", "--cap-add", "NET_ADMIN", "--cap-add", "NET_RAW",
				"--read-only", "--read-only-tmpfs=false", "--security-opt", "no-new-privileges", "--user", "0",
				"--memory", "134217728", "--cpu-shares", "25", "--stop-timeout", "30", "img:1"},
		},
		{
			name: "no seccomp profile is unconfined, as the kubelet's default",
			pod:  Pod{Spec: base(nil)},
			want: []string{"--security-opt", "seccomp=unconfined", "img:1"},
		},
		{
			name: "env sorted, mounts, resolv.conf for dnsPolicy Default",
			pod: Pod{
				Spec: base(func(s *corev1.PodSpec) {
					s.DNSPolicy = corev1.DNSDefault
					s.Volumes = []corev1.Volume{
						{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{}}},
						{Name: "lock", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/run/xtables.lock"}}},
					}
					s.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "cfg", MountPath: "/etc/coredns"}, {Name: "lock", MountPath: "/run/xtables.lock"}}
				}),
				Env:        map[string]string{"B": "2", "A": "1"},
				Volumes:    map[string]string{"cfg": "/tmp/cfg", "lock": "/tmp/host/run/xtables.lock"},
				ResolvConf: "/etc/netns/node/resolv.conf",
			},
			want: []string{"--security-opt", "seccomp=unconfined", "--env", "A=1", "--env", "B=2",
				"--volume", "/etc/netns/node/resolv.conf:/etc/resolv.conf",
				"--volume", "/tmp/cfg:/etc/coredns:ro", // a ConfigMap is read-only
				"--volume", "/tmp/host/run/xtables.lock:/run/xtables.lock", "img:1"},
		},
		{
			name: "pod network: the pod's namespace, POD_IP from the downward API over envFrom's",
			pod: Pod{
				Spec: base(func(s *corev1.PodSpec) {
					s.HostNetwork = false
					s.Containers[0].Env = []corev1.EnvVar{
						{Name: "PLAIN", Value: "in Env already"},
						{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
					}
				}),
				Env:   map[string]string{"PLAIN": "p", "POD_IP": "from envFrom"},
				Netns: "/run/netns/cachepod",
				PodIP: "198.18.8.2",
			},
			want: []string{"--security-opt", "seccomp=unconfined", "--env", "PLAIN=p", "--env", "POD_IP=198.18.8.2", "img:1"},
		},
		{
			name: "status.podIP without the pod's IP",
			pod: Pod{Spec: base(func(s *corev1.PodSpec) {
				s.HostNetwork = false
				s.Containers[0].Env = []corev1.EnvVar{{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}}}
			})},
			failing: "env POD_IP: fieldRef status.podIP needs the pod's IP",
		},
		{
			name: "a field the downward API has and this does not",
			pod: Pod{Spec: base(func(s *corev1.PodSpec) {
				s.Containers[0].Env = []corev1.EnvVar{{Name: "NODE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}}}
			}), PodIP: "198.18.8.2"},
			failing: `env NODE: fieldRef "spec.nodeName" is not supported`,
		},
		{
			name: "valueFrom a Secret",
			pod: Pod{Spec: base(func(s *corev1.PodSpec) {
				s.Containers[0].Env = []corev1.EnvVar{{Name: "K", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{Key: "k"}}}}
			})},
			failing: "env K: only valueFrom fieldRef is supported",
		},
		{
			name:    "no network namespace",
			pod:     Pod{Spec: base(func(s *corev1.PodSpec) { s.HostNetwork = false }), Netns: "-"},
			failing: "no network namespace",
		},
		{
			name: "subPath",
			pod: Pod{Spec: base(func(s *corev1.PodSpec) {
				s.Volumes = []corev1.Volume{{Name: "v", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
				s.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "v", MountPath: "/x", SubPath: "y"}}
			}), Volumes: map[string]string{"v": "/tmp/v"}},
			failing: "subPath is not supported",
		},
		{
			name: "a volume without content on the node",
			pod: Pod{Spec: base(func(s *corev1.PodSpec) {
				s.Volumes = []corev1.Volume{{Name: "v", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
				s.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "v", MountPath: "/x"}}
			})},
			failing: "volume v has no content on the node",
		},
		{
			name: "runAsNonRoot with uid 0",
			pod: Pod{Spec: base(func(s *corev1.PodSpec) {
				s.Containers[0].SecurityContext = &corev1.SecurityContext{RunAsUser: ptr(int64(0)), RunAsNonRoot: ptr(true)}
			})},
			failing: "runAsNonRoot with runAsUser 0",
		},
		{
			name:    "dnsPolicy Default without the node's resolv.conf",
			pod:     Pod{Spec: base(func(s *corev1.PodSpec) { s.DNSPolicy = corev1.DNSDefault })},
			failing: "needs the node's resolv.conf",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.pod.Name = "p"
			switch tc.pod.Netns {
			case "":
				tc.pod.Netns = "/run/netns/node"
			case "-":
				tc.pod.Netns = ""
			}
			prefix := []string{"--detach", "--name", "p", "--network", "ns:" + tc.pod.Netns}
			got, err := PodmanArgs(tc.pod)
			if tc.failing != "" {
				if err == nil || !strings.Contains(err.Error(), tc.failing) {
					t.Fatalf("Error %v, want one containing %q", err, tc.failing)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got[:len(prefix)], prefix) {
				t.Errorf("Args start %q, want %q", got[:len(prefix)], prefix)
			}
			if rest := got[len(prefix):]; !slices.Equal(rest, tc.want) {
				t.Errorf("Args\n%q\nwant\n%q", rest, tc.want)
			}
		})
	}
}

// TestPodmanArgsOverlays derives the command of every overlay's pod spec:
// each must be expressible, with the capabilities the manifest grants.
func TestPodmanArgsOverlays(t *testing.T) {
	root := repoRoot(t)
	for _, ov := range []string{"base", "overlays/iptables", "overlays/ipvs", "overlays/nftables", "overlays/dual-stack", "overlays/compat", "overlays/monitoring", "overlays/cilium"} {
		t.Run(ov, func(t *testing.T) {
			objs, err := manifests.Render(filepath.Join(root, "deploy", ov))
			if err != nil {
				t.Fatal(err)
			}
			ctr, err := objs.Container()
			if err != nil {
				t.Fatal(err)
			}
			vols, err := Materialize(objs, t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			env, err := objs.PodEnv(map[string]string{"KUBE_DNS_UPSTREAM_SERVICE_HOST": "198.18.0.11"})
			if err != nil {
				t.Fatal(err)
			}
			args, err := PodmanArgs(Pod{Name: "p", Spec: &objs.DaemonSet.Spec.Template.Spec, Env: env, Volumes: vols, Netns: "/run/netns/n", PodIP: "198.18.8.2", ResolvConf: "/etc/resolv.conf"})
			if err != nil {
				t.Fatal(err)
			}
			joined := strings.Join(args, " ")
			wants := []string{"--cap-drop ALL", "--read-only", "--security-opt no-new-privileges", "--user 0", "KUBE_DNS_UPSTREAM_SERVICE_HOST=198.18.0.11"}
			if ov == "overlays/cilium" {
				// The Corefile binds {$POD_IP}: without it the cache binds nothing.
				wants = append(wants, "--env POD_IP=198.18.8.2")
			}
			for _, want := range wants {
				if ov == "overlays/compat" && want == "--read-only" {
					continue // node-cache writes /etc/Corefile
				}
				if !strings.Contains(joined, want) {
					t.Errorf("Args lack %q: %s", want, joined)
				}
			}
			for _, c := range Capabilities(ctr) {
				if !strings.Contains(joined, "--cap-add "+string(c)) {
					t.Errorf("Args lack --cap-add %s", c)
				}
			}
			if ov == "overlays/compat" && strings.Contains(joined, "--read-only") {
				t.Errorf("compat mounts the root read-only; node-cache writes /etc/Corefile: %s", joined)
			}
			if i := slices.Index(args, ctr.Image); i < 0 || !slices.Equal(args[i+1:], ctr.Args) {
				t.Errorf("Args after the image %q, want the container's args %q", args, ctr.Args)
			}
		})
	}
}

// TestDockerfileStages checks what the local build reads from the Dockerfile.
func TestDockerfileStages(t *testing.T) {
	stages, err := ParseDockerfile(filepath.Join(repoRoot(t), "build/image/Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	rt, st := stages["runtime"], stages["static"]
	if rt == nil || st == nil {
		t.Fatalf("Stages %v, want runtime and static", stages)
	}
	for _, s := range []*Stage{rt, st} {
		if !slices.Equal(s.Entrypoint, []string{"/coredns"}) || s.User != "0:0" || len(s.Cmd) == 0 {
			t.Errorf("Stage %s: entrypoint %q user %q cmd %q", s.Name, s.Entrypoint, s.User, s.Cmd)
		}
		if !slices.Equal(s.Cmd, rt.Cmd) || !slices.Equal(s.Expose, rt.Expose) {
			t.Errorf("Stage %s: cmd %q expose %q differ from runtime's %q %q", s.Name, s.Cmd, s.Expose, rt.Cmd, rt.Expose)
		}
	}
	if !slices.Contains(rt.Packages, "iptables") || len(st.Packages) != 0 || st.From != "scratch" {
		t.Errorf("runtime packages %q, static packages %q from %q: want iptables in runtime, static from scratch with none", rt.Packages, st.Packages, st.From)
	}
}
