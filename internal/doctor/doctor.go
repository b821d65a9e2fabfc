// Package doctor checks whether this kernel and system offer every
// feature Airlock's walls use, and says in plain words what is missing
// and how to fix it. Checks are data: a name, whether `airlock run`
// cannot start a pod at all without it, and a function.
//
// Invariants: a check never changes the host. Probes that need
// namespaces, mounts or firewall tables run in a child process created in
// fresh namespaces that vanish with it; temporary directories are removed.
package doctor

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// Statuses of a Result.
const (
	OK      = "ok"
	Missing = "missing"
	Warn    = "warn"
)

// Check is one thing doctor looks at.
type Check struct {
	Name string
	// Required: run cannot start a pod without it (other walls can be
	// downgraded explicitly with --downgrade).
	Required bool
	// Downgrade names the wall of a check that run needs unless the user
	// accepts running without it (--downgrade WALL): run fails closed, so
	// doctor counts it as needed and says how to downgrade.
	Downgrade string
	Check     func() Result
}

// Result is what a check found. Name and Required are copied from the Check.
type Result struct {
	Name     string `json:"name"`
	Required bool   `json:"required"`
	// Downgrade is the --downgrade name of the wall this check is for, if any.
	Downgrade string `json:"downgrade,omitempty"`
	Status    string `json:"status"`
	Detail    string `json:"detail"`
	Fix       string `json:"fix,omitempty"`
}

// Run runs every check in order.
func Run() []Result {
	checks := Checks()
	out := make([]Result, 0, len(checks))
	for _, c := range checks {
		out = append(out, run(c))
	}
	return out
}

func run(c Check) (r Result) {
	defer func() {
		if p := recover(); p != nil {
			r = Result{Status: Missing, Detail: fmt.Sprintf("the check itself failed: %v", p), Fix: "report this as a bug in airlock"}
		}
		r.Name, r.Required, r.Downgrade = c.Name, c.Required, c.Downgrade
	}()
	return c.Check()
}

// CanRunPods is false when `airlock run` with its default walls would
// refuse to start: a required check, or the check of a wall, is missing.
func CanRunPods(results []Result) bool {
	return len(blocking(results)) == 0
}

func blocking(results []Result) (out []Result) {
	for _, r := range results {
		if r.Status == Missing && (r.Required || r.Downgrade != "") {
			out = append(out, r)
		}
	}
	return out
}

// WriteText prints one aligned line per result, and the fix under each
// result that is not ok.
func WriteText(w io.Writer, results []Result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, r := range results {
		name := r.Name
		switch {
		case r.Required:
			name += " (required)"
		case r.Downgrade != "":
			name += " (wall)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", mark(r.Status), name, r.Detail)
		if r.Status != OK && r.Fix != "" {
			fmt.Fprintf(tw, "\t\t  fix: %s\n", r.Fix)
		}
	}
	tw.Flush()
	if CanRunPods(results) {
		fmt.Fprintln(w, "airlock can run pods here.")
		return
	}
	var miss, walls []string
	hard := false
	for _, r := range blocking(results) {
		miss = append(miss, r.Name)
		if r.Required {
			hard = true
		} else {
			walls = append(walls, "--downgrade "+r.Downgrade)
		}
	}
	fmt.Fprintf(w, "airlock cannot run pods here: missing %s.\n", strings.Join(miss, ", "))
	if !hard {
		fmt.Fprintf(w, "airlock run fails closed without these walls; to accept running without them, pass %s (audited, and shown by status).\n", strings.Join(walls, " "))
	}
}

func mark(status string) string {
	switch status {
	case OK:
		return "✓"
	case Warn:
		return "!"
	}
	return "✗"
}

func ok(format string, args ...any) Result {
	return Result{Status: OK, Detail: fmt.Sprintf(format, args...)}
}

func warn(fix, format string, args ...any) Result {
	return Result{Status: Warn, Detail: fmt.Sprintf(format, args...), Fix: fix}
}

func missing(fix, format string, args ...any) Result {
	return Result{Status: Missing, Detail: fmt.Sprintf(format, args...), Fix: fix}
}
