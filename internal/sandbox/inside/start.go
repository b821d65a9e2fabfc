package inside

import (
	"os"
	"os/signal"
	"runtime"
	"syscall"
)

// The init starts from this package's init function, never from main:
// only in the process that runs as the init, never in the CLI that links
// this package too.
//
// Package initialisation runs in dependency order, so every package the
// init uses is ready here, and the rest of the binary's (the CLI, the
// supervisor, the HTTP and DNS servers, the YAML config), a quarter of a
// millisecond or more on the init's path to its spec, never runs in the
// init at all. Main never returns, so neither does this function.
func init() {
	if len(os.Args) < 2 || os.Args[1] != Arg {
		return
	}
	// The setup runs on the process's main thread, its thread group
	// leader: the goroutine running package initialisation is the main
	// goroutine, on the main thread, and Main locks it there.
	// joinCgroup relies on it.
	runtime.LockOSThread()
	go registerSignals()
	Main()
}

// early holds the forwarded signals, registered by a goroutine of their
// own as the init starts: signal.Notify costs a round trip to the
// runtime's signal-mask thread per signal, 0.7-0.9 ms for the seven here,
// which runs while the init reads its spec and builds the view rather
// than before them. notifySignals waits for it.
var early = struct {
	sigs    chan os.Signal
	dropped chan os.Signal
	done    chan struct{}
}{make(chan os.Signal, 8), make(chan os.Signal, 1), make(chan struct{})}

// fatal are the signals on which the Go runtime crashes the process when
// nothing has asked for them. The kernel delivers a signal from inside a
// PID namespace to its init only if the init handles it, and the runtime
// handles these: without this, `kill -SEGV 1` from the agent (or a
// tkill of one of the init's threads, or pidfd_send_signal, which no
// seccomp rule can tell apart) killed the init and the pod with it.
// Asked for and never read, they are dropped; a fault of the init's own
// (not a kill) still crashes it, as it must.
var fatal = []os.Signal{syscall.SIGSEGV, syscall.SIGBUS, syscall.SIGFPE, syscall.SIGILL,
	syscall.SIGABRT, syscall.SIGTRAP, syscall.SIGSYS, syscall.SIGSTKFLT}

func registerSignals() {
	signal.Notify(early.sigs, forwarded...)
	signal.Notify(early.dropped, fatal...)
	close(early.done)
}
