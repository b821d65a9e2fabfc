package inside

import (
	"errors"
	"runtime"
	"unsafe"

	llsys "github.com/landlock-lsm/go-landlock/landlock/syscall"
	"golang.org/x/sys/unix"

	"github.com/airlock-dev/airlock/internal/sandbox"
)

// initCaps are all the init keeps for itself after the agent's are gone:
// setting the agent's uid/gid and groups, and signalling it under another
// uid. They never reach the agent: the bounding, inheritable and ambient
// sets are empty and SECBIT_NOROOT is locked, so execve gives it nothing.
const initCaps = 1<<unix.CAP_KILL | 1<<unix.CAP_SETUID | 1<<unix.CAP_SETGID

// securebits (linux/securebits.h, not in x/sys): uid 0 gains nothing at
// execve (NOROOT), setuid keeps no capabilities (KEEP_CAPS stays off) and
// ambient capabilities cannot be raised; each locked.
const (
	secbitNoRoot              = 1 << 0
	secbitNoRootLocked        = 1 << 1
	secbitKeepCapsLocked      = 1 << 5
	secbitNoCapAmbientRaise   = 1 << 6
	secbitNoCapAmbientRaiseLk = 1 << 7
	securebits                = secbitNoRoot | secbitNoRootLocked | secbitKeepCapsLocked | secbitNoCapAmbientRaise | secbitNoCapAmbientRaiseLk
)

// harden applies, on the locked thread the agent is forked from, every
// limit that needs no file-system access; seccomp comes last, and its
// listener, if the spec asks for one, goes to h.
func harden(spec *sandbox.InitSpec, h *handoff) error {
	// Only 0-2 reach the agent. The Go runtime's own fds stay open in the
	// init, so mark rather than close.
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return sysFail("marking inherited files close-on-exec", err)
	}
	if err := unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{}); err != nil {
		return sysFail("disabling core dumps", err)
	}
	// Not dumpable: /proc/1/{exe,mem,environ,fd} stay out of the agent's reach.
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return sysFail("making the init undumpable", err)
	}
	if err := dropCaps(); err != nil {
		return err
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return sysFail("setting no_new_privs", err)
	}
	if err := applyLandlock(spec.Landlock); err != nil {
		return err
	}
	fd, err := installSeccomp(spec.Seccomp, spec.SeccompNotify)
	if err != nil {
		return err
	}
	if fd >= 0 {
		h.add(sandbox.FileNotify, fd)
	}
	return nil
}

func dropCaps() error {
	if err := unix.Prctl(unix.PR_SET_SECUREBITS, securebits, 0, 0, 0); err != nil {
		return sysFail("locking the securebits", err)
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return sysFail("clearing ambient capabilities", err)
	}
	for c := 0; ; c++ {
		err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0)
		if errors.Is(err, unix.EINVAL) {
			break // past the last capability this kernel knows
		}
		if err != nil {
			return sysFail("dropping capabilities from the bounding set", err)
		}
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	data := [2]unix.CapUserData{{Effective: initCaps, Permitted: initCaps}}
	return sysFail("clearing capabilities", unix.Capset(&hdr, &data[0]))
}

// Landlock file-system rights (linux/landlock.h) by the ABI that brought
// them: v1 the first thirteen, v2 refer, v3 truncate, v5 ioctl on
// devices. Later ABIs add no file-system right this policy uses.
const (
	llRightsV1 = 1<<13 - 1
	llRightsV2 = llRightsV1 | llsys.AccessFSRefer
	llRightsV3 = llRightsV2 | llsys.AccessFSTruncate
	llRightsV5 = llRightsV3 | llsys.AccessFSIoctlDev
	// llFileRights are those that apply to a file (not a directory).
	llFileRights = llsys.AccessFSExecute | llsys.AccessFSWriteFile | llsys.AccessFSReadFile | llsys.AccessFSTruncate | llsys.AccessFSIoctlDev
	llRead       = llsys.AccessFSReadFile | llsys.AccessFSReadDir
	// llReadWrite is everything on a writable tree: read, execute,
	// create and remove every kind of entry, truncate, rename and link
	// across directories (refer) and device ioctls (terminals).
	llReadWrite = llRightsV5
)

// llHandled is what a ruleset of this ABI can restrict (best effort: a
// right the kernel does not know stays unrestricted, as without Landlock).
func llHandled(abi int) uint64 {
	switch {
	case abi >= 5:
		return llRightsV5
	case abi >= 3:
		return llRightsV3
	case abi == 2:
		return llRightsV2
	default:
		return llRightsV1
	}
}

