package pod

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/airlock-dev/airlock/internal/errdefs"
	"golang.org/x/sys/unix"
)

// LockTimeout bounds how long Lock waits for another command.
var LockTimeout = 10 * time.Second

// Lock takes the pod's exclusive lock (flock on pods/<name>/lock), waiting
// up to LockTimeout. Hold it for every read-modify-write of pod state; the
// returned func releases it.
func (p *Pod) Lock() (unlock func(), err error) {
	f, err := os.OpenFile(p.lockPath(), os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("locking pod %s: %w", p.Name, err)
	}
	deadline := time.Now().Add(LockTimeout)
	for wait := time.Millisecond; ; wait = min(wait*2, 50*time.Millisecond) {
		err := flock(f, unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { _ = flock(f, unix.LOCK_UN); f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("locking pod %s: %w", p.Name, os.NewSyscallError("flock", err))
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, errdefs.Busy("pod %s is locked by another airlock command (waited %s); retry when it finishes", p.Name, LockTimeout)
		}
		time.Sleep(wait)
	}
}

func flock(f *os.File, how int) error {
	for {
		err := unix.Flock(int(f.Fd()), how)
		if err != unix.EINTR {
			return err
		}
	}
}

// The run lock is an open-file-description (OFD) write lock on
// run/running rather than a flock: F_OFD_GETLK lets Running ask whether
// it is held without taking it, so a status query can never make a
// concurrent AcquireRun fail. The holder writes its pid into the file.

// AcquireRun marks the pod running for as long as the caller holds it (the
// supervisor, for the whole run). It fails with errdefs.ErrBusy when the
// pod already runs. The lock dies with the process, so a crashed
// supervisor never leaves a pod stuck "running".
func (p *Pod) AcquireRun() (release func(), err error) {
	f, err := os.OpenFile(p.runLockPath(), os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("marking pod %s running: %w", p.Name, err)
	}
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0}
	if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk); err != nil {
		f.Close()
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
			pid, _ := p.Running()
			return nil, errdefs.Busy("pod %s is already running (pid %d); stop it with airlock stop %s", p.Name, pid, p.Name)
		}
		return nil, fmt.Errorf("marking pod %s running: %w", p.Name, os.NewSyscallError("fcntl", err))
	}
	if err := writePid(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("marking pod %s running: %w", p.Name, err)
	}
	return func() {
		_ = f.Truncate(0)
		f.Close() // closing the last fd of the description drops the OFD lock
	}, nil
}

func writePid(f *os.File) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	_, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return err
}

// Running reports whether some process holds the pod's run lock, and the
// pid it recorded (0 if it has not written it yet).
func (p *Pod) Running() (pid int, running bool) {
	f, err := os.OpenFile(p.runLockPath(), os.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0}
	if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_GETLK, &lk); err != nil || lk.Type == unix.F_UNLCK {
		return 0, false
	}
	buf := make([]byte, 32)
	n, _ := f.ReadAt(buf, 0)
	pid, _ = strconv.Atoi(strings.TrimSpace(string(buf[:n])))
	return pid, true
}

// waitStopped waits until nobody holds the run lock.
func (p *Pod) waitStopped(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		if _, running := p.Running(); !running {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}
