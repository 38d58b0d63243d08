package cachesize

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCompute(t *testing.T) {
	tests := []struct {
		limit                  int64
		success, denial, other int
	}{
		{0, 9984, 9984, 9984},         // no limit: node-cache's sizes
		{-1, 9984, 9984, 9984},        //
		{1 << 30, 9984, 9984, 7680},   // 1 GiB: 251904 entries; the cluster block at full size
		{200 << 20, 9984, 9984, 1280}, // kubekey's 200 Mi: 80 MiB budget, 40960 entries
		{170 << 20, 9984, 8192, 1024}, // 33280 entries: denial 8320 rounded to 8192
		{64 << 20, 3072, 1536, 1024},  // 12 MiB budget, 6144 entries
		{30 << 20, 1024, 1024, 1024},  // below the reserve: CoreDNS's smallest caches
	}
	for _, tc := range tests {
		got := Compute(tc.limit)
		if got.Success != tc.success || got.Denial != tc.denial || got.Other != tc.other {
			t.Errorf("Compute(%d MiB) = %d/%d/%d, want %d/%d/%d", tc.limit>>20, got.Success, got.Denial, got.Other, tc.success, tc.denial, tc.other)
		}
		for _, c := range []int{got.Success, got.Denial, got.Other} {
			if c%256 != 0 {
				t.Errorf("Compute(%d): capacity %d is not a multiple of 256 shards", tc.limit, c)
			}
		}
	}
}

// TestComputeFits: from the limit where the minimum sizes fit, the caches
// of a four-block Corefile fit the budget at the measured bytes per entry.
func TestComputeFits(t *testing.T) {
	for mib := int64(100); mib <= 4096; mib += 12 {
		s := Compute(mib << 20)
		if s.Other > MinCapacity { // the minimums are a floor, not a fit
			continue
		}
		bytes := int64(s.Entries(3)) * BytesPerEntry
		if s.Success < MaxCapacity && bytes > ((mib<<20)-Reserve)/2+int64(6*MinCapacity)*BytesPerEntry {
			t.Errorf("%d MiB: %d entries take %d MiB, more than half of what the reserve leaves", mib, s.Entries(3), bytes>>20)
		}
	}
}

func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for p, body := range files {
		p = filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestLimitCgroup(t *testing.T) {
	t.Setenv(EnvLimit, "")
	tests := []struct {
		name  string
		files map[string]string
		want  int64
		from  string
	}{
		{"v2 in a container (own cgroup at the mount root)", map[string]string{
			"proc/self/cgroup":                 "0::/\n",
			"sys/fs/cgroup/cgroup.controllers": "cpu memory\n",
			"sys/fs/cgroup/memory.max":         "209715200\n",
		}, 200 << 20, "sys/fs/cgroup/memory.max"},
		{"v2 without a limit", map[string]string{
			"proc/self/cgroup":                 "0::/\n",
			"sys/fs/cgroup/cgroup.controllers": "cpu memory\n",
			"sys/fs/cgroup/memory.max":         "max\n",
		}, 0, ""},
		{"v2 on the host: the pod's limit above the container's", map[string]string{
			"proc/self/cgroup":                           "0::/kubepods/pod1/ctr\n",
			"sys/fs/cgroup/cgroup.controllers":           "cpu memory\n",
			"sys/fs/cgroup/kubepods/pod1/ctr/memory.max": "max\n",
			"sys/fs/cgroup/kubepods/pod1/memory.max":     "134217728\n",
			"sys/fs/cgroup/kubepods/memory.max":          "8589934592\n",
		}, 128 << 20, "sys/fs/cgroup/kubepods/pod1/memory.max"},
		{"v1", map[string]string{
			"proc/self/cgroup":                                         "4:memory:/kubepods/pod2\n1:cpu,cpuacct:/kubepods/pod2\n",
			"sys/fs/cgroup/memory/memory.limit_in_bytes":               "9223372036854771712\n",
			"sys/fs/cgroup/memory/kubepods/pod2/memory.limit_in_bytes": "104857600\n",
		}, 100 << 20, "sys/fs/cgroup/memory/kubepods/pod2/memory.limit_in_bytes"},
		{"v1 without a limit (page-rounded 2^63)", map[string]string{
			"proc/self/cgroup":                           "4:memory:/\n",
			"sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n",
		}, 0, ""},
		{"hybrid: v1 memory controller, empty unified line", map[string]string{
			"proc/self/cgroup":                           "4:memory:/\n0::/\n",
			"sys/fs/cgroup/memory/memory.limit_in_bytes": "67108864\n",
		}, 64 << 20, "sys/fs/cgroup/memory/memory.limit_in_bytes"},
		{"no cgroup files", map[string]string{"proc/self/cgroup": "0::/\n"}, 0, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := writeTree(t, tc.files)
			got, from, err := Limit(root)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("Limit = %d, want %d", got, tc.want)
			}
			if tc.from != "" && from != filepath.Join(root, tc.from) {
				t.Errorf("Limit read %s, want %s", from, tc.from)
			}
		})
	}
}

