package doctor

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/airlock-dev/airlock/internal/cgroup"
	"github.com/airlock-dev/airlock/internal/seccomp"
	"github.com/airlock-dev/airlock/internal/statedir"
)

// Checks lists every check, in the order doctor prints them.
func Checks() []Check {
	return []Check{
		{Name: "kernel", Check: checkKernel},
		{Name: "privileges", Required: true, Check: checkPrivileges},
		{Name: "user namespaces", Check: checkUserNS},
		{Name: "namespaces", Required: true, Check: checkNamespaces},
		{Name: "overlayfs", Required: true, Check: checkOverlay},
		{Name: "overlayfs in a user namespace", Check: checkOverlayUserNS},
		{Name: "cgroups", Downgrade: "cgroups", Check: checkCgroups},
		{Name: "seccomp", Downgrade: "seccomp", Check: checkSeccomp},
		{Name: "seccomp user notification", Check: checkSeccompNotify},
		{Name: "landlock", Downgrade: "landlock", Check: checkLandlock},
		{Name: "nf_tables", Downgrade: "network", Check: checkNftables},
		{Name: "pty", Check: checkPty},
		{Name: "disk cap (resources.disk)", Downgrade: "disk-quota", Check: checkDiskCap},
	}
}

// hostFiles is the seam for the /proc files the checks read.
var hostFiles = func(path string) (string, error) {
	b, err := os.ReadFile(path)
	return string(b), err
}

func readTrim(path string) string {
	s, err := hostFiles(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(s)
}

func checkKernel() Result {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return warn("", "uname failed: %v", err)
	}
	rel := unix.ByteSliceToString(u.Release[:])
	maj, min, parsed := kernelVersion(rel)
	if !parsed {
		return warn("", "Linux %s (version not understood)", rel)
	}
	if maj < 5 || maj == 5 && min < 13 {
		return warn("upgrade to Linux 5.13 or newer (Landlock, overlayfs in user namespaces, cgroup.kill)", "Linux %s is older than 5.13; some walls will be missing", rel)
	}
	return ok("Linux %s", rel)
}

// kernelVersion parses "6.18.1-foo" into 6, 18.
func kernelVersion(release string) (major, minor int, ok bool) {
	parts := strings.SplitN(release, ".", 3)
	if len(parts) < 2 {
		return 0, 0, false
	}
	major, err1 := strconv.Atoi(parts[0])
	minor, err2 := strconv.Atoi(strings.TrimRightFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' }))
	return major, minor, err1 == nil && err2 == nil
}

// userNSPolicy reads the sysctls that can forbid unprivileged user
// namespaces ("" = the knob does not exist on this kernel).
func userNSPolicy(maxNS, unprivClone, apparmorRestrict string) (blocked bool, why string) {
	switch {
	case maxNS == "0":
		return true, "user.max_user_namespaces is 0"
	case unprivClone == "0":
		return true, "kernel.unprivileged_userns_clone is 0"
	case apparmorRestrict == "1":
		return true, "kernel.apparmor_restrict_unprivileged_userns is 1"
	}
	return false, ""
}

const userNSFix = "allow unprivileged user namespaces: sysctl -w user.max_user_namespaces=15000 kernel.unprivileged_userns_clone=1 kernel.apparmor_restrict_unprivileged_userns=0 (whichever exist), or run airlock as root"

// tryUserNS creates a child in a user namespace as an ordinary user would.
func tryUserNS() error {
	uid, gid := unprivilegedIDs()
	return probe("true", userNSAttr(0, uid, gid))
}

func checkUserNS() Result {
	blocked, why := userNSPolicy(readTrim("/proc/sys/user/max_user_namespaces"),
		readTrim("/proc/sys/kernel/unprivileged_userns_clone"),
		readTrim("/proc/sys/kernel/apparmor_restrict_unprivileged_userns"))
	err := tryUserNS()
	switch {
	case err == nil:
		return ok("an unprivileged process can create a user namespace")
	case blocked:
		return missing(userNSFix, "unprivileged user namespaces are off: %s", why)
	}
	return missing(userNSFix, "creating a user namespace failed: %v", err)
}

func checkPrivileges() Result {
	if os.Geteuid() == 0 {
		return ok("running as root")
	}
	if err := tryUserNS(); err != nil {
		return missing("run airlock as root (sudo), or "+userNSFix, "not root, and user namespaces are unusable: %v", err)
	}
	return ok("not root; unprivileged user namespaces work (rootless mode)")
}

// nsFlags are the namespaces every pod gets.
var nsFlags = []struct {
	name string
	flag uintptr
}{
	{"mount", syscall.CLONE_NEWNS}, {"pid", syscall.CLONE_NEWPID}, {"uts", syscall.CLONE_NEWUTS},
	{"ipc", syscall.CLONE_NEWIPC}, {"net", syscall.CLONE_NEWNET},
}

// nsAttr creates a child in the namespaces flags, inside a user namespace
// when not root (as rootless pods will be).
func nsAttr(flags uintptr) *syscall.SysProcAttr {
	if os.Geteuid() == 0 {
		return &syscall.SysProcAttr{Cloneflags: flags}
	}
	return userNSAttr(flags, os.Geteuid(), os.Getegid())
}

func checkNamespaces() Result {
	var all uintptr
	var names []string
	for _, n := range nsFlags {
		all |= n.flag
		names = append(names, n.name)
	}
	if probe("true", nsAttr(all)) == nil {
		return ok("%s namespaces work", strings.Join(names, ", "))
	}
	var bad []string
	for _, n := range nsFlags {
		if err := probe("true", nsAttr(n.flag)); err != nil {
			bad = append(bad, fmt.Sprintf("%s (%v)", n.name, err))
		}
	}
	if len(bad) == 0 {
		return missing("check the kernel's namespace limits (/proc/sys/user/max_*_namespaces)", "each namespace works alone but not all together")
	}
	return missing("use a kernel built with CONFIG_NAMESPACES and raise /proc/sys/user/max_*_namespaces", "cannot create: %s", strings.Join(bad, ", "))
}

// hasFilesystem reports whether /proc/filesystems lists fs.
func hasFilesystem(procFilesystems, fs string) bool {
	for _, line := range strings.Split(procFilesystems, "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && f[len(f)-1] == fs {
			return true
		}
	}
	return false
}