// applyLandlock restricts the locked thread the agent is forked from,
// and so the agent and everything it starts: a Landlock domain is
// inherited at fork and can never be left. The init's other threads only
// run its own code (signal forwarding, reaping) and are left as they are:
// restricting them too (libraries do it by stopping and signalling every
// thread, twice) cost the start 0.3-0.7 ms, and none of them ever forks.
// Rights are unions per path: ReadOnly read, ReadWrite everything, Exec
// execute.
func applyLandlock(l *sandbox.LandlockSpec) error {
	if l == nil {
		return nil
	}
	abi, err := llsys.LandlockGetABIVersion()
	if err != nil || abi < 1 {
		if !l.Required {
			return nil
		}
		return fail(sandbox.ClassUnsupported, "Landlock is not available in this kernel (%v); enable it (CONFIG_SECURITY_LANDLOCK, lsm=landlock) or run with --downgrade landlock; run airlock doctor", err)
	}
	handled := llHandled(abi)
	attr := llsys.RulesetAttr{HandledAccessFS: handled}
	rs, err := llsys.LandlockCreateRuleset(&attr, 0)
	if err != nil {
		return sysFail("creating the Landlock ruleset", err)
	}
	defer unix.Close(rs)
	// Listing "/" (and the empty mount-point directories the view creates
	// on its read-only root tmpfs, e.g. /home above a workspace) must work:
	// tools call readdir there. The right is hierarchical, but it only lists
	// names, and every name under "/" is one the mount plan chose to show;
	// reading, writing and executing stay limited to the paths below.
	if err := llAdd(rs, "/", llsys.AccessFSReadDir&handled); err != nil {
		return err
	}
	for _, set := range []struct {
		paths  []string
		rights uint64
	}{{l.ReadOnly, llRead}, {l.ReadWrite, llReadWrite}, {l.Exec, llsys.AccessFSExecute}} {
		for _, p := range set.paths {
			if err := llAdd(rs, p, set.rights&handled); err != nil {
				return err
			}
		}
	}
	// no_new_privs is set on this thread already (harden).
	if err := llsys.LandlockRestrictSelf(rs, 0); err != nil {
		return sysFail("applying Landlock rules", err)
	}
	return nil
}

// llAdd allows rights beneath path; a path that does not exist is
// skipped, and one that is not a directory gets only the file rights.
func llAdd(rs int, path string, rights uint64) error {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return sysFail("opening "+path+" for a Landlock rule", err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return sysFail("opening "+path+" for a Landlock rule", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		rights &= llFileRights
	}
	if rights == 0 {
		return nil
	}
	rule := llsys.PathBeneathAttr{AllowedAccess: rights, ParentFd: fd}
	if err := llsys.LandlockAddPathBeneathRule(rs, &rule, 0); err != nil {
		return sysFail("adding the Landlock rule for "+path, err)
	}
	return nil
}

// notifyFlags are seccomp.NotifyFlags (a test holds them equal). The init
// does not import package seccomp: its package initialisation, and the
// YAML parser's it brings, would run in every init before the spec is
// read (0.1 ms).
const notifyFlags = unix.SECCOMP_FILTER_FLAG_TSYNC | unix.SECCOMP_FILTER_FLAG_TSYNC_ESRCH | unix.SECCOMP_FILTER_FLAG_NEW_LISTENER

// installSeccomp loads the filter on every thread of the init (TSYNC):
// the agent is forked from one of them, and no thread may stay unfiltered.
// With notify it also asks for the filter's listener (NEW_LISTENER, which
// beside TSYNC needs TSYNC_ESRCH) and returns it (close-on-exec: the
// agent never holds it), else -1.
func installSeccomp(prog []unix.SockFilter, notify bool) (int, error) {
	if len(prog) == 0 {
		return -1, nil
	}
	flags := uintptr(unix.SECCOMP_FILTER_FLAG_TSYNC)
	if notify {
		flags = notifyFlags
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	r, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, flags, uintptr(unsafe.Pointer(&fprog)))
	runtime.KeepAlive(prog)
	if errno == unix.EINVAL || errno == unix.ENOSYS {
		return -1, fail(sandbox.ClassUnsupported, "installing the seccomp filter: %v — the kernel rejected it or lacks seccomp filters (or user notification); run airlock doctor", errno)
	}
	if errno == unix.ESRCH {
		return -1, fail(sandbox.ClassOther, "installing the seccomp filter: a thread could not be synchronised")
	}
	if errno != 0 {
		return -1, sysFail("installing the seccomp filter", errno)
	}
	if notify {
		return int(r), nil
	}
	if r != 0 {
		return -1, fail(sandbox.ClassOther, "installing the seccomp filter: thread %d could not be synchronised", r)
	}
	return -1, nil
}
