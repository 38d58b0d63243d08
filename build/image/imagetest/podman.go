// Package imagetest runs the project's container image the way the kubelet
// runs the rendered DaemonSet: PodmanArgs turns the pod spec into a podman
// command line (the test never writes one by hand), Materialize lays out the
// pod's volumes as files, and the tests check the built images against the
// Dockerfile and run every overlay's pod spec in the node lab.
package imagetest

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strconv"

	corev1 "k8s.io/api/core/v1"
)

// Pod is what the kubelet has at hand when it starts the cache's container:
// the pod spec, the environment it computed (envFrom, env, service links),
// where each volume's content is on the node, and the pod's network
// namespace with its IP.
type Pod struct {
	Name    string
	Spec    *corev1.PodSpec
	Env     map[string]string
	Volumes map[string]string // volume name → path on the node (a ConfigMap's files, a hostPath)
	// Netns is the path of the network namespace the container joins: the
	// node's for a hostNetwork pod, else the pod's own (its sandbox).
	Netns string
	// PodIP is status.podIP, which the downward API gives the container's
	// env (fieldRef): the pod's address, or the node's with hostNetwork.
	PodIP string
	// ResolvConf is the node's resolv.conf, mounted at /etc/resolv.conf for
	// dnsPolicy Default, as the kubelet does.
	ResolvConf string
}

// PodmanArgs returns the arguments of `podman run` (after "run") that start
// the pod's one container as the kubelet would: image, command and args, the
// environment, the volume mounts, the capabilities (drop, then add), a
// read-only root, no privilege escalation, the user, the memory limit and
// CPU shares, the termination grace period, in the pod's network namespace
// (the node's with hostNetwork), the downward API's status.podIP in the env.
// Fields the kubelet would honour and this cannot express are an error.
func PodmanArgs(p Pod) ([]string, error) {
	s := p.Spec
	if s == nil || len(s.Containers) != 1 {
		return nil, fmt.Errorf("pod %s: want one container", p.Name)
	}
	if len(s.InitContainers) > 0 {
		return nil, fmt.Errorf("pod %s: init containers are not supported", p.Name)
	}
	if p.Netns == "" {
		return nil, fmt.Errorf("pod %s: no network namespace", p.Name)
	}
	c := s.Containers[0]
	if c.Image == "" {
		return nil, fmt.Errorf("pod %s: container %s has no image", p.Name, c.Name)
	}
	if c.Lifecycle != nil {
		return nil, fmt.Errorf("pod %s: container %s: lifecycle hooks are not supported", p.Name, c.Name)
	}
	args := []string{"--detach", "--name", p.Name, "--network", "ns:" + p.Netns}

	if len(c.Command) > 0 {
		// The kubelet's command replaces the image's ENTRYPOINT (and with it CMD).
		ep, err := json.Marshal(c.Command)
		if err != nil {
			return nil, err
		}
		args = append(args, "--entrypoint", string(ep))
	}

	sc := c.SecurityContext
	if sc == nil {
		sc = &corev1.SecurityContext{}
	}
	if sc.Privileged != nil && *sc.Privileged {
		args = append(args, "--privileged")
	}
	if caps := sc.Capabilities; caps != nil {
		for _, d := range caps.Drop {
			args = append(args, "--cap-drop", string(d))
		}
		for _, a := range caps.Add {
			args = append(args, "--cap-add", string(a))
		}
	}
	if sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem {
		// podman would add tmpfs on /run, /tmp and /var/tmp; the kubelet does not.
		args = append(args, "--read-only", "--read-only-tmpfs=false")
	}
	if sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation {
		args = append(args, "--security-opt", "no-new-privileges")
	}
	user, err := runAs(sc, s.SecurityContext)
	if err != nil {
		return nil, fmt.Errorf("pod %s: %w", p.Name, err)
	}
	if user != "" {
		args = append(args, "--user", user)
	}
	switch seccomp(sc, s.SecurityContext) {
	case corev1.SeccompProfileTypeRuntimeDefault: // podman's default profile
	case corev1.SeccompProfileTypeUnconfined:
		args = append(args, "--security-opt", "seccomp=unconfined")
	default:
		return nil, fmt.Errorf("pod %s: only RuntimeDefault and Unconfined seccomp profiles are supported", p.Name)
	}
	if sc.SELinuxOptions != nil || sc.AppArmorProfile != nil || sc.ProcMount != nil {
		return nil, fmt.Errorf("pod %s: seLinuxOptions, appArmorProfile and procMount are not supported", p.Name)
	}

	if m, ok := c.Resources.Limits[corev1.ResourceMemory]; ok {
		args = append(args, "--memory", strconv.FormatInt(m.Value(), 10))
	}
	if cpu, ok := c.Resources.Requests[corev1.ResourceCPU]; ok {
		// The kubelet's cpu.shares for a request: millicores * 1024 / 1000, at least 2.
		shares := max(cpu.MilliValue()*1024/1000, 2)
		args = append(args, "--cpu-shares", strconv.FormatInt(shares, 10))
	}
	if g := s.TerminationGracePeriodSeconds; g != nil {
		args = append(args, "--stop-timeout", strconv.FormatInt(*g, 10))
	}

	env, err := downwardEnv(p, &c)
	if err != nil {
		return nil, fmt.Errorf("pod %s: %w", p.Name, err)
	}
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		args = append(args, "--env", k+"="+env[k])
	}

	volumes := map[string]corev1.Volume{}
	for _, v := range s.Volumes {
		volumes[v.Name] = v
	}
	readOnlyRoot := sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem
	if s.DNSPolicy == corev1.DNSDefault {
		if p.ResolvConf == "" {
			return nil, fmt.Errorf("pod %s: dnsPolicy Default needs the node's resolv.conf", p.Name)
		}
		args = append(args, "--volume", mount(p.ResolvConf, "/etc/resolv.conf", readOnlyRoot))
	}
	for _, vm := range c.VolumeMounts {
		if vm.SubPath != "" || vm.SubPathExpr != "" {
			return nil, fmt.Errorf("pod %s: volume mount %s: subPath is not supported", p.Name, vm.Name)
		}
		if _, ok := volumes[vm.Name]; !ok {
			return nil, fmt.Errorf("pod %s: volume mount %s names no volume of the pod", p.Name, vm.Name)
		}
		src, ok := p.Volumes[vm.Name]
		if !ok {
			return nil, fmt.Errorf("pod %s: volume %s has no content on the node", p.Name, vm.Name)
		}
		// A ConfigMap volume is always read-only in the container.
		ro := vm.ReadOnly || volumes[vm.Name].ConfigMap != nil
		args = append(args, "--volume", mount(src, vm.MountPath, ro))
	}

	args = append(args, c.Image)
	if len(c.Command) > 0 && len(c.Args) == 0 {
		// A command without args drops the image's CMD; podman's --entrypoint
		// already does.
		return args, nil
	}
	return append(args, c.Args...), nil
}