func checkOverlay() Result {
	listed := hasFilesystem(readTrim("/proc/filesystems"), "overlay")
	if os.Geteuid() != 0 {
		return overlayUserNS(Missing)
	}
	dir, cleanup, err := overlayDirs(0, 0)
	if err != nil {
		return missing("make the state directory writable", "cannot prepare a test mount near %s: %v", statedir.Default(), err)
	}
	defer cleanup()
	if err := probe("overlay", &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS}, probeDirEnv+"="+dir); err != nil {
		fix := "load the overlay module (modprobe overlay) and keep AIRLOCK_HOME on ext4, xfs or btrfs (not on overlayfs, NFS or FUSE)"
		if !listed {
			return missing(fix, "overlay is not in /proc/filesystems and a test mount failed: %v", err)
		}
		return missing(fix, "a test mount with its upper layer in %s failed: %v", existingParent(statedir.Default()), err)
	}
	return ok("a test overlay mount with its upper layer in %s works", existingParent(statedir.Default()))
}

func checkOverlayUserNS() Result { return overlayUserNS(Warn) }

// overlayUserNS mounts an overlay with userxattr inside a user namespace,
// as an unprivileged user (nobody, when run as root).
func overlayUserNS(failStatus string) Result {
	uid, gid := unprivilegedIDs()
	dir, cleanup, err := overlayDirs(uid, gid)
	if err != nil {
		return Result{Status: failStatus, Detail: fmt.Sprintf("cannot prepare a test mount: %v", err), Fix: "make the state directory writable"}
	}
	defer cleanup()
	if err := probe("overlay-userxattr", userNSAttr(syscall.CLONE_NEWNS, uid, gid), probeDirEnv+"="+dir); err != nil {
		return Result{Status: failStatus, Detail: fmt.Sprintf("overlay with userxattr in a user namespace failed: %v", err),
			Fix: "rootless pods need Linux 5.11+ and user namespaces; as root this is not needed"}
	}
	return ok("overlay with userxattr mounts inside an unprivileged user namespace (rootless mode)")
}

func checkCgroups() Result {
	lay, err := cgroup.Detect()
	if err != nil {
		return missing("mount the cgroup file systems, or run with --downgrade cgroups", "%v", err)
	}
	return cgroupResult(lay)
}

func cgroupResult(lay cgroup.Layout) Result {
	if lay.Version() == 0 {
		return missing("mount cgroup2 with the memory, cpu and pids controllers (or the v1 hierarchies), or run with --downgrade cgroups",
			"no usable controllers (cgroup2 at %q offers %q)", lay.V2Root, strings.Join(lay.V2Controllers, " "))
	}
	detail := fmt.Sprintf("%s: %s usable", lay, strings.Join(lay.Usable, ", "))
	if len(lay.Missing) > 0 {
		return warn("enable the missing controllers to use those limits", "%s; missing %s", detail, strings.Join(lay.Missing, ", "))
	}
	return ok("%s", detail)
}

