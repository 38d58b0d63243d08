package imagetest

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/nodelocaldns/nodelocaldns/internal/manifests"

	corev1 "k8s.io/api/core/v1"
)

// Materialize lays out the content of every volume of the rendered pod under
// dir, as the kubelet does on a node: a ConfigMap volume becomes a directory
// holding its items (every key when items is empty; an empty directory for a
// missing optional ConfigMap), and a hostPath becomes dir/host/<path>,
// created per its type (FileOrCreate, DirectoryOrCreate). hostPaths live
// under dir rather than at the real path so that a test run shares no state
// (the statedir, the xtables lock) with other processes on the machine. It
// returns volume name → path, for Pod.Volumes.
func Materialize(objs *manifests.Objects, dir string) (map[string]string, error) {
	out := map[string]string{}
	for _, v := range objs.DaemonSet.Spec.Template.Spec.Volumes {
		switch {
		case v.ConfigMap != nil:
			p := filepath.Join(dir, "configmap", v.Name)
			if err := os.MkdirAll(p, 0o755); err != nil {
				return nil, err
			}
			cm, ok := objs.ConfigMaps[v.ConfigMap.Name]
			if !ok {
				if v.ConfigMap.Optional != nil && *v.ConfigMap.Optional {
					out[v.Name] = p
					continue
				}
				return nil, fmt.Errorf("volume %s: ConfigMap %q is not rendered and not optional", v.Name, v.ConfigMap.Name)
			}
			items := v.ConfigMap.Items
			if len(items) == 0 {
				for k := range cm.Data {
					items = append(items, corev1.KeyToPath{Key: k, Path: k})
				}
			}
			for _, it := range items {
				data, ok := cm.Data[it.Key]
				if !ok {
					return nil, fmt.Errorf("volume %s: ConfigMap %s has no key %q", v.Name, cm.Name, it.Key)
				}
				f := filepath.Join(p, it.Path)
				if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
					return nil, err
				}
				if err := os.WriteFile(f, []byte(data), 0o644); err != nil {
					return nil, fmt.Errorf("volume %s: %w", v.Name, err)
				}
			}
			out[v.Name] = p
		case v.HostPath != nil:
			p := filepath.Join(dir, "host", v.HostPath.Path)
			typ := corev1.HostPathUnset
			if v.HostPath.Type != nil {
				typ = *v.HostPath.Type
			}
			switch typ {
			case corev1.HostPathFileOrCreate:
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					return nil, err
				}
				f, err := os.OpenFile(p, os.O_CREATE|os.O_RDONLY, 0o644)
				if err != nil {
					return nil, fmt.Errorf("volume %s: %w", v.Name, err)
				}
				f.Close()
			case corev1.HostPathDirectoryOrCreate, corev1.HostPathUnset:
				if err := os.MkdirAll(p, 0o755); err != nil {
					return nil, fmt.Errorf("volume %s: %w", v.Name, err)
				}
			default:
				return nil, fmt.Errorf("volume %s: hostPath type %s is not supported", v.Name, typ)
			}
			out[v.Name] = p
		case v.EmptyDir != nil:
			p := filepath.Join(dir, "emptydir", v.Name)
			if err := os.MkdirAll(p, 0o755); err != nil {
				return nil, err
			}
			out[v.Name] = p
		default:
			return nil, fmt.Errorf("volume %s: only configMap, hostPath and emptyDir volumes are supported", v.Name)
		}
	}
	return out, nil
}
