package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// mustJSON runs airlock with args, which must succeed, and decodes its
// standard output as a T.
func mustJSON[T any](e *env, args ...string) T {
	e.t.Helper()
	var v T
	out := e.must(args...).stdout
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		e.t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return v
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	waitForUpTo(t, 10*time.Second, cond)
}

// waitForUpTo polls cond for up to d.
func waitForUpTo(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("condition not met within %s", d)
}