// seccompField returns the Seccomp: value of /proc/self/status ("" if absent).
func seccompField(status string) string {
	for _, line := range strings.Split(status, "\n") {
		if k, v, found := strings.Cut(line, ":"); found && k == "Seccomp" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func checkSeccomp() Result {
	const fix = "use a kernel built with CONFIG_SECCOMP_FILTER, or run with --downgrade seccomp"
	mode, err := unix.PrctlRetInt(unix.PR_GET_SECCOMP, 0, 0, 0, 0)
	if err != nil {
		return missing(fix, "prctl(PR_GET_SECCOMP) failed: %v", err)
	}
	status, _ := hostFiles("/proc/self/status")
	if seccompField(status) == "" {
		return missing(fix, "/proc/self/status has no Seccomp field")
	}
	action := uint32(unix.SECCOMP_RET_KILL_PROCESS)
	if _, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_GET_ACTION_AVAIL, 0, uintptr(unsafe.Pointer(&action))); e != 0 {
		return missing(fix, "seccomp filters lack the kill-process action: %v", e)
	}
	return ok("seccomp filters supported (this process: mode %d)", mode)
}

func checkSeccompNotify() Result {
	var sizes [3]uint16 // struct seccomp_notif_sizes
	if _, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_GET_NOTIF_SIZES, 0, uintptr(unsafe.Pointer(&sizes))); e != 0 {
		return missing("use Linux 5.0 or newer for seccomp user notification", "seccomp(SECCOMP_GET_NOTIF_SIZES) failed: %v", e)
	}
	if !seccomp.NotifySupported() {
		return warn("use Linux 5.7 or newer (SECCOMP_FILTER_FLAG_TSYNC_ESRCH)",
			"seccomp user notification exists but not for a filter on every thread: raw, packet and ping sockets and host abstract-socket connects still fail in pods, unaudited")
	}
	return ok("seccomp user notification works: raw, packet and ping sockets and host abstract-socket connects are audited")
}

func checkLandlock() Result {
	abi, _, e := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, 0, 0, unix.LANDLOCK_CREATE_RULESET_VERSION)
	if e != 0 {
		fix := "use Linux 5.13+ with CONFIG_SECURITY_LANDLOCK and landlock in the lsm= boot parameter, or run with --downgrade landlock"
		if e == unix.EOPNOTSUPP {
			return missing(fix, "Landlock is built in but disabled at boot")
		}
		return missing(fix, "Landlock is not available: %v", e)
	}
	return ok("Landlock ABI %d", abi)
}

func checkNftables() Result {
	if err := probe("nftables", nsAttr(syscall.CLONE_NEWNET)); err != nil {
		return missing("load nf_tables (modprobe nf_tables), or run with --downgrade network", "creating an nf_tables table in a fresh network namespace failed: %v", err)
	}
	return ok("nf_tables works in a fresh network namespace (tested there; the host's rules were not touched)")
}

func checkPty() Result {
	f, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return missing("mount devpts with ptmxmode=666 and make /dev/ptmx available", "opening /dev/ptmx failed: %v", err)
	}
	f.Close()
	return ok("/dev/ptmx opens")
}

// mkfsPaths are where distributions keep mke2fs, after PATH.
var mkfsPaths = []string{"/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4", "/usr/sbin/mke2fs", "/sbin/mke2fs"}

// checkDiskCap looks for what resources.disk's capped layer needs: an
// ext4 image made by mkfs.ext4 and mounted through a loop device.
func checkDiskCap() Result {
	const fix = "install e2fsprogs (mkfs.ext4), load the loop and ext4 modules, or set resources.disk.bytes: 0 (no cap; the disk guard still freezes a pod when the host runs low) or run with --downgrade disk-quota"
	if os.Geteuid() != 0 {
		return warn(fix, "not root: layers are not capped in rootless mode yet")
	}
	mkfs, err := execLookPath("mkfs.ext4")
	if err != nil {
		for _, p := range mkfsPaths {
			if _, serr := os.Stat(p); serr == nil {
				mkfs, err = p, nil
				break
			}
		}
	}
	if err != nil {
		return missing(fix, "mkfs.ext4 not found")
	}
	if fs := readTrim("/proc/filesystems"); !strings.Contains(fs, "\text4") {
		return missing(fix, "the kernel lists no ext4 file system")
	}
	f, err := os.OpenFile("/dev/loop-control", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return missing(fix, "loop devices are unavailable (/dev/loop-control: %v)", err)
	}
	f.Close()
	return ok("ext4 layer images work here (%s, /dev/loop-control)", mkfs)
}

// execLookPath is exec.LookPath, a seam for tests.
var execLookPath = exec.LookPath
