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
	Check    func() Result
}

// Result is what a check found. Name and Required are copied from the Check.
type Result struct {
	Name     string `json:"name"`
	Required bool   `json:"required"`
	Status   string `json:"status"`
	Detail   string `json:"detail"`
	Fix      string `json:"fix,omitempty"`
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
		r.Name, r.Required = c.Name, c.Required
	}()
	return c.Check()
}

// CanRunPods is false when a required check is missing.
func CanRunPods(results []Result) bool {
	for _, r := range results {
		if r.Required && r.Status == Missing {
			return false
		}
	}
	return true
}

// WriteText prints one aligned line per result, and the fix under each
// result that is not ok.
func WriteText(w io.Writer, results []Result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, r := range results {
		name := r.Name
		if r.Required {
			name += " (required)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", mark(r.Status), name, r.Detail)
		if r.Status != OK && r.Fix != "" {
			fmt.Fprintf(tw, "\t\t  fix: %s\n", r.Fix)
		}
	}
	tw.Flush()
	if CanRunPods(results) {
		fmt.Fprintln(w, "airlock can run pods here.")
	} else {
		var miss []string
		for _, r := range results {
			if r.Required && r.Status == Missing {
				miss = append(miss, r.Name)
			}
		}
		fmt.Fprintf(w, "airlock cannot run pods here: missing %s.\n", strings.Join(miss, ", "))
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
