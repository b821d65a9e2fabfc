package inside

import (
	"errors"
	"fmt"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/airlock-dev/airlock/internal/sandbox"
)

// entry is one path of a policy table, with why it is there.
type entry struct {
	path, reason string
}

// procMasked are /proc entries the agent must not read or write.
var procMasked = []entry{
	{"kcore", "physical memory of the host"},
	{"kmsg", "kernel log of the host"},
	{"keys", "the kernel keyrings' descriptions"},
	{"timer_list", "host timers, a side channel"},
	{"timer_stats", "host timers, a side channel"},
	{"sched_debug", "host scheduler state, a side channel"},
	{"latency_stats", "host latency data"},
	{"sysrq-trigger", "reboots or crashes the host"},
	{"acpi", "firmware interface"},
	{"scsi", "rescans host buses"},
	{"asound", "host sound devices"},
	{"firmware", "firmware interface"},
}

// procReadOnly are /proc trees that configure the whole kernel.
var procReadOnly = []entry{
	{"sys", "kernel tunables (sysctl)"},
	{"irq", "interrupt affinity"},
	{"bus", "device buses"},
	{"fs", "file system tunables"},
}

// sysMasked are sysfs entries hidden even read-only.
var sysMasked = []entry{
	{"firmware", "ACPI tables and firmware memory maps"},
	{"devices/virtual/powercap", "energy counters, a side channel"},
	{"kernel/security", "LSM interfaces"},
	{"kernel/debug", "debugfs"},
}

// devNodes are the host devices bound into the pod's /dev.
var devNodes = []string{"null", "zero", "full", "random", "urandom", "tty"}

// devLinks are the symlinks every /dev has.
var devLinks = []entry{
	{"ptmx", "pts/ptmx"},
	{"fd", "/proc/self/fd"},
	{"stdin", "/proc/self/fd/0"},
	{"stdout", "/proc/self/fd/1"},
	{"stderr", "/proc/self/fd/2"},
}

func (v *view) proc(m sandbox.Mount) error {
	mnt, err := newFS("proc", nil, unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_NOEXEC)
	if err != nil {
		return err
	}
	defer unix.Close(mnt)
	if err := v.attach(mnt, m.Target, true); err != nil {
		return err
	}
	for _, e := range procReadOnly {
		if err := readOnlyIn(mnt, e.path); err != nil {
			return fmt.Errorf("making /proc/%s read-only (%s): %w", e.path, e.reason, err)
		}
	}
	return maskIn(mnt, "/proc/", procMasked)
}

func (v *view) sys(m sandbox.Mount) error {
	mnt, err := newFS("sysfs", nil, attrHidden)
	if errors.Is(err, unix.EPERM) {
		mnt, err = readOnlyClone("/sys")
	}
	if err != nil {
		return err
	}
	defer unix.Close(mnt)
	if err := v.attach(mnt, m.Target, true); err != nil {
		return err
	}
	return maskIn(mnt, "/sys/", sysMasked)
}

// dev builds /dev on a tmpfs that is made read-only once populated.
func (v *view) dev(m sandbox.Mount) error {
	dev, err := newFS("tmpfs", []string{"mode", "0755", "size", "64k"}, unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NOEXEC)
	if err != nil {
		return err
	}
	defer unix.Close(dev)
	if err := v.attach(dev, m.Target, true); err != nil {
		return err
	}
	for _, name := range devNodes {
		if err := bindDevice(dev, name); err != nil {
			return fmt.Errorf("binding /dev/%s: %w", name, err)
		}
	}
	if err := mountIn(dev, "pts", "devpts", []string{"newinstance", "", "ptmxmode", "0666", "mode", "0620", "uid", strconv.Itoa(v.uid), "gid", strconv.Itoa(v.gid)}, unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NOEXEC); err != nil {
		return fmt.Errorf("mounting /dev/pts: %w", err)
	}
	if err := mountIn(dev, "shm", "tmpfs", []string{"mode", "1777"}, attrData|unix.MOUNT_ATTR_NOEXEC); err != nil {
		return fmt.Errorf("mounting /dev/shm: %w", err)
	}
	for _, l := range devLinks {
		if err := unix.Symlinkat(l.reason, dev, l.path); err != nil {
			return fmt.Errorf("linking /dev/%s: %w", l.path, err)
		}
	}
	return setattr(dev, unix.MOUNT_ATTR_RDONLY|unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NOEXEC, false)
}

