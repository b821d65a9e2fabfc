package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/airlock-dev/airlock/internal/pod"
)

func newInitCmd() *cobra.Command {
	var workspace, cfg string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "init [POD]",
		Short: "Create a pod for a workspace",
		Long: `Create a pod bound to a workspace (default: the current directory). The
config comes from --config, else WORKSPACE/airlock.yaml, else built-in defaults;
the pod keeps its own copy in pod.yaml.`,
		Args: argsError(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := openStore()
			if err != nil {
				return err
			}
			ws, err := workspaceDir(workspace)
			if err != nil {
				return err
			}
			name := pod.DefaultName(ws)
			if len(args) == 1 {
				name = args[0]
			}
			if err := pod.ValidateName(name); err != nil {
				return err
			}
			p, err := createPod(s, name, ws, cfg)
			if err != nil {
				return err
			}
			record(p, "pod.create", map[string]any{"workspace": ws}, "ok")
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), podSummary(p))
			}
			fmt.Fprintf(cmd.OutOrStdout(), "created pod %s for %s\n", p.Name, ws)
			return nil
		},
	}
	cmd.Flags().StringVar(&workspace, "workspace", "", "workspace directory (default: the current directory)")
	cmd.Flags().StringVar(&cfg, "config", "", "config file (default: WORKSPACE/airlock.yaml, else built-in defaults)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the pod as JSON")
	return cmd
}
