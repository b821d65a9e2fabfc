package netwall

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// nsThread is one OS thread of the supervisor parked inside the pod's
// network namespace. Functions run on it create sockets (and write
// sysctls) that belong to the pod's namespace. The thread stays there until
// it stops; then it goes back before it is unlocked, or is destroyed, so no
// other goroutine ever runs in the wrong namespace.
type nsThread struct {
	work chan func()
	done chan struct{}
}

// startNSThread enters the network namespace open at nsFD on a fresh
// thread and returns once it is there.
func startNSThread(nsFD int) (*nsThread, error) {
	return startThreadIn(func() error {
		return os.NewSyscallError("setns", unix.Setns(nsFD, unix.CLONE_NEWNET))
	})
}

// startThreadIn runs enter on a fresh locked thread and keeps the thread
// serving run calls until stop. At stop the thread returns to the network
// namespace it started in and is unlocked; if that fails it stays locked
// and the runtime destroys it when its goroutine exits.
func startThreadIn(enter func() error) (*nsThread, error) {
	t := &nsThread{work: make(chan func()), done: make(chan struct{})}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer close(t.done)
		home, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- os.NewSyscallError("open", err)
			return // still locked: the thread is discarded
		}
		defer unix.Close(home)
		if err := enter(); err != nil {
			errc <- err
			return
		}
		errc <- nil
		for f := range t.work {
			f()
		}
		if unix.Setns(home, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
	}()
	if err := <-errc; err != nil {
		return nil, fmt.Errorf("entering the pod network namespace: %w", err)
	}
	return t, nil
}

// run executes f on the thread inside the namespace and waits for it.
func (t *nsThread) run(f func() error) (err error) {
	finished := make(chan struct{})
	t.work <- func() {
		defer close(finished)
		err = f()
	}
	<-finished
	return err
}

// stop ends the thread.
func (t *nsThread) stop() {
	close(t.work)
	<-t.done
}
