package cli

import (
	"fmt"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/airlock-dev/airlock/internal/layer"
	"github.com/airlock-dev/airlock/internal/pod"
)

// summary is what ls and status print about a pod.
type summary struct {
	Name      string `json:"name"`
	Workspace string `json:"workspace"`
	State     string `json:"state"`
	// Serving: the pod was started (airlock start) and runs each airlock run.
	Serving  bool              `json:"serving,omitempty"`
	PID      int               `json:"supervisor_pid,omitempty"`
	Created  time.Time         `json:"created"`
	LastRun  *time.Time        `json:"last_run,omitempty"`
	LastExit *int              `json:"last_exit,omitempty"`
	Changes  *int              `json:"changes,omitempty"`
	Walls    map[string]string `json:"walls,omitempty"`
	Dir      string            `json:"dir"`
	Error    string            `json:"error,omitempty"` // state "broken": why the pod cannot be loaded
}

func podSummary(p *pod.Pod) summary {
	s := summary{Name: p.Name, Workspace: p.State.Workspace, State: "stopped", Created: p.State.Created, Dir: p.Dir}
	if pid, ok := p.Running(); ok {
		s.State, s.PID = "running", pid
	}
	if rs, ok := p.LastRun(); ok {
		s.LastRun, s.LastExit, s.Walls = &rs.Started, rs.Exit, rs.Walls
		s.Serving = s.PID != 0 && rs.Serve && rs.Exit == nil
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
			pods, broken, err := s.ListAll()
			if err != nil {
				return err
			}
			out := make([]summary, 0, len(pods)+len(broken))
			for _, p := range pods {
				out = append(out, podSummary(p))
			}
			for _, b := range broken {
				out = append(out, summary{Name: b.Name, State: "broken", Error: oneLine(b.Err.Error())})
			}
			sort.SliceStable(out, func(i, j int) bool { return out[i].Name < out[j].Name })
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), out)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tSTATE\tWORKSPACE\tCREATED")
			for _, s := range out {
				if s.State == "broken" {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.Name, s.State, "?", "?")
					continue
				}
				state := s.State
				if s.Serving {
					state = "running (started)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.Name, state, layer.EscapeName(s.Workspace), s.Created.Local().Format("2006-01-02 15:04"))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			for _, b := range broken {
				fmt.Fprintf(cmd.ErrOrStderr(), "airlock: warning: %s\n", layer.EscapeName(oneLine(b.Err.Error())))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
