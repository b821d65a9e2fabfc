package inside

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/airlock-dev/airlock/internal/sandbox"
	"github.com/airlock-dev/airlock/internal/testutil"
)

// A Landlock domain can never be left, so each measurement runs in a
// re-executed copy of the test binary.
const landlockChildEnv = "AIRLOCK_INSIDE_LANDLOCK_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(landlockChildEnv) != "" {
		os.Exit(landlockChild())
	}
	os.Exit(m.Run())
}

// benchSpec is the rule set a default pod gets (see supervisor/walls.go):
// the read-only system directories, /proc and /sys; the workspace, home,
// /tmp, /run and /dev writable; execute on all of them.
func benchSpec() *sandbox.LandlockSpec {
	home, _ := os.UserHomeDir()
	ro := []string{"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt", "/proc", "/sys"}
	rw := []string{os.TempDir(), home, "/tmp", "/run", "/dev"}
	return &sandbox.LandlockSpec{Required: true, ReadOnly: ro, ReadWrite: rw, Exec: append(append([]string{}, ro...), rw...)}
}

func landlockChild() int {
	start := time.Now()
	if err := applyLandlock(benchSpec()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	fmt.Println(time.Since(start).Nanoseconds())
	return 0
}

// BenchmarkLandlock is the init's Landlock wall: ABI probe, rule set, one
// rule per path (each an open), restrict_self on every thread.
func BenchmarkLandlock(b *testing.B) {
	testutil.RequireRoot(b)
	var total float64
	for i := 0; i < b.N; i++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), landlockChildEnv+"=1")
		out, err := cmd.Output()
		if err != nil {
			b.Fatalf("child: %v %s", err, out)
		}
		ns, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
		if err != nil {
			b.Fatalf("child printed %q", out)
		}
		total += ns
	}
	b.ReportMetric(total/float64(b.N)/1000, "µs/apply")
}
