package cli

import (
	"fmt"
	"sort"

	"github.com/spf13/cobra"

	"github.com/airlock-dev/airlock/internal/layer"
)

func newStatusCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status [POD]",
		Short: "Show a pod's state, its walls and how many changes its layer holds",
		Args:  argsError(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := openStore()
			if err != nil {
				return err
			}
			p, err := openPod(s, firstArg(args))
			if err != nil {
				return err
			}
			sum := podSummary(p)
			if changes, err := layer.Diff(p.Roots(), layer.DiffOptions{}); err == nil {
				n := len(changes)
				sum.Changes = &n
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), sum)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "pod:        %s\n", sum.Name)
			fmt.Fprintf(w, "workspace:  %s\n", layer.EscapeName(sum.Workspace))
			state := sum.State
			if sum.Serving {
				state += ", started: airlock run " + sum.Name + " -- CMD runs in it"
			}
			if sum.PID != 0 {
				state += fmt.Sprintf(" (supervisor pid %d)", sum.PID)
			}
			fmt.Fprintf(w, "state:      %s\n", state)
			if sum.LastRun != nil {
				exit := "?"
				if sum.LastExit != nil {
					exit = fmt.Sprint(*sum.LastExit)
				}
				if sum.Serving {
					fmt.Fprintf(w, "started:    %s\n", sum.LastRun.Local().Format("2006-01-02 15:04:05"))
				} else {
					fmt.Fprintf(w, "last run:   %s (exit %s)\n", sum.LastRun.Local().Format("2006-01-02 15:04:05"), exit)
				}
			}
			if sum.Changes != nil {
				fmt.Fprintf(w, "changes:    %d (airlock diff shows them)\n", *sum.Changes)
			}
			if len(sum.Walls) > 0 {
				if sum.Serving {
					fmt.Fprintln(w, "walls:")
				} else {
					fmt.Fprintln(w, "walls (last run):")
				}
				names := make([]string, 0, len(sum.Walls))
				for k := range sum.Walls {
					names = append(names, k)
				}
				sort.Strings(names)
				for _, k := range names {
					fmt.Fprintf(w, "  %-9s %s\n", k, sum.Walls[k])
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func firstArg(args []string) string {
	if len(args) > 0 {
		return args[0]
	}
	return ""
}
