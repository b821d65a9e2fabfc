package cgroup

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/airlock-dev/airlock/internal/errdefs"
)

// v1Group is a pod's group in every v1 hierarchy used: <mount>/airlock/<pod>.
// Co-mounted controllers (cpu,cpuacct) share one directory.
type v1Group struct {
	o    ops
	name string
	dirs map[string]string // controller → group directory
}

func openV1(o ops, mounts map[string]string, name string, create bool) (*v1Group, error) {
	g := &v1Group{o: o, name: name, dirs: map[string]string{}}
	for _, c := range v1Used {
		if m, ok := mounts[c]; ok {
			g.dirs[c] = filepath.Join(m, parentName, name)
		}
	}
	if create {
		return g, g.create()
	}
	for c, d := range g.dirs {
		if !o.exists(d) {
			delete(g.dirs, c)
		}
	}
	if len(g.dirs) == 0 {
		return nil, notExist(name, filepath.Join("/sys/fs/cgroup/*", parentName, name), os.ErrNotExist)
	}
	return g, nil
}

func (g *v1Group) create() error {
	var err error
	for try := 0; try < 3; try++ { // see v2Group.create for why
		if err = g.createOnce(); err == nil {
			return nil
		}
	}
	return err
}

func (g *v1Group) createOnce() error {
	for _, c := range g.controllers() {
		dir := g.dirs[c]
		parent := filepath.Dir(dir)
		for _, d := range []string{parent, dir} {
			if err := g.o.mkdir(d); err != nil {
				return fmt.Errorf("creating cgroup %s: %w (are the v1 cgroup file systems mounted read-write and are you root?)", d, err)
			}
		}
	}
	return nil
}

// controllers lists the controllers in use, sorted, one per distinct directory.
func (g *v1Group) controllers() []string {
	seen := map[string]bool{}
	var out []string
	for _, c := range v1Used {
		if d, ok := g.dirs[c]; ok && !seen[d] {
			seen[d] = true
			out = append(out, c)
		}
	}
	return out
}

func (g *v1Group) Path() string {
	if d, ok := g.dirs["memory"]; ok {
		return d
	}
	return g.dirs[g.controllers()[0]]
}

func (g *v1Group) Version() int { return 1 }

func (g *v1Group) file(ctrl, name string) (string, bool) {
	d, ok := g.dirs[ctrl]
	return filepath.Join(d, name), ok
}

// Add writes the pid into every hierarchy.
func (g *v1Group) Add(pid int) error {
	for _, c := range g.controllers() {
		if err := g.o.write(filepath.Join(g.dirs[c], "cgroup.procs"), strconv.Itoa(pid)); err != nil {
			return fmt.Errorf("moving process %d into cgroup %s: %w", pid, g.dirs[c], err)
		}
	}
	return nil
}

// ThreadFiles are the tasks files of every hierarchy, in Add's order.
func (g *v1Group) ThreadFiles() []string {
	var out []string
	for _, c := range g.controllers() {
		out = append(out, filepath.Join(g.dirs[c], "tasks"))
	}
	return out
}

func (g *v1Group) Set(l Limits) error {
	steps := []func(Limits) error{g.setMemory, g.setCPU, g.setPids, g.setIO}
	for _, s := range steps {
		if err := s(l); err != nil {
			return err
		}
	}
	return nil
}

// need returns the path of a controller file, or an error when a limit
// was asked for on a controller that is not mounted.
func (g *v1Group) need(ctrl, name string, wanted bool) (string, bool, error) {
	p, ok := g.file(ctrl, name)
	if ok && g.o.exists(p) {
		return p, true, nil
	}
	if wanted {
		return "", false, errdefs.Unsupported("cgroup v1: no %s hierarchy with %s, so this limit cannot be applied: mount it or drop the limit", ctrl, name)
	}
	return "", false, nil
}

func (g *v1Group) setMemory(l Limits) error {
	lim, ok, err := g.need("memory", "memory.limit_in_bytes", l.Memory > 0)
	if !ok {
		return err
	}
	memsw, hasSwap := g.file("memory", "memory.memsw.limit_in_bytes")
	hasSwap = hasSwap && g.o.exists(memsw)
	// memsw may never be below the memory limit: open it fully first, set
	// the memory limit, then close memsw down to memory + swap.
	if hasSwap {
		if err := g.o.write(memsw, "-1"); err != nil {
			return fmt.Errorf("setting memory+swap limit: %w", err)
		}
	}
	if err := g.o.write(lim, v1Limit(l.Memory)); err != nil {
		return fmt.Errorf("setting memory limit: %w (the group may use more than the new limit and be unable to shrink)", err)
	}
	if hasSwap && l.Memory > 0 && l.Swap > 0 {
		if err := g.o.write(memsw, v1Limit(l.Memory+l.Swap)); err != nil {
			return fmt.Errorf("setting memory+swap limit: %w", err)
		}
	}
	return nil
}

