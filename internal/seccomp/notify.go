package seccomp

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/airlock-dev/airlock/internal/errdefs"
)

// The user-notification ABI of linux/seccomp.h, which x/sys/unix has the
// ioctl numbers of but not the structures.

// seccompData is struct seccomp_data.
type seccompData struct {
	Nr   int32
	Arch uint32
	IP   uint64
	Args [6]uint64
}

// seccompNotif is struct seccomp_notif (80 bytes).
type seccompNotif struct {
	ID    uint64
	Pid   uint32
	Flags uint32
	Data  seccompData
}

// seccompNotifResp is struct seccomp_notif_resp (24 bytes).
type seccompNotifResp struct {
	ID    uint64
	Val   int64
	Error int32
	Flags uint32
}

// ErrListenerClosed is returned by Receive once Close was called.
var ErrListenerClosed = errors.New("seccomp listener closed")

// ErrNoUsers is returned by Receive when no process is left under the
// filter: nothing more can arrive.
var ErrNoUsers = errors.New("no process uses the seccomp filter any more")

// Notification is one syscall that a Notify rule handed to the listener.
// The calling thread waits until it is answered. Args are the kernel's
// copy; memory they point to is the caller's and may change at any time.
type Notification struct {
	ID   uint64
	Pid  int // the caller's thread, in the listener's PID namespace
	Nr   uint32
	Arch uint32
	Args [6]uint64
}

// Listener serves the notifications of one filter: the file descriptor
// SECCOMP_FILTER_FLAG_NEW_LISTENER returned. One goroutine receives and
// answers; Close may be called from any other.
type Listener struct {
	mu     sync.Mutex // held while receiving or answering; Close waits for it
	f      *os.File
	stop   int // eventfd: Close wakes a waiting Receive
	closed bool
	once   sync.Once
}

// NewListener takes ownership of the listener file.
func NewListener(f *os.File) (*Listener, error) {
	stop, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, os.NewSyscallError("eventfd", err)
	}
	return &Listener{f: f, stop: stop}, nil
}

// Receive waits for the next notification. It returns ErrListenerClosed
// after Close and ErrNoUsers once every process under the filter is gone.
func (l *Listener) Receive() (Notification, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for {
		if l.closed {
			return Notification{}, ErrListenerClosed
		}
		fds := []unix.PollFd{{Fd: int32(l.f.Fd()), Events: unix.POLLIN}, {Fd: int32(l.stop), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, -1); err != nil {
			if err == unix.EINTR {
				continue
			}
			return Notification{}, os.NewSyscallError("poll", err)
		}
		if fds[1].Revents != 0 {
			return Notification{}, ErrListenerClosed
		}
		if fds[0].Revents&unix.POLLIN == 0 {
			if fds[0].Revents&(unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0 {
				return Notification{}, ErrNoUsers
			}
			continue
		}
		var n seccompNotif // RECV wants it zeroed
		err := l.ioctl(unix.SECCOMP_IOCTL_NOTIF_RECV, unsafe.Pointer(&n))
		switch err {
		case nil:
			return Notification{ID: n.ID, Pid: int(n.Pid), Nr: uint32(n.Data.Nr), Arch: n.Data.Arch, Args: n.Data.Args}, nil
		case unix.EINTR, unix.ENOENT:
			continue // interrupted, or the caller went away between poll and recv
		default:
			return Notification{}, os.NewSyscallError("SECCOMP_IOCTL_NOTIF_RECV", err)
		}
	}
}

// Valid reports whether the notification is still waiting for its answer.
// Check it after reading anything of the caller's (its memory, its /proc
// files): the thread may have been killed and its PID reused meanwhile.
func (l *Listener) Valid(id uint64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.closed && l.ioctl(unix.SECCOMP_IOCTL_NOTIF_ID_VALID, unsafe.Pointer(&id)) == nil
}

// Continue lets the kernel run the call as if the filter had allowed it.
// The kernel reads the call's memory again, so whatever the listener saw
// there decides nothing: use it to watch, never to allow.
func (l *Listener) Continue(id uint64) error {
	return l.send(seccompNotifResp{ID: id, Flags: unix.SECCOMP_USER_NOTIF_FLAG_CONTINUE})
}

// Fail makes the call return -1 with errno.
func (l *Listener) Fail(id uint64, errno unix.Errno) error {
	return l.send(seccompNotifResp{ID: id, Error: -int32(errno)})
}

func (l *Listener) send(r seccompNotifResp) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrListenerClosed
	}
	err := l.ioctl(unix.SECCOMP_IOCTL_NOTIF_SEND, unsafe.Pointer(&r))
	if err == unix.ENOENT {
		return nil // the caller is gone (killed, or interrupted and restarting): nothing to answer
	}
	if err != nil {
		return os.NewSyscallError("SECCOMP_IOCTL_NOTIF_SEND", err)
	}
	return nil
}

