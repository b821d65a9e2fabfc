package cli

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/airlock-dev/airlock/internal/errdefs"
	"github.com/airlock-dev/airlock/internal/layer"
	"github.com/airlock-dev/airlock/internal/pod"
)

type commitFlags struct {
	exclude                             []string
	rollbackRest, dryRun, asJSON, force bool
}

func newCommitCmd() *cobra.Command {
	var f commitFlags
	cmd := &cobra.Command{
		Use:   "commit [POD] [PATH...]",
		Short: "Apply the pod's changes to the host, all or by path",
		Long: `Apply changes from the pod's layer to the host workspace. With no PATH every
workspace change is applied; home (~/...) changes are applied only when named.
Each file is replaced atomically, resolved beneath the workspace by file
descriptor; symlinks are copied as symlinks, setuid/setgid bits and privileged
xattrs are stripped, device nodes, FIFOs and sockets are skipped. A host file
changed since the pod copied it is a conflict: nothing is applied unless
--force. Every commit is journaled: 'airlock undo' puts the host back.`,
		Example: `  airlock commit
  airlock commit src/ --exclude src/generated
  airlock commit mypod README.md --rollback-rest`,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := openStore()
			if err != nil {
				return err
			}
			p, paths, err := splitPod(s, args)
			if err != nil {
				return err
			}
			return commitPod(cmd.OutOrStdout(), p, paths, f)
		},
	}
	fl := cmd.Flags()
	fl.StringArrayVar(&f.exclude, "exclude", nil, "leave this path out (repeatable)")
	fl.BoolVar(&f.rollbackRest, "rollback-rest", false, "discard every change that was not committed")
	fl.BoolVarP(&f.dryRun, "dry-run", "n", false, "show what would be applied, change nothing")
	fl.BoolVar(&f.asJSON, "json", false, "print JSON")
	fl.BoolVar(&f.force, "force", false, "apply even where the host file changed since the pod copied it")
	return cmd
}

func commitPod(w io.Writer, p *pod.Pod, paths []string, f commitFlags) error {
	paths, err := layer.ResolveArgs(p.Roots(), paths)
	if err != nil {
		return err
	}
	if f.exclude, err = layer.ResolveArgs(p.Roots(), f.exclude); err != nil {
		return err
	}
	for _, x := range append(slices.Clone(paths), f.exclude...) {
		if err := layer.ValidatePath(x); err != nil {
			return err
		}
	}
	unlock, err := lockStopped(p, "commit")
	if err != nil {
		return err
	}
	defer unlock()
	if _, err = layer.Recover(p.JournalDir()); err != nil {
		return err
	}
	all, err := layer.Diff(p.Roots(), layer.DiffOptions{})
	if err != nil {
		return err
	}
	chosen, err := chooseForCommit(all, paths, f.exclude)
	if err != nil {
		return err
	}
	outside := 0
	if len(paths) == 0 {
		shown, _ := layer.FilterNoise(all, p.Config.Diff.Ignore)
		for _, c := range shown {
			if c.Root != "workspace" {
				outside++
			}
		}
	}
	base, err := layer.LoadBase(p.BasePath())
	if err != nil {
		return err
	}
	res, err := layer.Commit(p.Roots(), chosen, p.JournalDir(), base, layer.CommitOptions{Force: f.force, DryRun: f.dryRun, Actor: actor()})
	if res != nil {
		res.Outside = outside
	}
	if res != nil && !f.dryRun {
		auditCommit(p, res, err)
	}
	if err != nil && !errors.Is(err, errdefs.ErrConflict) {
		return err
	}
	if err == nil && f.rollbackRest && !f.dryRun {
		if err := rollbackRest(p, res); err != nil {
			return err
		}
	}
	if perr := printCommit(w, res, f); perr != nil {
		return perr
	}
	return err
}

// chooseForCommit applies the selection rules: named paths (home paths
// only when named), minus excludes.
func chooseForCommit(all []layer.Change, paths, exclude []string) ([]layer.Change, error) {
	if len(paths) == 0 {
		var ws []layer.Change
		for _, c := range all {
			if c.Root == "workspace" {
				ws = append(ws, c)
			}
		}
		return layer.Select(ws, nil, exclude)
	}
	return layer.Select(all, paths, exclude)
}

func auditCommit(p *pod.Pod, res *layer.CommitResult, err error) {
	d := map[string]any{"commit": res.ID, "applied": displayPaths(res.Applied)}
	if len(res.Skipped) > 0 {
		d["skipped"] = res.Skipped
	}
	if len(res.Conflicts) > 0 {
		d["conflicts"] = res.Conflicts
	}
	outcome := "ok"
	if err != nil {
		outcome = "refused: " + err.Error()
	}
	record(p, "commit", d, outcome)
}

func rollbackRest(p *pod.Pod, res *layer.CommitResult) error {
	rest, err := layer.Diff(p.Roots(), layer.DiffOptions{})
	if err != nil || len(rest) == 0 {
		return err
	}
	if err := layer.Rollback(p.Roots(), rest); err != nil {
		return fmt.Errorf("rolling back the uncommitted rest: %w", err)
	}
	record(p, "rollback", map[string]any{"paths": displayPaths(rest), "after_commit": res.ID}, "ok")
	return nil
}

func printCommit(w io.Writer, res *layer.CommitResult, f commitFlags) error {
	if res == nil {
		return nil
	}
	if f.asJSON {
		return writeJSON(w, res)
	}
	verb := "applied"
	if f.dryRun {
		verb = "would apply"
	}
	for _, c := range res.Applied {
		fmt.Fprintf(w, "%s %s\n", verb, strings.TrimSpace(changeLine(c)))
	}
	for _, s := range res.Skipped {
		fmt.Fprintf(w, "skipped %s: %s\n", layer.EscapeName(s.Path), s.Reason)
	}
	for _, c := range res.Conflicts {
		fmt.Fprintf(w, "conflict %s: %s\n", layer.EscapeName(c.Path), c.Reason)
	}
	switch {
	case len(res.Conflicts) > 0 && !f.force:
		fmt.Fprintln(w, "nothing applied: review with airlock diff, then commit with --force to overwrite the host's version")
	case f.dryRun:
		fmt.Fprintf(w, "dry run: %s\n", plural(len(res.Applied), "change", "changes"))
	case len(res.Applied) == 0:
		fmt.Fprintln(w, "nothing to commit")
	default:
		fmt.Fprintf(w, "commit %s: %s applied (airlock undo %s puts the host back)\n", res.ID, plural(len(res.Applied), "change", "changes"), res.ID)
	}
	if res.Outside > 0 {
		fmt.Fprintf(w, "%s outside the workspace (~/...) left in the layer: commit takes them only by name, e.g. airlock commit ~/.bashrc\n",
			plural(res.Outside, "change", "changes"))
	}
	return nil
}
