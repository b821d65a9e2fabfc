package cli

import (
	"github.com/spf13/cobra"

	"github.com/airlock-dev/airlock/internal/doctor"
)

func newDoctorCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check this kernel and system for every feature airlock uses",
		Long: `Check user and other namespaces, overlayfs, cgroups (v1, v2 or hybrid, and
which controllers are usable), seccomp and user notification, Landlock, network
namespaces and nf_tables. Says what works, what is missing and what to do, and
exits non-zero when 'airlock run' could not start a pod here.`,
		Args: argsError(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			results := doctor.Run()
			if asJSON {
				if err := writeJSON(cmd.OutOrStdout(), results); err != nil {
					return err
				}
			} else {
				doctor.WriteText(cmd.OutOrStdout(), results)
			}
			if !doctor.CanRunPods(results) {
				return &exitError{exitUnsupported, "this system cannot run pods: fix the missing items above"}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
