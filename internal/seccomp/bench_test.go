package seccomp

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/airlock-dev/airlock/internal/testutil"
)

// benchMain times a loop of one system call in the child, with or without
// the filter: getpid, whose verdict the kernel caches per syscall number so
// the BPF program never runs, or ioctl(FIONREAD) on /dev/null, whose
// verdict depends on the request, so the whole program runs every time.
func benchMain() int {
	n, _ := strconv.Atoi(os.Getenv(loopsEnv))
	call := func() { unix.RawSyscall(unix.SYS_GETPID, 0, 0, 0) }
	if os.Getenv(callEnv) == "ioctl" {
		f, err := os.Open("/dev/null")
		if err != nil {
			return 2
		}
		fd, v := f.Fd(), 0
		call = func() { unix.RawSyscall(unix.SYS_IOCTL, fd, unix.TIOCINQ, uintptr(unsafe.Pointer(&v))) }
	}
	start := time.Now()
	for i := 0; i < n; i++ {
		call()
	}
	fmt.Println(time.Since(start).Nanoseconds())
	return 0
}

const callEnv = "AIRLOCK_SECCOMP_CALL"

// installMain times Install of the default profile's program, compiled
// before the clock starts: the in-pod init's share of the seccomp wall.
func installMain() int {
	prog, err := Compile(defaultPolicy())
	if err != nil {
		return 2
	}
	start := time.Now()
	if err := Install(prog); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
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
func BenchmarkGetpid(b *testing.B) { benchSyscall(b, "getpid") }

// BenchmarkIoctl is the worst case: ioctl's rules test its request
// argument, so the kernel cannot cache the verdict and runs the whole
// program (arch, x32, binary search, the TIOCSTI/TIOCLINUX tests) per call.
func BenchmarkIoctl(b *testing.B) { benchSyscall(b, "ioctl") }

func benchSyscall(b *testing.B, call string) {
	testutil.RequireRoot(b)
	for _, profile := range []string{"none", "allow-all", "default", "strict"} {
		b.Run(profile, func(b *testing.B) {
			out, err := runChild(b, "bench", profile, loopsEnv+"="+strconv.Itoa(b.N), callEnv+"="+call)
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

// BenchmarkCompile is the supervisor's share of the seccomp wall: the
// default policy compiled to BPF on every run.
func BenchmarkCompile(b *testing.B) {
	for i := 0; i < b.N; i++ {
		if _, err := Compile(defaultPolicy()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkInstall is the init's share: one seccomp(SET_MODE_FILTER,
// TSYNC) of the default program, timed inside a fresh child each time.
func BenchmarkInstall(b *testing.B) {
	testutil.RequireRoot(b)
	var total float64
	for i := 0; i < b.N; i++ {
		out, err := runChild(b, "install", "none")
		if err != nil {
			b.Fatal(err)
		}
		ns, err := strconv.ParseFloat(strings.TrimSpace(out), 64)
		if err != nil {
			b.Fatalf("child printed %q", out)
		}
		total += ns
	}
	b.ReportMetric(total/float64(b.N)/1000, "µs/install")
}
