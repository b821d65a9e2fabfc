package cgroup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/airlock-dev/airlock/internal/errdefs"
)

// v2Wanted are the controllers enabled for pod groups when the kernel offers them.
var v2Wanted = []string{"memory", "cpu", "pids", "io"}

// v2Group is a pod's group in the unified hierarchy: <root>/airlock/<pod>.
type v2Group struct {
	o    ops
	root string
	dir  string
	name string
}

func openV2(o ops, root, name string, create bool) (*v2Group, error) {
	g := &v2Group{o: o, root: root, dir: filepath.Join(root, parentName, name), name: name}
	if !create {
		if !o.exists(g.dir) {
			return nil, notExist(name, g.dir, os.ErrNotExist)
		}
		return g, nil
	}
	if err := g.create(); err != nil {
		return nil, err
	}
	return g, nil
}

// create makes airlock/<pod>, enabling controllers top-down: a child can
// only use a controller its parent lists in cgroup.subtree_control.
func (g *v2Group) create() error {
	parent := filepath.Dir(g.dir)
	var err error
	// A concurrent Destroy of the last other pod may remove the parent
	// between our mkdirs; starting over a few times absorbs that.
	for try := 0; try < 3; try++ {
		if err = g.enable(g.root); err != nil {
			return err
		}
		if err = g.o.mkdir(parent); err != nil {
			return fmt.Errorf("creating cgroup %s: %w (is cgroup2 mounted read-write and are you root?)", parent, err)
		}
		if err = g.enable(parent); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		if err == nil {
			if err = g.o.mkdir(g.dir); err == nil {
				return nil
			}
		}
	}
	return fmt.Errorf("creating cgroup %s: %w", g.dir, err)
}

// enable turns on, in dir's subtree_control, each wanted controller dir offers.
func (g *v2Group) enable(dir string) error {
	avail, err := g.o.read(filepath.Join(dir, "cgroup.controllers"))
	if err != nil {
		return fmt.Errorf("reading cgroup controllers of %s: %w", dir, err)
	}
	on, _ := g.o.read(filepath.Join(dir, "cgroup.subtree_control"))
	have, enabled := set(strings.Fields(avail)), set(strings.Fields(on))
	for _, c := range v2Wanted {
		if !have[c] || enabled[c] {
			continue
		}
		if err := g.o.write(filepath.Join(dir, "cgroup.subtree_control"), "+"+c); err != nil {
			return fmt.Errorf("enabling the %s controller in %s: %w", c, dir, err)
		}
	}
	return nil
}

func (g *v2Group) Path() string { return g.dir }
func (g *v2Group) Version() int { return 2 }

func (g *v2Group) file(name string) string { return filepath.Join(g.dir, name) }

func (g *v2Group) Add(pid int) error {
	if err := g.o.write(g.file("cgroup.procs"), strconv.Itoa(pid)); err != nil {
		return fmt.Errorf("moving process %d into cgroup %s: %w", pid, g.dir, err)
	}
	return nil
}

// ThreadFiles is nil: cgroup.threads takes single threads only in a
// threaded subtree, and a pod's group is a domain group.
func (g *v2Group) ThreadFiles() []string { return nil }

func (g *v2Group) Set(l Limits) error {
	if err := g.setIf("memory.max", limitString(l.Memory), l.Memory > 0); err != nil {
		return err
	}
	if err := g.setIf("memory.swap.max", limitString(l.Swap), l.Swap > 0); err != nil {
		return err
	}
	cpu := fmt.Sprintf("%s %d", limitString(cpuQuota(l.CPUs)), cfsPeriod)
	if err := g.setIf("cpu.max", cpu, l.CPUs > 0); err != nil {
		return err
	}
	if err := g.setIf("pids.max", limitString(l.Pids), l.Pids > 0); err != nil {
		return err
	}
	return g.setIO(l)
}

// setIf writes a limit file. A missing file means its controller is not
// enabled: an error when a limit was asked for, nothing to undo otherwise.
func (g *v2Group) setIf(name, value string, wanted bool) error {
	path := g.file(name)
	if !g.o.exists(path) {
		if wanted {
			return errdefs.Unsupported("cgroup v2: %s is missing in %s, so this limit cannot be applied: enable the %s controller or drop the limit", name, g.dir, strings.SplitN(name, ".", 2)[0])
		}
		return nil
	}
	if err := g.o.write(path, value); err != nil {
		return fmt.Errorf("setting %s: %w", name, err)
	}
	return nil
}

// setIO writes io.max for the state directory's disk, or lifts every
// throttle already there when no I/O limit is asked for.
func (g *v2Group) setIO(l Limits) error {
	if l.ReadBPS <= 0 && l.WriteBPS <= 0 {
		cur, err := g.o.read(g.file("io.max"))
		if err != nil {
			return nil // no io controller: nothing to lift
		}
		for _, line := range strings.Split(cur, "\n") {
			if f := strings.Fields(line); len(f) > 0 {
				if err := g.o.write(g.file("io.max"), f[0]+" rbps=max wbps=max riops=max wiops=max"); err != nil {
					return fmt.Errorf("lifting I/O limits: %w", err)
				}
			}
		}
		return nil
	}
	dev, err := ioDevice(l.IOPath)
	if err != nil {
		return err
	}
	return g.setIf("io.max", fmt.Sprintf("%s rbps=%s wbps=%s", dev, limitString(l.ReadBPS), limitString(l.WriteBPS)), true)
}

