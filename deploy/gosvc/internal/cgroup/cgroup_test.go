package cgroup

import (
	"os"
	"path/filepath"
	"testing"
)

func write(t *testing.T, root, rel, content string) {
	t.Helper()
	p := filepath.Join(root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestV1WithQuota(t *testing.T) {
	root := t.TempDir()
	write(t, root, "proc/self/cgroup", "4:memory:/x\n2:cpuacct:/\n1:cpu:/rlctl/svc1\n0::/\n")
	write(t, root, "sys/fs/cgroup/cpu/rlctl/svc1/cpu.stat", "nr_periods 100\nnr_throttled 25\nthrottled_time 1500000000\n")
	write(t, root, "sys/fs/cgroup/cpu/rlctl/svc1/cpu.cfs_quota_us", "50000\n")
	write(t, root, "sys/fs/cgroup/cpu/rlctl/svc1/cpu.cfs_period_us", "100000\n")
	s, ok := ReadCPU(root)
	if !ok || s.Version != 1 || s.Periods != 100 || s.ThrottledPeriods != 25 || s.ThrottledSeconds != 1.5 || s.QuotaCores != 0.5 {
		t.Fatalf("got %+v ok=%v", s, ok)
	}
}

func TestV1CombinedMountUnlimitedFallsBackToRoot(t *testing.T) {
	root := t.TempDir()
	write(t, root, "proc/self/cgroup", "3:cpu,cpuacct:/not/visible/in/container\n")
	write(t, root, "sys/fs/cgroup/cpu,cpuacct/cpu.stat", "nr_periods 0\nnr_throttled 0\nthrottled_time 0\n")
	write(t, root, "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "-1\n")
	write(t, root, "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n")
	s, ok := ReadCPU(root)
	if !ok || s.QuotaCores != -1 || s.Version != 1 {
		t.Fatalf("got %+v ok=%v", s, ok)
	}
}

func TestV2(t *testing.T) {
	root := t.TempDir()
	write(t, root, "proc/self/cgroup", "0::/kubepods/pod1\n")
	write(t, root, "sys/fs/cgroup/kubepods/pod1/cpu.stat", "usage_usec 10\nnr_periods 40\nnr_throttled 4\nthrottled_usec 250000\n")
	write(t, root, "sys/fs/cgroup/kubepods/pod1/cpu.max", "200000 100000\n")
	s, ok := ReadCPU(root)
	if !ok || s.Version != 2 || s.Periods != 40 || s.ThrottledPeriods != 4 || s.ThrottledSeconds != 0.25 || s.QuotaCores != 2 {
		t.Fatalf("got %+v ok=%v", s, ok)
	}
}

func TestUnreadable(t *testing.T) {
	root := t.TempDir()
	write(t, root, "proc/self/cgroup", "0::/\n")
	write(t, root, "sys/fs/cgroup/cpu.stat", "usage_usec 10\n") // no cpu controller
	if s, ok := ReadCPU(root); ok {
		t.Fatalf("expected unreadable, got %+v", s)
	}
	if _, ok := ReadCPU(filepath.Join(root, "missing")); ok {
		t.Fatal("expected unreadable without /proc")
	}
}

// A replica of the local chaos backend on a cgroup v2 host: rlctl's leaf, no quota yet.
func TestV2RlctlLeafUnlimited(t *testing.T) {
	root := t.TempDir()
	write(t, root, "proc/self/cgroup", "0::/rlctl/run1/r0\n")
	write(t, root, "sys/fs/cgroup/rlctl/run1/r0/cpu.stat",
		"usage_usec 10\nuser_usec 8\nsystem_usec 2\nnr_periods 7\nnr_throttled 0\nthrottled_usec 0\nnr_bursts 0\nburst_usec 0\n")
	write(t, root, "sys/fs/cgroup/rlctl/run1/r0/cpu.max", "max 100000\n")
	s, ok := ReadCPU(root)
	if !ok || s.Version != 2 || s.Periods != 7 || s.QuotaCores != -1 || s.Dir != filepath.Join(root, "sys/fs/cgroup/rlctl/run1/r0") {
		t.Fatalf("got %+v ok=%v", s, ok)
	}
}

// systemd's hybrid layout: the cpu controller is bound to v1, the unified mount has no
// cpu counters (its cpu.stat lacks nr_throttled), so the v1 group is the one read.
func TestHybridReadsTheV1CpuController(t *testing.T) {
	root := t.TempDir()
	write(t, root, "proc/self/cgroup", "3:cpuset:/\n1:cpu:/rlctl/run1/r0\n0::/\n")
	write(t, root, "sys/fs/cgroup/unified/cpu.stat", "usage_usec 10\nuser_usec 8\nsystem_usec 2\n")
	write(t, root, "sys/fs/cgroup/cpu/rlctl/run1/r0/cpu.stat", "nr_periods 10\nnr_throttled 9\nthrottled_time 810000000\n")
	write(t, root, "sys/fs/cgroup/cpu/rlctl/run1/r0/cpu.cfs_quota_us", "10000\n")
	write(t, root, "sys/fs/cgroup/cpu/rlctl/run1/r0/cpu.cfs_period_us", "100000\n")
	s, ok := ReadCPU(root)
	if !ok || s.Version != 1 || s.ThrottledPeriods != 9 || s.ThrottledSeconds != 0.81 || s.QuotaCores != 0.1 {
		t.Fatalf("got %+v ok=%v", s, ok)
	}
}

// A v2 group under the hybrid mount point (/sys/fs/cgroup/unified) when cpu is offered there.
func TestV2UnderUnifiedMount(t *testing.T) {
	root := t.TempDir()
	write(t, root, "proc/self/cgroup", "0::/svc\n")
	write(t, root, "sys/fs/cgroup/unified/svc/cpu.stat", "nr_periods 4\nnr_throttled 2\nthrottled_usec 1500\n")
	write(t, root, "sys/fs/cgroup/unified/svc/cpu.max", "50000 100000\n")
	s, ok := ReadCPU(root)
	if !ok || s.Version != 2 || s.ThrottledSeconds != 0.0015 || s.QuotaCores != 0.5 {
		t.Fatalf("got %+v ok=%v", s, ok)
	}
}
