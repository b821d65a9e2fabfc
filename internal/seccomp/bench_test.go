package seccomp

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/airlock-dev/airlock/internal/testutil"
)

func runtimeLockOSThread() { runtime.LockOSThread() }

// benchMain times a getpid loop in the child, with or without the filter.
func benchMain() int {
	n, _ := strconv.Atoi(os.Getenv(loopsEnv))
	start := time.Now()
	for i := 0; i < n; i++ {
		unix.RawSyscall(unix.SYS_GETPID, 0, 0, 0)
	}
	fmt.Println(time.Since(start).Nanoseconds())
	return 0
}

// BenchmarkGetpid reports the cost of one getpid with and without the
// default profile. Each run is a child process, since a filter cannot be
// removed; ns/op is measured inside the child, excluding its start-up.
func BenchmarkGetpid(b *testing.B) {
	testutil.RequireRoot(b)
	for _, profile := range []string{"none", "default", "strict"} {
		b.Run(profile, func(b *testing.B) {
			out, err := runChild(b, "bench", profile, loopsEnv+"="+strconv.Itoa(b.N))
			if err != nil {
				b.Fatal(err)
			}
			ns, err := strconv.ParseFloat(strings.TrimSpace(out), 64)
			if err != nil {
				b.Fatalf("child printed %q", out)
			}
			b.ReportMetric(ns/float64(b.N), "ns/op")
		})
	}
}
