package seccomp

import (
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/airlock-dev/airlock/internal/errdefs"
)

// Install loads the program as a seccomp filter on every thread of the
// calling process (SECCOMP_FILTER_FLAG_TSYNC). It sets no_new_privs first
// when it is not already set, as the kernel requires of a process without
// CAP_SYS_ADMIN. Filters survive execve and can never be removed.
func Install(prog []unix.SockFilter) error {
	if runtime.GOARCH != "amd64" {
		return errdefs.Unsupported("seccomp programs are compiled for x86_64 only; this is %s", runtime.GOARCH)
	}
	if err := validateProg(prog); err != nil {
		return fmt.Errorf("refusing to install seccomp program: %w", err)
	}
	// no_new_privs is per thread until TSYNC copies it to the others, so
	// the prctl and the seccomp call must run on the same thread.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := setNoNewPrivs(); err != nil {
		return err
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	r, _, errno := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER,
		unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&fprog)))
	runtime.KeepAlive(prog)
	if errno != 0 {
		return fmt.Errorf("installing seccomp filter: %w (the kernel needs CONFIG_SECCOMP_FILTER; run `airlock doctor`)", errno)
	}
	if r != 0 {
		return fmt.Errorf("installing seccomp filter: thread %d could not be synchronised (it has a conflicting filter): %w", r, errdefs.ErrConflict)
	}
	return nil
}

func setNoNewPrivs() error {
	on, err := unix.PrctlRetInt(unix.PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0)
	if err != nil {
		return fmt.Errorf("reading no_new_privs: %w", err)
	}
	if on == 1 {
		return nil
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("setting no_new_privs before seccomp: %w", err)
	}
	return nil
}
