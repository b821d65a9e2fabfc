package cgroup

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/airlock-dev/airlock/internal/errdefs"
)

// Mode is the cgroup implementation New uses.
type Mode int

const (
	ModeNone Mode = iota // no usable controllers
	ModeV1               // one hierarchy per controller
	ModeV2               // the unified hierarchy
)

// needV2 are the controllers the unified hierarchy must offer before it is
// used; io is welcome but optional, freezing and killing need no controller.
var needV2 = []string{"memory", "cpu", "pids"}

// needV1 are the v1 hierarchies New requires; cpuacct, blkio and freezer
// are used when mounted.
var needV1 = []string{"memory", "cpu", "pids"}

// v1Used are the v1 controllers a pod's group is created in. Not cpuset:
// no limit uses it, a v1 cpuset starts empty and must be filled from its
// parent, and each hierarchy costs every run a mkdir, a join and an rmdir.
var v1Used = []string{"memory", "cpu", "cpuacct", "pids", "blkio", "freezer"}

// Layout describes the host's cgroup set-up as found.
type Layout struct {
	Mode          Mode              `json:"-"`
	Hybrid        bool              `json:"hybrid"`         // v1 hierarchies and a cgroup2 mount side by side
	V2Root        string            `json:"v2_root"`        // cgroup2 mount point, "" if none
	V2Controllers []string          `json:"v2_controllers"` // listed in the v2 root's cgroup.controllers
	V1            map[string]string `json:"v1"`             // v1 controller → mount point
	Usable        []string          `json:"usable"`         // of memory, cpu, pids, io, freezer
	Missing       []string          `json:"missing"`        // of memory, cpu, pids, io, freezer
}

// String names the layout the way doctor prints it: "v2", "v1", "v1 (hybrid)" or "none".
func (l Layout) String() string {
	switch {
	case l.Mode == ModeV2 && l.Hybrid:
		return "v2 (hybrid)"
	case l.Mode == ModeV2:
		return "v2"
	case l.Mode == ModeV1 && l.Hybrid:
		return "v1 (hybrid)"
	case l.Mode == ModeV1:
		return "v1"
	}
	return "none"
}

// Version is 1 or 2 for the implementation in use, 0 when none is usable.
func (l Layout) Version() int { return int(l.Mode) }

// usable says why New cannot work in this layout, or nil.
func (l Layout) usable() error {
	if l.Mode != ModeNone {
		return nil
	}
	return errdefs.Unsupported("no usable cgroup controllers (need %s in cgroup v2, or v1 hierarchies for them; found v2 %q, v1 %v): mount the cgroup file systems or run with resource limits downgraded",
		strings.Join(needV2, ", "), l.V2Controllers, sortedKeys(l.V1))
}

// Detect reads /proc/self/mountinfo and /proc/self/cgroup and decides
// between v2 and v1: v2 only counts when its root lists the needed controllers.
func Detect() (Layout, error) {
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return Layout{}, fmt.Errorf("reading mount table to find cgroups: %w", err)
	}
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return Layout{}, fmt.Errorf("reading /proc/self/cgroup: %w (is this Linux with cgroups enabled?)", err)
	}
	return detect(realOps{}, string(mi), string(self)), nil
}

func detect(o ops, mountinfo, selfCgroup string) Layout {
	l := Layout{V1: map[string]string{}}
	attached := attachedV1(selfCgroup)
	for _, m := range parseMountinfo(mountinfo) {
		switch m.fstype {
		case "cgroup2":
			if l.V2Root == "" {
				l.V2Root = m.point
			}
		case "cgroup":
			for _, c := range m.controllers() {
				if _, dup := l.V1[c]; !dup && attached[c] {
					l.V1[c] = m.point
				}
			}
		}
	}
	if l.V2Root != "" {
		if s, err := o.read(filepath.Join(l.V2Root, "cgroup.controllers")); err == nil {
			l.V2Controllers = strings.Fields(s)
		}
	}
	l.Hybrid = l.V2Root != "" && len(l.V1) > 0
	l.decide()
	return l
}

// decide picks the implementation and lists usable and missing controllers.
func (l *Layout) decide() {
	v2 := set(l.V2Controllers)
	have := map[string]bool{}
	switch {
	case l.V2Root != "" && hasAll(v2, needV2):
		l.Mode = ModeV2
		have = map[string]bool{"memory": v2["memory"], "cpu": v2["cpu"], "pids": v2["pids"], "io": v2["io"], "freezer": true}
	case hasAllKeys(l.V1, needV1):
		l.Mode = ModeV1
		for _, c := range []string{"memory", "cpu", "pids", "freezer"} {
			_, have[c] = l.V1[c]
		}
		_, have["io"] = l.V1["blkio"]
	}
	for _, c := range []string{"memory", "cpu", "pids", "io", "freezer"} {
		if have[c] {
			l.Usable = append(l.Usable, c)
		} else {
			l.Missing = append(l.Missing, c)
		}
	}
}

type mount struct {
	point, fstype, superOpts string
}

// controllers lists the v1 controllers a cgroup mount carries (from its
// super options, e.g. "rw,cpu,cpuacct"), leaving out named hierarchies.
func (m mount) controllers() []string {
	var out []string
	for _, o := range strings.Split(m.superOpts, ",") {
		if slices.Contains(knownV1, o) {
			out = append(out, o)
		}
	}
	return out
}

var knownV1 = []string{"cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "net_cls",
	"blkio", "perf_event", "net_prio", "hugetlb", "pids", "rdma", "misc"}

// parseMountinfo keeps the cgroup and cgroup2 lines of a mountinfo text.
// Fields: id parent maj:min root point opts [optional...] - fstype source superopts.
func parseMountinfo(text string) []mount {
	var out []mount
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		sep := indexOf(f, "-")
		if sep < 6 || sep+1 >= len(f) {
			continue
		}
		m := mount{point: unescapeMount(f[4]), fstype: f[sep+1]}
		if sep+3 < len(f) {
			m.superOpts = f[sep+3]
		}
		if m.fstype == "cgroup" || m.fstype == "cgroup2" {
			out = append(out, m)
		}
	}
	return out
}

// attachedV1 lists the v1 controllers /proc/self/cgroup shows a hierarchy for
// ("4:memory:/path", "1:cpu,cpuacct:/"); the "0::/path" v2 line has none.
func attachedV1(text string) map[string]bool {
	out := map[string]bool{}
	for _, line := range strings.Split(text, "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 || parts[1] == "" {
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			out[c] = true
		}
	}
	return out
}

// unescapeMount undoes the octal escapes (\040 for a space) of mountinfo paths.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func indexOf(f []string, s string) int {
	for i, x := range f {
		if x == s {
			return i
		}
	}
	return -1
}

func set(xs []string) map[string]bool {
	m := map[string]bool{}
	for _, x := range xs {
		m[x] = true
	}
	return m
}

func hasAll(m map[string]bool, need []string) bool {
	for _, n := range need {
		if !m[n] {
			return false
		}
	}
	return true
}

func hasAllKeys(m map[string]string, need []string) bool {
	for _, n := range need {
		if _, ok := m[n]; !ok {
			return false
		}
	}
	return true
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