func (g *v1Group) setCPU(l Limits) error {
	quota, ok, err := g.need("cpu", "cpu.cfs_quota_us", l.CPUs > 0)
	if !ok {
		return err
	}
	period, _ := g.file("cpu", "cpu.cfs_period_us")
	if err := g.o.write(period, strconv.Itoa(cfsPeriod)); err != nil {
		return fmt.Errorf("setting CPU period: %w", err)
	}
	if err := g.o.write(quota, v1Limit(cpuQuota(l.CPUs))); err != nil {
		return fmt.Errorf("setting CPU quota: %w", err)
	}
	return nil
}

func (g *v1Group) setPids(l Limits) error {
	p, ok, err := g.need("pids", "pids.max", l.Pids > 0)
	if !ok {
		return err
	}
	if err := g.o.write(p, limitString(l.Pids)); err != nil {
		return fmt.Errorf("setting process limit: %w", err)
	}
	return nil
}

// setIO throttles the state directory's disk, or lifts every throttle
// present when no I/O limit is asked for (a 0 rate deletes the rule in v1).
func (g *v1Group) setIO(l Limits) error {
	wanted := l.ReadBPS > 0 || l.WriteBPS > 0
	rd, ok, err := g.need("blkio", "blkio.throttle.read_bps_device", wanted)
	if !ok {
		return err
	}
	wr, _ := g.file("blkio", "blkio.throttle.write_bps_device")
	if !wanted {
		return g.liftIO(rd, wr)
	}
	dev, err := ioDevice(l.IOPath)
	if err != nil {
		return err
	}
	for _, x := range []struct {
		path string
		rate int64
	}{{rd, l.ReadBPS}, {wr, l.WriteBPS}} {
		if err := g.o.write(x.path, fmt.Sprintf("%s %d", dev, max(x.rate, 0))); err != nil {
			return fmt.Errorf("setting I/O limit on device %s: %w", dev, err)
		}
	}
	return nil
}

func (g *v1Group) liftIO(files ...string) error {
	for _, f := range files {
		cur, _ := g.o.read(f)
		for _, line := range strings.Split(cur, "\n") {
			if fl := strings.Fields(line); len(fl) == 2 {
				if err := g.o.write(f, fl[0]+" 0"); err != nil {
					return fmt.Errorf("lifting I/O limit: %w", err)
				}
			}
		}
	}
	return nil
}

// v1Limit renders a limit for a v1 file, where -1 means unlimited.
func v1Limit(v int64) string {
	if v <= 0 {
		return "-1"
	}
	return strconv.FormatInt(v, 10)
}

// v1Unlimited is the smallest value v1 files report for "no limit"
// (PAGE_COUNTER_MAX rounded to pages, about 2^63).
const v1Unlimited = 1 << 62

func (g *v1Group) Stats() (Stats, error) {
	var s Stats
	if !g.o.exists(g.Path()) {
		return s, notExist(g.name, g.Path(), os.ErrNotExist)
	}
	rd := func(ctrl, name string) int64 {
		p, ok := g.file(ctrl, name)
		if !ok {
			return 0
		}
		v, _ := readInt(g.o, p)
		if v >= v1Unlimited {
			return 0
		}
		return v
	}
	s.CPUUsec = uint64(rd("cpuacct", "cpuacct.usage")) / 1000
	s.MemoryBytes = rd("memory", "memory.usage_in_bytes")
	s.MemoryPeak = rd("memory", "memory.max_usage_in_bytes")
	s.MemoryLimit = rd("memory", "memory.limit_in_bytes")
	if q, per := rd("cpu", "cpu.cfs_quota_us"), rd("cpu", "cpu.cfs_period_us"); q > 0 && per > 0 {
		s.CPULimit = float64(q) / float64(per)
	}
	s.Pids = rd("pids", "pids.current")
	s.PidsLimit = rd("pids", "pids.max")
	s.OOMKills = g.counter("memory", "memory.oom_control", "oom_kill")
	s.PidsMaxHits = g.counter("pids", "pids.events", "max")
	if p, ok := g.file("blkio", "blkio.throttle.io_service_bytes_recursive"); ok {
		t, _ := g.o.read(p)
		s.IOReadBytes, s.IOWriteBytes = parseBlkioBytes(t)
	}
	if p, ok := g.file("freezer", "freezer.state"); ok {
		t, _ := g.o.read(p)
		s.Frozen = strings.TrimSpace(t) == "FROZEN"
	}
	return s, nil
}

