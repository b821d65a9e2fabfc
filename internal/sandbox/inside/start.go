package inside

import (
	"os"
	"os/signal"
	"runtime"
)

// The init's start-up, before main: only in the process that runs as the
// init, never in the CLI that links this package too.
func init() {
	if len(os.Args) < 2 || os.Args[1] != Arg {
		return
	}
	// The setup runs on the process's main thread, its thread group
	// leader: LockOSThread in an init function makes main run on the
	// thread that ran the package inits. joinCgroup relies on it.
	runtime.LockOSThread()
	go registerSignals()
}

// early holds the forwarded signals, registered by a goroutine of their
// own as the init starts: signal.Notify costs a round trip to the
// runtime's signal-mask thread per signal, 0.7-0.9 ms for the seven here,
// which runs while the init reads its spec and builds the view rather
// than before them. notifySignals waits for it.
var early = struct {
	sigs chan os.Signal
	done chan struct{}
}{make(chan os.Signal, 8), make(chan struct{})}

func registerSignals() {
	signal.Notify(early.sigs, forwarded...)
	close(early.done)
}
