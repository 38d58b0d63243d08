// Package cachesize sizes the node cache's cache blocks from the memory
// limit of its container, so that a full cache cannot outgrow its pod.
//
// The node Corefiles write the capacities as environment references:
//
//	cache {
//	    success {$NODELOCAL_CACHE_SUCCESS} 30
//	    denial {$NODELOCAL_CACHE_DENIAL} 5
//	}
//	cache 30 {
//	    success {$NODELOCAL_CACHE_OTHER}
//	    denial {$NODELOCAL_CACHE_OTHER}
//	}
//
// and the binary sets each variable the environment does not already set
// (SetEnv) before CoreDNS reads the Corefile. The rule (Compute):
//
//   - the limit is the container's cgroup memory limit (cgroup v2 memory.max,
//     v1 memory.limit_in_bytes, the lowest on the way from the process's
//     cgroup to the root), or NODELOCAL_MEMORY_LIMIT when set (bytes, or with
//     a Ki, Mi or Gi suffix);
//   - Reserve is kept for the process itself (about 22 MiB idle, plus
//     goroutines and buffers under load); half of the rest is the cache's
//     budget (the other half is the Go garbage collector's headroom);
//   - the budget divided by BytesPerEntry (RSS measured per cached answer,
//     rounded up) is the number of entries E; the cluster block gets E/2
//     success and E/4 denial entries, every other block E/32 of each;
//   - each capacity is rounded down to a multiple of 256 (CoreDNS's shards)
//     and kept between 1024 (CoreDNS's smallest cache) and 9984 (the
//     official node-cache template's size, the default without a limit).
package cachesize

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Environment variables the Corefiles reference and the binary sets.
const (
	EnvSuccess = "NODELOCAL_CACHE_SUCCESS" // success capacity of the cluster domain's cache
	EnvDenial  = "NODELOCAL_CACHE_DENIAL"  // denial capacity of the cluster domain's cache
	EnvOther   = "NODELOCAL_CACHE_OTHER"   // success and denial capacity of every other block's cache
	EnvLimit   = "NODELOCAL_MEMORY_LIMIT"  // overrides the cgroup limit: bytes, or 200Mi, 1Gi, ...
)

// The constants of the rule.
const (
	Reserve       = 40 << 20 // bytes kept for the process besides its caches
	BytesPerEntry = 2048     // RSS per cached answer, measured and rounded up (see the README)
	MaxCapacity   = 9984     // 256 shards × 39: node-cache's template, the size without a limit
	MinCapacity   = 1024     // CoreDNS's smallest cache: 256 shards × 4
)

// Sizes are the capacities of the node's caches.
type Sizes struct {
	Success int   // cluster domain, success
	Denial  int   // cluster domain, denial
	Other   int   // every other block, success and denial each
	Limit   int64 // the memory limit they come from; 0 for none
}

// Compute applies the rule to a memory limit in bytes (0 or less: none).
func Compute(limit int64) Sizes {
	if limit <= 0 {
		return Sizes{Success: MaxCapacity, Denial: MaxCapacity, Other: MaxCapacity}
	}
	budget := max(limit-Reserve, 0) / 2
	entries := budget / BytesPerEntry
	return Sizes{
		Success: capacity(entries / 2),
		Denial:  capacity(entries / 4),
		Other:   capacity(entries / 32),
		Limit:   limit,
	}
}

func capacity(n int64) int {
	n = n / 256 * 256
	return int(min(max(n, MinCapacity), MaxCapacity))
}

// Entries is the most answers the caches of a Corefile hold whose cluster
// domain block has blocks other blocks beside it.
func (s Sizes) Entries(blocks int) int { return s.Success + s.Denial + 2*blocks*s.Other }

// Limit returns the memory limit the process runs under: NODELOCAL_MEMORY_LIMIT
// when set, else the cgroup's, read below root (normally /) from
// root/proc/self/cgroup and root/sys/fs/cgroup. It returns 0 when there is
// none, and says where the value came from.
func Limit(root string) (int64, string, error) {
	if v, ok := os.LookupEnv(EnvLimit); ok && v != "" {
		n, err := ParseBytes(v)
		if err != nil {
			return 0, "", fmt.Errorf("%s=%q: %w", EnvLimit, v, err)
		}
		return n, EnvLimit, nil
	}
	return cgroupLimit(root)
}