func (g *v1Group) counter(ctrl, file, key string) uint64 {
	p, ok := g.file(ctrl, file)
	if !ok {
		return 0
	}
	t, _ := g.o.read(p)
	v, _ := keyed(t, key)
	return v
}

// parseBlkioBytes sums the Read and Write lines of
// blkio.throttle.io_service_bytes ("254:0 Read 4096").
func parseBlkioBytes(text string) (r, w uint64) {
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			continue
		}
		n, err := strconv.ParseUint(f[2], 10, 64)
		if err != nil {
			continue
		}
		switch f[1] {
		case "Read":
			r += n
		case "Write":
			w += n
		}
	}
	return r, w
}

func (g *v1Group) Freeze() error { return g.setFreezer("FROZEN") }
func (g *v1Group) Thaw() error   { return g.setFreezer("THAWED") }

// setFreezer writes freezer.state and waits until it reads back the
// same: FROZEN passes through FREEZING while tasks reach a safe point,
// and writing FROZEN again retries the stragglers.
func (g *v1Group) setFreezer(state string) error {
	p, ok := g.file("freezer", "freezer.state")
	if !ok {
		return errdefs.Unsupported("cgroup v1: the freezer hierarchy is not mounted; mount it to freeze pods")
	}
	err := waitFor(settle, func() (bool, error) {
		if err := g.o.write(p, state); err != nil {
			return false, err
		}
		cur, err := g.o.read(p)
		return strings.TrimSpace(cur) == state, err
	})
	if err != nil {
		if state == "FROZEN" {
			_ = g.o.write(p, "THAWED")
		}
		return fmt.Errorf("setting %s to %s: %w", p, state, err)
	}
	return nil
}

func (g *v1Group) Kill() error {
	if _, ok := g.dirs["freezer"]; ok {
		return killAll(g.Freeze, g.Thaw, g.Procs)
	}
	return killAll(nil, nil, g.Procs)
}

// Procs is the union over hierarchies: a process whose Add failed half
// way is still found and killed.
func (g *v1Group) Procs() ([]int, error) {
	var all []int
	found := false
	for _, c := range g.controllers() {
		t, err := g.o.read(filepath.Join(g.dirs[c], "cgroup.procs"))
		if err != nil {
			continue
		}
		found = true
		all = append(all, parsePids(t)...)
	}
	if !found {
		return nil, notExist(g.name, g.Path(), os.ErrNotExist)
	}
	return uniqSorted(all), nil
}

func (g *v1Group) Destroy() error {
	pids, err := g.Procs()
	if err != nil {
		return nil // already gone
	}
	// The usual case, a pod whose init was reaped (the kernel ended its
	// PID namespace with it), needs no freeze, kill and thaw round: 0.3
	// ms of a run. Should a process arrive after this look, the rmdir
	// below fails busy and the round runs after all.
	if len(pids) > 0 {
		if err := g.killAndWait(); err != nil {
			return err
		}
	}
	err = g.removeDirs()
	if err != nil && len(pids) == 0 {
		if err := g.killAndWait(); err != nil {
			return err
		}
		err = g.removeDirs()
	}
	return err
}

func (g *v1Group) killAndWait() error {
	if err := g.Kill(); err != nil {
		return err
	}
	return waitEmpty(g.Procs)
}

// removeDirs removes the group from every hierarchy, and the airlock
// parent where no other pod uses it.
func (g *v1Group) removeDirs() error {
	var errs []string
	for _, c := range g.controllers() {
		if err := removeGroup(g.o, g.dirs[c]); err != nil {
			errs = append(errs, err.Error())
		}
		_ = g.o.rmdir(filepath.Dir(g.dirs[c])) // stays while other pods use it
	}
	if len(errs) > 0 {
		sort.Strings(errs)
		return fmt.Errorf("destroying cgroup of pod %s: %s", g.name, strings.Join(errs, "; "))
	}
	return nil
}
