package cgroup

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// hybridMountinfo is this machine's cgroup part of /proc/self/mountinfo.
const hybridMountinfo = `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / %s rw,relatime - cgroup2 cgroup2 rw
`

const hybridSelf = "9:name=systemd:/\n8:pids:/\n7:blkio:/\n6:freezer:/\n4:memory:/x\n3:cpuset:/\n2:cpuacct:/\n1:cpu:/\n0::/\n"

func TestDetect(t *testing.T) {
	v2 := func(controllers string) string {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "cgroup.controllers"), []byte(controllers+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	none, full := v2("hugetlb"), v2("cpuset cpu io memory hugetlb pids rdma misc")
	cases := []struct {
		name, mountinfo, self, want string
		usable                      []string
	}{
		{"hybrid, v2 without controllers", sprintf(hybridMountinfo, none), hybridSelf, "v1 (hybrid)", []string{"memory", "cpu", "pids", "io", "freezer"}},
		{"hybrid, v2 with controllers", sprintf(hybridMountinfo, full), hybridSelf, "v2 (hybrid)", []string{"memory", "cpu", "pids", "io", "freezer"}},
		{"pure v2", "30 23 0:26 / " + full + " rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n", "0::/user.slice\n", "v2", []string{"memory", "cpu", "pids", "io", "freezer"}},
		{"pure v2 without controllers", "30 23 0:26 / " + none + " rw - cgroup2 cgroup2 rw\n", "0::/\n", "none", nil},
		{"v1 co-mounted cpu,cpuacct", "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw shared:9 - cgroup cgroup rw,cpu,cpuacct\n" +
			"35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n39 31 0:36 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n",
			"3:cpu,cpuacct:/\n2:memory:/\n1:pids:/\n", "v1", []string{"memory", "cpu", "pids"}},
		{"v1 mounted but not attached to us", "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n", "0::/\n", "none", nil},
		{"nothing", "22 1 0:21 / /proc rw - proc proc rw\n", "", "none", nil},
	}
	for _, c := range cases {
		l := detect(realOps{}, c.mountinfo, c.self)
		if l.String() != c.want || !reflect.DeepEqual(l.Usable, c.usable) {
			t.Errorf("%s: got %s usable %v, want %s usable %v", c.name, l, l.Usable, c.want, c.usable)
		}
		if (l.usable() == nil) != (c.want != "none") {
			t.Errorf("%s: usable() = %v", c.name, l.usable())
		}
	}
}

func sprintf(format, dir string) string { return strings.Replace(format, "%s", dir, 1) }

func TestDetectCoMountedPaths(t *testing.T) {
	l := detect(realOps{}, "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n", "1:cpu,cpuacct:/\n")
	if l.V1["cpu"] != "/sys/fs/cgroup/cpu,cpuacct" || l.V1["cpuacct"] != "/sys/fs/cgroup/cpu,cpuacct" {
		t.Errorf("V1 = %v", l.V1)
	}
	g, _ := openV1(realOps{}, l.V1, "p", false)
	_ = g // nothing exists there: Load must fail, not panic
}

func TestParseMountinfoEscapes(t *testing.T) {
	m := parseMountinfo("41 31 0:38 / /mnt/my\\040cgroups rw,relatime shared:1 master:2 - cgroup2 cgroup2 rw\nbroken line\n")
	if len(m) != 1 || m[0].point != "/mnt/my cgroups" || m[0].fstype != "cgroup2" {
		t.Fatalf("parsed %+v", m)
	}
}

func TestParsers(t *testing.T) {
	r, w := parseBlkioBytes("254:0 Read 4096\n254:0 Write 8192\n254:0 Sync 1\n254:0 Total 12288\n7:0 Read 10\nTotal 12298\n")
	if r != 4106 || w != 8192 {
		t.Errorf("blkio: read %d write %d", r, w)
	}
	oom := "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"
	if v, ok := keyed(oom, "oom_kill"); !ok || v != 3 {
		t.Errorf("oom_kill = %d, %v", v, ok)
	}
	if got := parsePids("12\n7\n\n12\n"); !reflect.DeepEqual(uniqSorted(got), []int{7, 12}) {
		t.Errorf("pids = %v", got)
	}
	for cpus, want := range map[float64]int64{0: 0, 0.5: 50000, 2: 200000, 0.001: 1000} {
		if got := cpuQuota(cpus); got != want {
			t.Errorf("cpuQuota(%v) = %d, want %d", cpus, got, want)
		}
	}
}

// TestGroupName: the same pod name under two state directories gets two
// groups; the name stays a valid single path element.
func TestGroupName(t *testing.T) {
	a, b := GroupName("p", "/var/lib/airlock/pods/p"), GroupName("p", "/tmp/home2/pods/p")
	if a == b {
		t.Fatalf("pods p of two homes share cgroup %s", a)
	}
	if a != GroupName("p", "/var/lib/airlock/pods/p/") {
		t.Errorf("GroupName depends on a trailing slash")
	}
	long := strings.Repeat("x", 128)
	for _, n := range []string{a, b, GroupName(long, "/d")} {
		if err := checkName(n); err != nil {
			t.Errorf("GroupName gave an invalid name %q: %v", n, err)
		}
	}
	if checkName(strings.Repeat("x", 129)) == nil {
		t.Error("a 129-character group name was accepted")
	}
}
