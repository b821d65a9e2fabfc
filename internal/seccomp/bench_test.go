package seccomp

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/airlock-dev/airlock/internal/testutil"
)

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
// "allow-all" is a one-instruction filter: the difference between it and
// "none" is the kernel's price for having any filter at all (the slow
// syscall entry path), which no compiler can remove.
func BenchmarkGetpid(b *testing.B) {
	testutil.RequireRoot(b)
	for _, profile := range []string{"none", "allow-all", "default", "strict"} {
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

// BenchmarkShellWork is closer to real work: a shell that runs `ls /usr/bin`
// twenty times (fork, exec, dynamic loading, getdents, stat, write) under
// each profile. One op is one whole child run.
func BenchmarkShellWork(b *testing.B) {
	testutil.RequireRoot(b)
	const script = "i=0; while [ $i -lt 20 ]; do ls -l /usr/bin >/dev/null; i=$((i+1)); done"
	for _, profile := range []string{"none", "default"} {
		b.Run(profile, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				js := `["/bin/sh","-c","` + script + `"]`
				if _, err := runChild(b, "exec", profile, argvEnv+"="+js); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
