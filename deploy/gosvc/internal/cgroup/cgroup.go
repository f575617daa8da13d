// Package cgroup reads CFS bandwidth-control statistics (quota, periods,
// throttling) of the cgroup the current process is in, for cgroup v1 and v2.
//
// It re-reads /proc/self/cgroup on every call because a local chaos backend
// may move the running process into a quota-limited cgroup at any time.
package cgroup

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// CPUStats are the CFS counters of one cgroup.
type CPUStats struct {
	Version          int     // 1 or 2
	Dir              string  // the cgroup directory read
	Periods          uint64  // enforcement intervals that elapsed with runnable tasks
	ThrottledPeriods uint64  // of those, intervals in which the group was throttled
	ThrottledSeconds float64 // total time throttled
	QuotaCores       float64 // quota/period, or -1 when unlimited
}

// ReadCPU returns the CFS statistics of the calling process's cpu cgroup.
// root is the filesystem root ("/" normally; a fake tree in tests). ok is false
// when no readable cpu.stat with throttling counters exists.
func ReadCPU(root string) (CPUStats, bool) {
	v1path, v2path, has1, has2 := selfCgroup(filepath.Join(root, "proc/self/cgroup"))
	if has1 {
		for _, dir := range v1Dirs(root, v1path) {
			if s, ok := readV1(dir); ok {
				return s, true
			}
		}
	}
	if has2 {
		for _, base := range []string{"sys/fs/cgroup", "sys/fs/cgroup/unified"} {
			for _, dir := range []string{filepath.Join(root, base, v2path), filepath.Join(root, base)} {
				if s, ok := readV2(dir); ok {
					return s, true
				}
			}
		}
	}
	return CPUStats{}, false
}

// selfCgroup parses /proc/self/cgroup lines "id:controllers:path".
func selfCgroup(file string) (v1path, v2path string, has1, has2 bool) {
	f, err := os.Open(file)
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[0] == "0" && parts[1] == "" {
			v2path, has2 = parts[2], true
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == "cpu" {
				v1path, has1 = parts[2], true
			}
		}
	}
	return
}

// v1Dirs lists candidate directories: the process's own cgroup under the
// usual mount points, then the mount root (inside a container the path in
// /proc/self/cgroup is often not visible, but the root is the container's).
func v1Dirs(root, path string) []string {
	var out []string
	for _, m := range []string{"cpu", "cpu,cpuacct", "cpuacct,cpu"} {
		out = append(out, filepath.Join(root, "sys/fs/cgroup", m, path))
	}
	for _, m := range []string{"cpu", "cpu,cpuacct", "cpuacct,cpu"} {
		out = append(out, filepath.Join(root, "sys/fs/cgroup", m))
	}
	return out
}

func readKV(file string) (map[string]uint64, bool) {
	f, err := os.Open(file)
	if err != nil {
		return nil, false
	}
	defer f.Close()
	kv := map[string]uint64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 2 {
			continue
		}
		if v, err := strconv.ParseUint(fields[1], 10, 64); err == nil {
			kv[fields[0]] = v
		}
	}
	return kv, sc.Err() == nil
}

func readInt(file string) (int64, bool) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, false
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return v, err == nil
}

func readV1(dir string) (CPUStats, bool) {
	kv, ok := readKV(filepath.Join(dir, "cpu.stat"))
	if !ok {
		return CPUStats{}, false
	}
	periods, ok1 := kv["nr_periods"]
	throttled, ok2 := kv["nr_throttled"]
	tns, ok3 := kv["throttled_time"]
	if !ok1 || !ok2 || !ok3 {
		return CPUStats{}, false
	}
	s := CPUStats{Version: 1, Dir: dir, Periods: periods, ThrottledPeriods: throttled,
		ThrottledSeconds: float64(tns) / 1e9, QuotaCores: -1}
	quota, okq := readInt(filepath.Join(dir, "cpu.cfs_quota_us"))
	period, okp := readInt(filepath.Join(dir, "cpu.cfs_period_us"))
	if okq && okp && quota > 0 && period > 0 {
		s.QuotaCores = float64(quota) / float64(period)
	}
	return s, true
}

func readV2(dir string) (CPUStats, bool) {
	kv, ok := readKV(filepath.Join(dir, "cpu.stat"))
	if !ok {
		return CPUStats{}, false
	}
	periods, ok1 := kv["nr_periods"]
	throttled, ok2 := kv["nr_throttled"]
	tus, ok3 := kv["throttled_usec"]
	if !ok1 || !ok2 || !ok3 {
		return CPUStats{}, false // cpu controller not enabled for this group
	}
	s := CPUStats{Version: 2, Dir: dir, Periods: periods, ThrottledPeriods: throttled,
		ThrottledSeconds: float64(tus) / 1e6, QuotaCores: -1}
	if b, err := os.ReadFile(filepath.Join(dir, "cpu.max")); err == nil {
		f := strings.Fields(string(b))
		if len(f) == 2 && f[0] != "max" {
			q, e1 := strconv.ParseFloat(f[0], 64)
			p, e2 := strconv.ParseFloat(f[1], 64)
			if e1 == nil && e2 == nil && q > 0 && p > 0 {
				s.QuotaCores = q / p
			}
		}
	}
	return s, true
}
