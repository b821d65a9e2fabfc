// Package cli is the airlock command line: one file per verb that parses
// flags, calls the packages that do the work, and prints text or --json.
// No logic lives here that a test could not reach through those packages.
//
// Exit codes (documented in docs/cli.md): 0 success; 1 failure; 2 usage or
// invalid input; 3 not found; 4 conflict; 5 pod busy; 6 unsupported
// kernel/file system; 7 permission. `airlock run` exits with the command's
// status, or 125/126/127 as docker run does.
package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/airlock-dev/airlock/internal/errdefs"
)

// Exit codes for everything but `run`.
const (
	exitFailure     = 1
	exitUsage       = 2
	exitNotFound    = 3
	exitConflict    = 4
	exitBusy        = 5
	exitUnsupported = 6
	exitPermission  = 7
)

// exitError carries an explicit exit status (run's command status, audit
// verify's 1) through cobra without printing anything more.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// Main runs the CLI with args (without the program name) and returns the
// process exit status.
func Main(args []string) int {
	root := newRoot(args)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.msg != "" {
			fmt.Fprintln(os.Stderr, "airlock: "+oneLine(ee.msg))
		}
		return ee.code
	}
	fmt.Fprintln(os.Stderr, "airlock: "+oneLine(err.Error()))
	return exitCode(err)
}

func exitCode(err error) int {
	switch {
	case errors.Is(err, errdefs.ErrInvalid), isUsage(err):
		return exitUsage
	case errors.Is(err, errdefs.ErrNotFound):
		return exitNotFound
	case errors.Is(err, errdefs.ErrConflict):
		return exitConflict
	case errors.Is(err, errdefs.ErrBusy):
		return exitBusy
	case errors.Is(err, errdefs.ErrUnsupported):
		return exitUnsupported
	case errors.Is(err, errdefs.ErrPermission), errors.Is(err, os.ErrPermission):
		return exitPermission
	}
	return exitFailure
}

// usageError marks cobra's own flag and argument errors.
type usageError struct{ error }

func (u usageError) Unwrap() error { return u.error }

func isUsage(err error) bool {
	var u usageError
	if errors.As(err, &u) {
		return true
	}
	// cobra reports an unknown verb with a plain error.
	return strings.HasPrefix(err.Error(), "unknown command ")
}

// oneLine keeps every error message on a single line, whatever a kernel
// message or a hostile file name put into it, and safe for a terminal: a
// name that reached the message raw (inside an *os.PathError, say) has its
// control, bidi and other invisible characters escaped. Parts already
// escaped with layer.EscapeName pass unchanged.
func oneLine(s string) string {
	s = strings.TrimSpace(s)
	r := strings.NewReplacer("\r\n", "; ", "\n", "; ", "\r", "; ")
	s = r.Replace(s)
	var b strings.Builder
	for i := 0; i < len(s); {
		c, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case c == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, "\\x%02x", s[i])
		case c != ' ' && !unicode.IsPrint(c):
			b.WriteString(strings.Trim(strconv.QuoteRune(c), "'"))
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// newRoot builds the command tree for args. When args[0] names a verb, only
// that verb is built: building every verb with its flags was most of what
// the CLI did before running one (0.07 ms of a 1.6 ms start). Anything else
// (help, no verb, a typo cobra suggests a verb for) gets the whole tree.
func newRoot(args []string) *cobra.Command {
	root := &cobra.Command{
		Use:   "airlock",
		Short: "Run AI coding agents in copy-on-write pods you review before anything reaches the host",
		Long: `airlock runs any command (Claude Code, Codex, Aider, a shell) against your real
workspace through a copy-on-write layer. Nothing reaches the host until you
review it with 'airlock diff' and take it with 'airlock commit'.

State lives in $AIRLOCK_HOME (default /var/lib/airlock as root).`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.CompletionOptions.DisableDefaultCmd = true
	for _, v := range verbsFor(args) {
		root.AddCommand(v.build())
	}
	return root
}

// A verb is one top-level command: the names it answers to (its Use name,
// then its aliases; a test checks they match) and its constructor.
type verb struct {
	names []string
	build func() *cobra.Command
}

// verbs lists every top-level command. A table rather than registration in
// each verb's init: it is static data, so the start of the binary builds
// nothing for it (the in-pod init starts the same binary and needs none).
var verbs = []verb{
	{[]string{"audit"}, newAuditCmd},
	{[]string{"commit"}, newCommitCmd},
	{[]string{"destroy", "rm"}, newDestroyCmd},
	{[]string{"diff"}, newDiffCmd},
	{[]string{"doctor"}, newDoctorCmd},
	{[]string{"freeze"}, newFreezeCmd},
	{[]string{"init"}, newInitCmd},
	{[]string{"kill"}, newKillCmd},
	{[]string{"limit"}, newLimitCmd},
	{[]string{"ls", "list"}, newLsCmd},
	{[]string{"net"}, newNetCmd},
	{[]string{"resume"}, newResumeCmd},
	{[]string{"rollback"}, newRollbackCmd},
	{[]string{"run"}, newRunCmd},
	{[]string{"start"}, newStartCmd},
	{[]string{"stats"}, newStatsCmd},
	{[]string{"stop"}, newStopCmd},
	{[]string{"status"}, newStatusCmd},
	{[]string{"undo"}, newUndoCmd},
	{[]string{"vault"}, newVaultCmd},
	{[]string{"version"}, newVersionCmd},
	{[]string{superviseArg}, newSuperviseCmd},
}

// verbsFor returns the one verb args[0] names, or every verb.
func verbsFor(args []string) []verb {
	if len(args) > 0 {
		for _, v := range verbs {
			if slices.Contains(v.names, args[0]) {
				return []verb{v}
			}
		}
	}
	return verbs
}

var version = "0.1.0-dev"

// writeJSON prints v as indented JSON followed by a newline.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// argsError wraps a cobra positional-argument validator so its message is a usage error.
func argsError(v cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := v(cmd, args); err != nil {
			return usageError{fmt.Errorf("%s: %w", cmd.CommandPath(), err)}
		}
		return nil
	}
}
