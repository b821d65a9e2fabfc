package cli

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/airlock-dev/airlock/internal/cgroup"
	"github.com/airlock-dev/airlock/internal/pod"
)

func newDestroyCmd() *cobra.Command {
	var force, asJSON bool
	cmd := &cobra.Command{
		Use:     "destroy POD...",
		Aliases: []string{"rm"},
		Short:   "Delete pods and everything in their layers (the host is not touched)",
		Long: `Delete pods: their layers, snapshots, journals and audit trails. Uncommitted
changes are lost; the workspace on the host is never touched. A running pod is
refused unless --force, which kills it first.`,
		Args: argsError(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := openStore()
			if err != nil {
				return err
			}
			var errs []error
			destroyed := []string{}
			for _, name := range args {
				if err := pod.ValidateName(name); err != nil {
					errs = append(errs, err)
					continue
				}
				if err := s.Destroy(name, force); err != nil {
					errs = append(errs, fmt.Errorf("destroying %s: %w", name, err))
					continue
				}
				dropGroup(s, name)
				destroyed = append(destroyed, name)
				if !asJSON {
					fmt.Fprintf(cmd.OutOrStdout(), "destroyed %s\n", name)
				}
			}
			if asJSON {
				if err := writeJSON(cmd.OutOrStdout(), map[string]any{"destroyed": destroyed}); err != nil {
					return err
				}
			}
			return errors.Join(errs...)
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "kill a running pod first")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the destroyed pods as JSON")
	return cmd
}

// dropGroup removes the control group a killed supervisor left behind
// (a run that ends normally removes its own); the pod's processes are
// gone by now, so it is empty.
func dropGroup(s *pod.Store, name string) {
	dir := filepath.Join(s.Home, "pods", name)
	if g, err := cgroup.Load(cgroup.GroupName(name, dir)); err == nil {
		_ = g.Destroy()
	}
}
