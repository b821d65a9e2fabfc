package cli

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/airlock-dev/airlock/internal/layer"
)

func newUndoCmd() *cobra.Command {
	var force, list, asJSON bool
	cmd := &cobra.Command{
		Use:   "undo [POD] [COMMIT_ID]",
		Short: "Put the host back exactly as it was before a commit (default: the latest)",
		Long: `Undo a commit: restore every host file it overwrote or deleted and remove what
it created, from the commit's journal, and give its changes back to the layer,
so 'airlock diff' shows them again (a path the pod changed again since keeps
that newer version). A host file changed since the commit is a conflict and
stops the undo unless --force. --list shows the commits.`,
		Args: argsError(cobra.MaximumNArgs(2)),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := openStore()
			if err != nil {
				return err
			}
			p, rest, err := splitPod(s, args)
			if err != nil {
				return err
			}
			if len(rest) > 1 {
				return usageError{fmt.Errorf("undo takes [POD] [COMMIT_ID], got %d extra arguments", len(rest)-1)}
			}
			if err := recoverPod(p); err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if list {
				commits, err := layer.ListCommits(p.JournalDir())
				if err != nil {
					return err
				}
				if asJSON {
					return writeJSON(w, commits)
				}
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "COMMIT\tTIME\tPATHS\tSTATE")
				for _, c := range commits {
					fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", c.ID, c.Time.Local().Format("2006-01-02 15:04:05"), c.Paths, c.State)
				}
				return tw.Flush()
			}
			// Undo rewrites the overlay's lower (the host) under a running
			// pod's mounted view, and the pod may hold the paths open.
			unlock, err := lockStopped(p, "undo")
			if err != nil {
				return err
			}
			defer unlock()
			_ = p.Roots() // a disk-capped pod's layer must be open: undo gives changes back to it
			info, err := layer.Undo(p.JournalDir(), firstArg(rest), force)
			if err != nil {
				record(p, "undo", map[string]any{"commit": firstArg(rest)}, "error: "+err.Error())
				return err
			}
			record(p, "undo", map[string]any{"commit": info.ID, "paths": info.Paths, "back_in_layer": info.BackInLayer}, "ok")
			if asJSON {
				return writeJSON(w, info)
			}
			fmt.Fprintf(w, "undid commit %s: %s restored on the host", info.ID, plural(info.Paths, "path", "paths"))
			if info.BackInLayer > 0 {
				fmt.Fprintf(w, "; %s back in the layer (airlock diff shows them)", plural(info.BackInLayer, "change", "changes"))
			}
			fmt.Fprintln(w)
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "restore even where the host changed after the commit")
	cmd.Flags().BoolVar(&list, "list", false, "list the pod's commits instead")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
