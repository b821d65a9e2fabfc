// Package testutil holds helpers shared by Airlock's tests: privilege gates
// that fail instead of skipping in CI, and a private AIRLOCK_HOME.
package testutil

import (
	"os"
	"strings"
	"testing"
)

// Required reports whether privileged tests must run (CI sets
// AIRLOCK_REQUIRE_PRIVILEGED=1): a missing privilege is then a failure.
func Required() bool { return os.Getenv("AIRLOCK_REQUIRE_PRIVILEGED") == "1" }

// RequireRoot skips the test unless it runs as root, or fails it when
// privileged tests are required.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if Required() {
		t.Fatalf("test needs root and AIRLOCK_REQUIRE_PRIVILEGED=1 is set")
	}
	t.Skip("test needs root (set AIRLOCK_REQUIRE_PRIVILEGED=1 to make this a failure)")
}

// RequireFeature fails or skips the test when ok is false, naming what is missing.
func RequireFeature(t testing.TB, ok bool, what string) {
	t.Helper()
	if ok {
		return
	}
	if Required() {
		t.Fatalf("test needs %s and AIRLOCK_REQUIRE_PRIVILEGED=1 is set", what)
	}
	t.Skipf("test needs %s", what)
}

// TempHome points AIRLOCK_HOME at a fresh temporary directory for the test.
func TempHome(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("AIRLOCK_HOME", dir)
	return dir
}

// Mounted reports whether anything is mounted at or below dir (used by
// tests to prove they leave no mounts behind).
func Mounted(dir string) bool {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			return true
		}
	}
	return false
}