// downwardEnv is p.Env with the container's env entries that take their
// value from the pod's own fields (valueFrom fieldRef) filled in, as the
// kubelet fills them; like every container env entry they win over envFrom.
// Other sources (configMapKeyRef, secretKeyRef, resourceFieldRef) and fields
// this does not know are an error, never an empty value.
func downwardEnv(p Pod, c *corev1.Container) (map[string]string, error) {
	env := make(map[string]string, len(p.Env))
	for k, v := range p.Env {
		env[k] = v
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			continue
		}
		f := e.ValueFrom.FieldRef
		if f == nil {
			return nil, fmt.Errorf("env %s: only valueFrom fieldRef is supported", e.Name)
		}
		switch f.FieldPath {
		case "status.podIP", "status.podIPs":
			if p.PodIP == "" {
				return nil, fmt.Errorf("env %s: fieldRef %s needs the pod's IP", e.Name, f.FieldPath)
			}
			env[e.Name] = p.PodIP
		default:
			return nil, fmt.Errorf("env %s: fieldRef %q is not supported", e.Name, f.FieldPath)
		}
	}
	return env, nil
}

func mount(src, dst string, ro bool) string {
	if ro {
		return src + ":" + dst + ":ro"
	}
	return src + ":" + dst
}

// runAs is the --user value: the container's runAsUser and runAsGroup, else
// the pod's; empty when neither sets a user (the image's USER applies).
func runAs(sc *corev1.SecurityContext, psc *corev1.PodSecurityContext) (string, error) {
	var uid, gid *int64
	if psc != nil {
		uid, gid = psc.RunAsUser, psc.RunAsGroup
	}
	if sc.RunAsUser != nil {
		uid = sc.RunAsUser
	}
	if sc.RunAsGroup != nil {
		gid = sc.RunAsGroup
	}
	nonRoot := sc.RunAsNonRoot
	if nonRoot == nil && psc != nil {
		nonRoot = psc.RunAsNonRoot
	}
	if nonRoot != nil && *nonRoot && uid != nil && *uid == 0 {
		return "", fmt.Errorf("runAsNonRoot with runAsUser 0: the kubelet refuses to start it")
	}
	switch {
	case uid == nil && gid == nil:
		return "", nil
	case uid == nil:
		return "", fmt.Errorf("runAsGroup without runAsUser is not supported")
	case gid == nil:
		return strconv.FormatInt(*uid, 10), nil
	}
	return strconv.FormatInt(*uid, 10) + ":" + strconv.FormatInt(*gid, 10), nil
}

// seccomp is the container's seccomp profile type, else the pod's;
// Unconfined when neither says (the kubelet's default without
// seccompDefault: true).
func seccomp(sc *corev1.SecurityContext, psc *corev1.PodSecurityContext) corev1.SeccompProfileType {
	if sc.SeccompProfile != nil {
		return sc.SeccompProfile.Type
	}
	if psc != nil && psc.SeccompProfile != nil {
		return psc.SeccompProfile.Type
	}
	return corev1.SeccompProfileTypeUnconfined
}

// Capabilities returns the capabilities the container adds, in the order the
// spec lists them.
func Capabilities(c *corev1.Container) []corev1.Capability {
	if c.SecurityContext == nil || c.SecurityContext.Capabilities == nil {
		return nil
	}
	return slices.Clone(c.SecurityContext.Capabilities.Add)
}
