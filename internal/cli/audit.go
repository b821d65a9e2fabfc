package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode"
	"unicode/utf16"

	"github.com/spf13/cobra"

	"github.com/airlock-dev/airlock/internal/audit"
	"github.com/airlock-dev/airlock/internal/errdefs"
	"github.com/airlock-dev/airlock/internal/layer"
	"github.com/airlock-dev/airlock/internal/pod"
)

func newAuditCmd() *cobra.Command {
	var asJSON bool
	var since, action string
	cmd := &cobra.Command{
		Use:   "audit [POD]",
		Short: "Show the pod's tamper-evident audit trail",
		Long: `Show the pod's audit trail: one event per line (time, actor, action, outcome,
details). 'airlock audit verify' checks the hash chain.`,
		Args: argsError(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := openStore()
			if err != nil {
				return err
			}
			p, err := resolvePod(s, firstArg(args))
			if err != nil {
				return err
			}
			var f audit.Filter
			f.Action = action
			if since != "" {
				d, err := time.ParseDuration(since)
				if err != nil || d <= 0 {
					return errdefs.Invalid("--since %q: expected a duration such as 30m or 24h", since)
				}
				f.Since = time.Now().Add(-d)
			}
			events, err := audit.Read(p.AuditPath(), f)
			if err != nil {
				return err
			}
			return printEvents(cmd.OutOrStdout(), events, asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON (one object per event, as stored)")
	cmd.Flags().StringVar(&since, "since", "", "only events newer than this, e.g. 1h")
	cmd.Flags().StringVar(&action, "action", "", "only events with this action, e.g. commit")
	cmd.AddCommand(newAuditVerifyCmd())
	return cmd
}

func printEvents(w io.Writer, events []audit.Event, asJSON bool) error {
	if asJSON {
		if events == nil {
			events = []audit.Event{}
		}
		return writeJSON(w, events)
	}
	for _, e := range events {
		details := ""
		if len(e.Details) > 0 {
			details = " " + terminalJSON(e.Details)
		}
		fmt.Fprintf(w, "%s  %-16s %-14s %s%s\n", e.Time.Local().Format("2006-01-02 15:04:05"), e.Action, layer.EscapeName(e.Outcome), layer.EscapeName(e.Actor), details)
	}
	return nil
}

func newAuditVerifyCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "verify [POD]",
		Short: "Check the audit trail's hash chain; exit 1 naming the first bad line",
		Args:  argsError(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := openStore()
			if err != nil {
				return err
			}
			p, err := resolvePod(s, firstArg(args))
			if err != nil {
				return err
			}
			return verifyAudit(cmd.OutOrStdout(), p, asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

// verifyResult is audit verify's --json output.
type verifyResult struct {
	Pod    string `json:"pod"`
	Intact bool   `json:"intact"`
	Events int    `json:"events"`           // intact lines before the first bad one
	Line   int    `json:"line,omitempty"`   // the first bad line
	Reason string `json:"reason,omitempty"` // what is wrong with it
}

func verifyAudit(w io.Writer, p *pod.Pod, asJSON bool) error {
	key, err := audit.KeyFor(pod.DefaultHome())
	if err != nil {
		return err
	}
	n, err := audit.Verify(p.AuditPath(), key)
	var ve *audit.VerifyError
	if errors.As(err, &ve) {
		if asJSON {
			if err := writeJSON(w, verifyResult{Pod: p.Name, Events: n, Line: ve.Line, Reason: ve.Reason}); err != nil {
				return err
			}
		}
		return &exitError{1, fmt.Sprintf("audit trail of %s is NOT intact: %s", p.Name, ve.Error())}
	}
	if err != nil {
		return err
	}
	if asJSON {
		return writeJSON(w, verifyResult{Pod: p.Name, Intact: true, Events: n})
	}
	fmt.Fprintf(w, "audit trail of %s intact: %s\n", p.Name, plural(n, "event", "events"))
	return nil
}

// terminalJSON renders v as one line of JSON that is safe on a terminal
// and still valid JSON: no HTML escaping (">" stays ">"), and every rune
// that could hide or reorder text (DEL, C1 controls, bidi and other format
// characters, which JSON leaves raw) written as a \u escape.
func terminalJSON(v any) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return layer.EscapeName(fmt.Sprint(v))
	}
	var b strings.Builder
	for _, r := range strings.TrimSuffix(buf.String(), "\n") {
		if r == ' ' || unicode.IsPrint(r) {
			b.WriteRune(r)
			continue
		}
		if r > 0xffff {
			r1, r2 := utf16.EncodeRune(r)
			fmt.Fprintf(&b, "\\u%04x\\u%04x", r1, r2)
			continue
		}
		fmt.Fprintf(&b, "\\u%04x", r)
	}
	return b.String()
}