func (g *v2Group) Stats() (Stats, error) {
	var s Stats
	if !g.o.exists(g.dir) {
		return s, notExist(g.name, g.dir, os.ErrNotExist)
	}
	if t, err := g.o.read(g.file("cpu.stat")); err == nil {
		s.CPUUsec, _ = keyed(t, "usage_usec")
	}
	s.MemoryBytes, _ = readInt(g.o, g.file("memory.current"))
	s.MemoryPeak, _ = readInt(g.o, g.file("memory.peak"))
	s.MemoryLimit, _ = readInt(g.o, g.file("memory.max"))
	if t, err := g.o.read(g.file("cpu.max")); err == nil {
		s.CPULimit = parseCPUMax(t)
	}
	s.Pids, _ = readInt(g.o, g.file("pids.current"))
	s.PidsLimit, _ = readInt(g.o, g.file("pids.max"))
	if t, err := g.o.read(g.file("memory.events")); err == nil {
		s.OOMKills, _ = keyed(t, "oom_kill")
	}
	if t, err := g.o.read(g.file("pids.events")); err == nil {
		s.PidsMaxHits, _ = keyed(t, "max")
	}
	if t, err := g.o.read(g.file("io.stat")); err == nil {
		s.IOReadBytes, s.IOWriteBytes = parseIOStat(t)
	}
	if t, err := g.o.read(g.file("cgroup.events")); err == nil {
		f, _ := keyed(t, "frozen")
		s.Frozen = f == 1
	}
	return s, nil
}

// parseCPUMax turns cpu.max ("150000 100000", "max 100000") into CPUs; 0 is unlimited.
func parseCPUMax(text string) float64 {
	f := strings.Fields(text)
	if len(f) != 2 {
		return 0
	}
	q, err1 := strconv.ParseInt(f[0], 10, 64)
	per, err2 := strconv.ParseInt(f[1], 10, 64)
	if err1 != nil || err2 != nil || q <= 0 || per <= 0 {
		return 0
	}
	return float64(q) / float64(per)
}

// parseIOStat sums rbytes and wbytes over the devices of io.stat
// ("254:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0").
func parseIOStat(text string) (r, w uint64) {
	for _, f := range strings.Fields(text) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "rbytes":
			r += n
		case "wbytes":
			w += n
		}
	}
	return r, w
}

func (g *v2Group) Freeze() error { return g.setFrozen(true) }
func (g *v2Group) Thaw() error   { return g.setFrozen(false) }

// setFrozen writes cgroup.freeze and waits for cgroup.events to confirm:
// the write only starts freezing, tasks stop at their next safe point.
func (g *v2Group) setFrozen(on bool) error {
	want, verb := "0", "thawing"
	if on {
		want, verb = "1", "freezing"
	}
	if err := g.o.write(g.file("cgroup.freeze"), want); err != nil {
		return fmt.Errorf("%s cgroup %s: %w (cgroup.freeze needs Linux 5.2)", verb, g.dir, err)
	}
	err := waitFor(settle, func() (bool, error) {
		t, err := g.o.read(g.file("cgroup.events"))
		if err != nil {
			return false, err
		}
		f, _ := keyed(t, "frozen")
		return strconv.FormatUint(f, 10) == want, nil
	})
	if err != nil {
		return fmt.Errorf("%s cgroup %s: %w", verb, g.dir, err)
	}
	return nil
}

// Kill uses cgroup.kill (Linux 5.14), which the kernel applies to every
// process atomically, forks in flight included; older kernels fall back
// to freeze, kill the listed processes, thaw, repeat.
func (g *v2Group) Kill() error {
	if g.o.exists(g.file("cgroup.kill")) {
		if err := g.o.write(g.file("cgroup.kill"), "1"); err != nil {
			return fmt.Errorf("killing cgroup %s: %w", g.dir, err)
		}
		return nil
	}
	return killAll(g.Freeze, g.Thaw, g.Procs)
}

func (g *v2Group) Procs() ([]int, error) {
	t, err := g.o.read(g.file("cgroup.procs"))
	if err != nil {
		return nil, notExist(g.name, g.dir, err)
	}
	return uniqSorted(parsePids(t)), nil
}

func (g *v2Group) Destroy() error {
	if !g.o.exists(g.dir) {
		return nil
	}
	if err := g.Kill(); err != nil {
		return err
	}
	if err := waitEmpty(g.Procs); err != nil {
		return err
	}
	if err := removeGroup(g.o, g.dir); err != nil {
		return err
	}
	_ = g.o.rmdir(filepath.Dir(g.dir)) // fails while other pods use it, as it should
	return nil
}