func (l *Listener) ioctl(req uint, arg unsafe.Pointer) error {
	for {
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, l.f.Fd(), uintptr(req), uintptr(arg))
		if errno != unix.EINTR {
			if errno == 0 {
				return nil
			}
			return errno
		}
	}
}

// Close wakes a waiting Receive and closes the listener. Calls still
// waiting in the kernel then fail with ENOSYS.
func (l *Listener) Close() error {
	l.once.Do(func() {
		one := []byte{1, 0, 0, 0, 0, 0, 0, 0}
		_, _ = unix.Write(l.stop, one)
	})
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	unix.Close(l.stop)
	return l.f.Close()
}

// InstallNotify is Install for a program from CompileNotify: it asks the
// kernel for a listener (SECCOMP_FILTER_FLAG_NEW_LISTENER, with
// TSYNC_ESRCH, which the kernel requires beside TSYNC then) and returns
// it. Whoever holds it must serve it, or hand it on and close it.
func InstallNotify(prog []unix.SockFilter) (*os.File, error) {
	if runtime.GOARCH != "amd64" {
		return nil, errdefs.Unsupported("seccomp programs are compiled for x86_64 only; this is %s", runtime.GOARCH)
	}
	if err := validateProg(prog); err != nil {
		return nil, fmt.Errorf("refusing to install seccomp program: %w", err)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := setNoNewPrivs(); err != nil {
		return nil, err
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	fd, _, errno := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER,
		NotifyFlags, uintptr(unsafe.Pointer(&fprog)))
	runtime.KeepAlive(prog)
	if errno == unix.ESRCH {
		return nil, fmt.Errorf("installing seccomp filter: a thread could not be synchronised (it has a conflicting filter): %w", errdefs.ErrConflict)
	}
	if errno != 0 {
		return nil, fmt.Errorf("installing seccomp filter with a listener: %w (user notification needs Linux 5.0 and CONFIG_SECCOMP_FILTER; run `airlock doctor`)", errno)
	}
	return os.NewFile(fd, "seccomp-notify"), nil
}

// NotifyFlags are the seccomp(2) flags for a filter with a listener on
// every thread.
const NotifyFlags = unix.SECCOMP_FILTER_FLAG_TSYNC | unix.SECCOMP_FILTER_FLAG_TSYNC_ESRCH | unix.SECCOMP_FILTER_FLAG_NEW_LISTENER

var notifyProbe struct {
	once sync.Once
	ok   bool
}

// NotifySupported reports whether this kernel installs a filter with a
// listener on every thread (Linux 5.7: NEW_LISTENER with TSYNC_ESRCH).
// It asks seccomp(2) with a NULL program: the kernel checks the flags
// first (EINVAL) and only then reads the program (EFAULT), so nothing is
// installed either way.
func NotifySupported() bool {
	notifyProbe.once.Do(func() {
		_, _, errno := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, NotifyFlags, 0)
		notifyProbe.ok = errno == unix.EFAULT
	})
	return notifyProbe.ok
}
