// Package trace is a temporary start-up tracer (not to be committed).
package trace

import (
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

var (
	On    = os.Getenv("AIRLOCK_TRACE") != ""
	mu    sync.Mutex
	marks []string
	out   *os.File
)

func now() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

func Mark(name string) {
	if !On {
		return
	}
	t := now()
	mu.Lock()
	marks = append(marks, fmt.Sprintf("%d %d %s", t, os.Getpid(), name))
	mu.Unlock()
}

// Open opens the dump file early (before pivot_root in the init).
func Open() {
	if !On || out != nil {
		return
	}
	out, _ = os.OpenFile("/tmp/airlock-trace.log", os.O_WRONLY|os.O_APPEND|os.O_CREATE|unix.O_CLOEXEC, 0o644)
}

func Dump() {
	if !On {
		return
	}
	Open()
	mu.Lock()
	defer mu.Unlock()
	if out == nil {
		return
	}
	s := ""
	for _, m := range marks {
		s += m + "\n"
	}
	_, _ = out.WriteString(s)
	marks = nil
}