func TestLimitBadFile(t *testing.T) {
	t.Setenv(EnvLimit, "")
	root := writeTree(t, map[string]string{
		"proc/self/cgroup":                 "0::/\n",
		"sys/fs/cgroup/cgroup.controllers": "memory\n",
		"sys/fs/cgroup/memory.max":         "lots\n",
	})
	_, _, err := Limit(root)
	if err == nil || !strings.Contains(err.Error(), "memory.max") || !strings.Contains(err.Error(), `"lots"`) {
		t.Errorf("Expected an error naming the file and the value, got %v", err)
	}
}

func TestLimitEnv(t *testing.T) {
	root := writeTree(t, map[string]string{
		"proc/self/cgroup":                 "0::/\n",
		"sys/fs/cgroup/cgroup.controllers": "memory\n",
		"sys/fs/cgroup/memory.max":         "1073741824\n",
	})
	for v, want := range map[string]int64{"100Mi": 100 << 20, "2Gi": 2 << 30, "65536": 65536, "512Ki": 512 << 10} {
		t.Setenv(EnvLimit, v)
		got, from, err := Limit(root)
		if err != nil || got != want || from != EnvLimit {
			t.Errorf("%s=%s: Limit = %d from %q (%v), want %d from the env", EnvLimit, v, got, from, err, want)
		}
	}
	t.Setenv(EnvLimit, "100MB")
	if _, _, err := Limit(root); err == nil || !strings.Contains(err.Error(), EnvLimit) || !strings.Contains(err.Error(), "100MB") {
		t.Errorf("Expected an error naming %s and the value, got %v", EnvLimit, err)
	}
}

// TestSetEnv: a limit given by env sets the three variables the Corefiles
// use, and a capacity the operator set stays.
func TestSetEnv(t *testing.T) {
	t.Setenv(EnvLimit, "64Mi")
	t.Setenv(EnvSuccess, "")
	os.Unsetenv(EnvSuccess)
	t.Setenv(EnvDenial, "")
	os.Unsetenv(EnvDenial)
	t.Setenv(EnvOther, "2048")
	s, msg, err := SetEnv()
	if err != nil {
		t.Fatal(err)
	}
	if got := os.Getenv(EnvSuccess); got != "3072" || s.Success != 3072 {
		t.Errorf("%s = %q, want 3072 for a 64 MiB limit", EnvSuccess, got)
	}
	if got := os.Getenv(EnvDenial); got != "1536" {
		t.Errorf("%s = %q, want 1536", EnvDenial, got)
	}
	if got := os.Getenv(EnvOther); got != "2048" {
		t.Errorf("%s = %q, want the operator's 2048 kept", EnvOther, got)
	}
	if !strings.Contains(msg, "64 MiB") || !strings.Contains(msg, EnvLimit) {
		t.Errorf("Log line %q does not say the limit and where it came from", msg)
	}
}
