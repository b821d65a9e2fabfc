package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/airlock-dev/airlock/internal/layer"
)

func newRollbackCmd() *cobra.Command {
	var asJSON, dryRun bool
	cmd := &cobra.Command{
		Use:   "rollback [POD] [PATH...]",
		Short: "Discard the pod's changes, all or by path (the host is not touched)",
		Args:  cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			p, paths, err := openPodArgs(args)
			if err != nil {
				return err
			}
			unlock, err := lockStopped(p, "rollback")
			if err != nil {
				return err
			}
			defer unlock()
			all, err := layer.Diff(p.Roots(), layer.DiffOptions{})
			if err != nil {
				return err
			}
			if paths, err = layer.ResolveArgs(p.Roots(), paths); err != nil {
				return err
			}
			chosen, err := layer.Select(all, paths, nil)
			if err != nil {
				return err
			}
			if !dryRun {
				if err := layer.Rollback(p.Roots(), chosen); err != nil {
					record(p, "rollback", map[string]any{"paths": displayPaths(chosen)}, "error: "+err.Error())
					return err
				}
				record(p, "rollback", map[string]any{"paths": displayPaths(chosen)}, "ok")
			}
			w := cmd.OutOrStdout()
			if asJSON {
				return writeJSON(w, map[string]any{"rolled_back": chosen, "dry_run": dryRun})
			}
			verb := "discarded"
			if dryRun {
				verb = "would discard"
			}
			for _, c := range chosen {
				fmt.Fprintf(w, "%s %s\n", verb, changeLine(c))
			}
			fmt.Fprintf(w, "%s %s\n", verb, plural(len(chosen), "change", "changes"))
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().BoolVarP(&dryRun, "dry-run", "n", false, "show what would be discarded")
	return cmd
}