// cgroupLimit reads the memory limit of the process's cgroup: v2 (the
// unified hierarchy, line "0::PATH") or v1 (the memory controller's line).
// A container usually sees its own cgroup as the root of the mount; a
// process outside one sees the full path. The lowest limit from the
// process's cgroup up to the root applies.
func cgroupLimit(root string) (int64, string, error) {
	self := filepath.Join(root, "proc/self/cgroup")
	b, err := os.ReadFile(self)
	if err != nil {
		return 0, "", fmt.Errorf("read %s: %w", self, err)
	}
	mnt := filepath.Join(root, "sys/fs/cgroup")
	var dirs []string
	var file string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.SplitN(sc.Text(), ":", 3)
		if len(f) != 3 {
			continue
		}
		switch {
		case f[0] == "0" && f[1] == "":
			if _, err := os.Stat(filepath.Join(mnt, "cgroup.controllers")); err == nil {
				dirs, file = ancestors(mnt, f[2]), "memory.max"
			}
		case hasController(f[1], "memory"):
			dirs, file = ancestors(filepath.Join(mnt, "memory"), f[2]), "memory.limit_in_bytes"
		}
		if file == "memory.limit_in_bytes" {
			break // v1's memory controller wins over a v2 line of a hybrid host
		}
	}
	var limit int64
	var from string
	for _, d := range dirs {
		p := filepath.Join(d, file)
		v, err := os.ReadFile(p)
		if err != nil {
			continue // a container sees only part of the path
		}
		n, ok, err := parseLimit(strings.TrimSpace(string(v)))
		if err != nil {
			return 0, "", fmt.Errorf("read %s: %w", p, err)
		}
		if ok && (limit == 0 || n < limit) {
			limit, from = n, p
		}
	}
	return limit, from, nil
}

func hasController(list, name string) bool {
	for _, c := range strings.Split(list, ",") {
		if c == name {
			return true
		}
	}
	return false
}

// ancestors lists mnt/path and every directory above it up to mnt.
func ancestors(mnt, path string) []string {
	dirs := []string{}
	p := filepath.Clean("/" + path)
	for {
		dirs = append(dirs, filepath.Join(mnt, p))
		if p == "/" {
			return dirs
		}
		p = filepath.Dir(p)
	}
}

// parseLimit reads a cgroup limit: "max" (v2) and v1's page-rounded
// 2^63 mean none.
func parseLimit(v string) (int64, bool, error) {
	if v == "max" {
		return 0, false, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("memory limit %q is not a number", v)
	}
	if n <= 0 || n >= math.MaxInt64/2 {
		return 0, false, nil
	}
	return n, true, nil
}

// ParseBytes reads a byte count: a number, or one with a Ki, Mi or Gi
// suffix as Kubernetes writes them.
func ParseBytes(v string) (int64, error) {
	mult := int64(1)
	for suf, m := range map[string]int64{"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30} {
		if strings.HasSuffix(v, suf) {
			v, mult = strings.TrimSuffix(v, suf), m
			break
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a byte count (a number, or with Ki, Mi or Gi)", v+map[int64]string{1: "", 1 << 10: "Ki", 1 << 20: "Mi", 1 << 30: "Gi"}[mult])
	}
	return n * mult, nil
}

// SetEnv computes the sizes for the process's limit and sets each of
// EnvSuccess, EnvDenial and EnvOther the environment does not set yet
// (a value the operator sets wins). It returns the sizes it set and a line
// for the log.
func SetEnv() (Sizes, string, error) {
	limit, from, err := Limit("/")
	if err != nil {
		return Sizes{}, "", err
	}
	s := Compute(limit)
	for name, v := range map[string]int{EnvSuccess: s.Success, EnvDenial: s.Denial, EnvOther: s.Other} {
		if _, ok := os.LookupEnv(name); ok {
			continue
		}
		if err := os.Setenv(name, strconv.Itoa(v)); err != nil {
			return Sizes{}, "", fmt.Errorf("set %s: %w", name, err)
		}
	}
	msg := fmt.Sprintf("cache sizes: no memory limit, success %d, denial %d, other blocks %d each", s.Success, s.Denial, s.Other)
	if limit > 0 {
		msg = fmt.Sprintf("cache sizes for the memory limit of %d MiB (%s): success %d, denial %d, other blocks %d each",
			limit>>20, from, s.Success, s.Denial, s.Other)
	}
	return s, msg, nil
}
