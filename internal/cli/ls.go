package cli

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/airlock-dev/airlock/internal/layer"
	"github.com/airlock-dev/airlock/internal/pod"
)

func init() { commands = append(commands, newLsCmd) }

// summary is what ls and status print about a pod.
type summary struct {
	Name      string            `json:"name"`
	Workspace string            `json:"workspace"`
	State     string            `json:"state"`
	PID       int               `json:"supervisor_pid,omitempty"`
	Created   time.Time         `json:"created"`
	LastRun   *time.Time        `json:"last_run,omitempty"`
	LastExit  *int              `json:"last_exit,omitempty"`
	Changes   *int              `json:"changes,omitempty"`
	Walls     map[string]string `json:"walls,omitempty"`
	Dir       string            `json:"dir"`
}

func podSummary(p *pod.Pod) summary {
	s := summary{Name: p.Name, Workspace: p.State.Workspace, State: "stopped", Created: p.State.Created, LastExit: p.State.LastExit, Dir: p.Dir}
	if pid, ok := p.Running(); ok {
		s.State, s.PID = "running", pid
	}
	if !p.State.LastRun.IsZero() {
		t := p.State.LastRun
		s.LastRun = &t
	}
	return s
}

func newLsCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List pods",
		Args:    argsError(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := openStore()
			if err != nil {
				return err
			}
			pods, err := s.List()
			if err != nil {
				return err
			}
			out := make([]summary, 0, len(pods))
			for _, p := range pods {
				out = append(out, podSummary(p))
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), out)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tSTATE\tWORKSPACE\tCREATED")
			for _, s := range out {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.Name, s.State, layer.EscapeName(s.Workspace), s.Created.Local().Format("2006-01-02 15:04"))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