func bindDevice(dev int, name string) error {
	if err := createFile(dev, name, 0o666); err != nil {
		return err
	}
	src, err := unix.OpenTree(unix.AT_FDCWD, "/dev/"+name, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return err
	}
	defer unix.Close(src)
	if err := setattr(src, unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NOEXEC, false); err != nil {
		return err
	}
	return moveIn(src, dev, name)
}

// mountIn mounts a new fstype instance on a new directory in dir.
func mountIn(dir int, name, fstype string, opts []string, attr uint64) error {
	if err := unix.Mkdirat(dir, name, 0o755); err != nil {
		return err
	}
	fsfd, err := unix.Fsopen(fstype, unix.FSOPEN_CLOEXEC)
	if err != nil {
		return err
	}
	defer unix.Close(fsfd)
	var rest []string
	for i := 0; i+1 < len(opts); i += 2 {
		if opts[i+1] == "" {
			if err := unix.FsconfigSetFlag(fsfd, opts[i]); err != nil {
				return kernelSays(fsfd, err)
			}
			continue
		}
		rest = append(rest, opts[i], opts[i+1])
	}
	mnt, err := configure(fsfd, rest, attr)
	if err != nil {
		return err
	}
	defer unix.Close(mnt)
	return moveIn(mnt, dir, name)
}

func moveIn(mnt, dir int, name string) error {
	dst, err := openBeneath(dir, name)
	if err != nil {
		return err
	}
	defer unix.Close(dst)
	return move(mnt, dst)
}

// openBeneath opens a path inside a kernel file system (proc, sys, dev)
// without following any symlink.
func openBeneath(dir int, path string) (int, error) {
	return unix.Openat2(dir, path, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC | unix.O_NOFOLLOW,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_XDEV,
	})
}

// maskIn hides each existing entry under mnt.
func maskIn(mnt int, prefix string, entries []entry) error {
	for _, e := range entries {
		dst, err := openBeneath(mnt, e.path)
		if errors.Is(err, unix.ENOENT) {
			continue
		}
		if err != nil {
			return fmt.Errorf("masking %s%s (%s): %w", prefix, e.path, e.reason, err)
		}
		err = cover(dst)
		unix.Close(dst)
		if err != nil {
			return fmt.Errorf("masking %s%s (%s): %w", prefix, e.path, e.reason, err)
		}
	}
	return nil
}

func cover(dst int) error {
	c, err := hider(isDir(dst))
	if err != nil {
		return err
	}
	defer unix.Close(c)
	return move(c, dst)
}

// readOnlyIn remounts a subtree of mnt read-only on itself.
func readOnlyIn(mnt int, path string) error {
	dst, err := openBeneath(mnt, path)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unix.Close(dst)
	clone, err := unix.OpenTree(dst, "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE|unix.AT_EMPTY_PATH)
	if err != nil {
		return err
	}
	defer unix.Close(clone)
	if err := setattr(clone, attrHidden, true); err != nil {
		return err
	}
	return move(clone, dst)
}

// readOnlyClone is a recursive read-only copy of a host mount (for /sys
// when a fresh sysfs is not allowed).
func readOnlyClone(path string) (int, error) {
	fd, err := unix.OpenTree(unix.AT_FDCWD, path, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	if err != nil {
		return -1, err
	}
	if err := setattr(fd, attrHidden, true); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}
