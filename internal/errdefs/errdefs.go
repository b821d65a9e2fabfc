// Package errdefs holds the error categories that every Airlock package
// wraps its errors in, so that the CLI can map them to exit codes and the
// HTTP API to status codes without string matching.
//
// Wrap with fmt.Errorf("...: %w", errdefs.ErrNotFound) or errdefs.Invalid(...).
package errdefs

import (
	"errors"
	"fmt"
)

var (
	// ErrNotFound: the named pod, commit, key or path does not exist.
	ErrNotFound = errors.New("not found")
	// ErrInvalid: the user's input (name, path, config, flag) is malformed.
	ErrInvalid = errors.New("invalid input")
	// ErrConflict: the request collides with existing state (duplicate
	// name, host file changed since the pod's copy was made).
	ErrConflict = errors.New("conflict")
	// ErrBusy: the pod is running and the operation needs it stopped.
	ErrBusy = errors.New("pod is running")
	// ErrPermission: the caller lacks a privilege the operation needs.
	ErrPermission = errors.New("permission denied")
	// ErrUnsupported: the kernel or file system lacks a feature a wall needs.
	ErrUnsupported = errors.New("unsupported")
)

// categorised is an error that carries a category and a message that
// already reads well on its own (the category is not appended to the text).
type categorised struct {
	cat error
	msg string
}

func (e *categorised) Error() string        { return e.msg }
func (e *categorised) Is(target error) bool { return target == e.cat }

// New returns an error whose text is msg and which matches cat under errors.Is.
func New(cat error, format string, args ...any) error {
	return &categorised{cat: cat, msg: fmt.Sprintf(format, args...)}
}

// Invalid is New(ErrInvalid, ...).
func Invalid(format string, args ...any) error { return New(ErrInvalid, format, args...) }

// NotFound is New(ErrNotFound, ...).
func NotFound(format string, args ...any) error { return New(ErrNotFound, format, args...) }

// Conflict is New(ErrConflict, ...).
func Conflict(format string, args ...any) error { return New(ErrConflict, format, args...) }

// Busy is New(ErrBusy, ...).
func Busy(format string, args ...any) error { return New(ErrBusy, format, args...) }

// Unsupported is New(ErrUnsupported, ...).
func Unsupported(format string, args ...any) error { return New(ErrUnsupported, format, args...) }
