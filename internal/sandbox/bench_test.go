package sandbox_test

import (
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/airlock-dev/airlock/internal/sandbox"
	"github.com/airlock-dev/airlock/internal/seccomp"
)

// BenchmarkRunTrue measures the sandbox layer alone: sandbox.Run of
// `true` with the walls this package builds (new mount, PID, UTS, IPC and
// network namespaces; read-only system dirs; workspace and home overlays;
// a hidden ~/.ssh; fresh /proc, /sys, /dev; private /tmp and /run;
// pivot_root; capabilities dropped; Landlock; Airlock's default seccomp
// profile). It leaves out what the supervisor adds around it (cgroups,
// the network wall, the audit trail and run state, the disk-wall layer
// mount) and the CLI's own start: bench/start.sh measures the binary end
// to end. It reports the median as well as the mean.
func BenchmarkRunTrue(b *testing.B) {
	f := newFixture(b, "ws")
	spec := f.spec(b, "/usr/bin/true")
	spec.NewNet = true
	pol, err := seccomp.Profile("default")
	if err != nil {
		b.Fatal(err)
	}
	if spec.Seccomp, err = seccomp.Compile(pol); err != nil {
		b.Fatal(err)
	}
	spec.Landlock = &sandbox.LandlockSpec{ReadOnly: []string{"/usr", "/etc", "/proc"}, ReadWrite: []string{f.ws, f.home, "/tmp", "/dev"}, Exec: []string{"/usr"}}
	measure(b, func() error {
		code, err := sandbox.Run(spec)
		if err == nil && code != 0 {
			b.Fatalf("true exited %d", code)
		}
		return err
	})
}

// BenchmarkBwrapTrue is the peer: bubblewrap building the nearest walls
// (no Landlock; no seccomp here, see bench/start.sh for bwrap with
// Airlock's program; binds where bwrap 0.8 has no overlays).
func BenchmarkBwrapTrue(b *testing.B) {
	bwrap, err := exec.LookPath("bwrap")
	if err != nil {
		b.Skip("bwrap not installed")
	}
	f := newFixture(b, "ws")
	args := []string{
		"--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-net", "--die-with-parent", "--new-session",
		"--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
		"--symlink", "usr/lib64", "/lib64", "--symlink", "usr/sbin", "/sbin", "--ro-bind", "/etc", "/etc",
		"--proc", "/proc", "--ro-bind", "/sys", "/sys", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/run",
		// bwrap 0.8 has no --overlay: plain binds, which cost it less.
		"--bind", f.home, f.home, "--bind", f.ws, f.ws,
		"--tmpfs", filepath.Join(f.home, ".ssh"), "--remount-ro", filepath.Join(f.home, ".ssh"),
		"--hostname", "pod", "--cap-drop", "ALL", "--chdir", f.ws, "/usr/bin/true",
	}
	if out, err := exec.Command(bwrap, args...).CombinedOutput(); err != nil {
		b.Skipf("bwrap cannot build these walls here: %v: %s", err, out)
	}
	measure(b, func() error { return exec.Command(bwrap, args...).Run() })
}

func measure(b *testing.B, spawn func() error) {
	b.Helper()
	durs := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if err := spawn(); err != nil {
			b.Fatal(err)
		}
		durs = append(durs, time.Since(start))
	}
	b.StopTimer()
	sort.Slice(durs, func(i, j int) bool { return durs[i] < durs[j] })
	b.ReportMetric(float64(durs[len(durs)/2].Microseconds())/1000, "median-ms")
}
