package inside

import (
	"testing"

	"github.com/airlock-dev/airlock/internal/seccomp"
)

// The init installs a filter with a listener with the flags package
// seccomp defines, without importing it.
func TestNotifyFlags(t *testing.T) {
	if notifyFlags != seccomp.NotifyFlags {
		t.Errorf("notifyFlags %#x, seccomp.NotifyFlags %#x", notifyFlags, seccomp.NotifyFlags)
	}
}
