package inside

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/airlock-dev/airlock/internal/sandbox"
)

// sysFail wraps a failed setup step; nil stays nil.
func sysFail(what string, err error) error {
	if err == nil {
		return nil
	}
	return &failure{code: sandbox.ExitSetup, class: classOf(err), msg: what + ": " + explain(err)}
}

// describe names the view entry a mount error belongs to and adds what to
// do next when the kernel lacks the feature.
func describe(m sandbox.Mount, err error) error {
	what := fmt.Sprintf("mounting %s on %s", m.Kind, m.Target)
	if m.Reason != "" {
		what += " (" + m.Reason + ")"
	}
	msg := what + ": " + explain(err)
	switch {
	case m.Kind == sandbox.KindOverlay && errors.Is(err, unix.ENODEV):
		msg += " — this kernel has no overlayfs; run airlock doctor"
	case errors.Is(err, unix.ENOSYS):
		msg += " — this kernel lacks the new mount API (Linux 5.12 or later is needed); run airlock doctor"
	case errors.Is(err, unix.ENOENT) && m.Kind == sandbox.KindBind:
		msg += " — the host path is missing; fix the pod's filesystem config"
	}
	return &failure{code: sandbox.ExitSetup, class: classOf(err), msg: msg}
}

// explain is err's text with a bare errno spelled as the kernel's words.
func explain(err error) string {
	var f *failure
	if errors.As(err, &f) {
		return f.msg
	}
	return err.Error()
}

// classOf marks errors that mean "this kernel cannot do it".
func classOf(err error) string {
	var f *failure
	if errors.As(err, &f) {
		return f.class
	}
	for _, e := range []error{unix.ENOSYS, unix.ENODEV, unix.EOPNOTSUPP} {
		if errors.Is(err, e) {
			return sandbox.ClassUnsupported
		}
	}
	return sandbox.ClassOther
}
