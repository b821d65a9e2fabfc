package cli

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/airlock-dev/airlock/internal/layer"
)

type diffFlags struct {
	stat, patch, asJSON, all bool
}

func newDiffCmd() *cobra.Command {
	var f diffFlags
	cmd := &cobra.Command{
		Use:   "diff [POD] [PATH...]",
		Short: "Show what the pod changed: added, modified, deleted, type or mode changed",
		Long: `Show every change in the pod's copy-on-write layer. Workspace paths are
relative, home paths are shown as ~/... . Noise such as ~/.cache (diff.ignore in
the config) is hidden unless --all. The first argument names a pod when a pod
of that name exists; otherwise all arguments are paths and the pod is the
current directory's.`,
		Example: `  airlock diff
  airlock diff --stat
  airlock diff mypod src/ -p`,
		RunE: func(cmd *cobra.Command, args []string) error {
			p, paths, err := openPodArgs(args)
			if err != nil {
				return err
			}
			changes, err := layer.Diff(p.Roots(), layer.DiffOptions{})
			if err != nil {
				return err
			}
			if len(paths) > 0 {
				if paths, err = layer.ResolveArgs(p.Roots(), paths); err != nil {
					return err
				}
				if changes, err = layer.Select(changes, paths, nil); err != nil {
					return err
				}
			}
			hidden := 0
			if !f.all {
				shown, n := layer.FilterNoise(changes, p.Config.Diff.Ignore)
				// A path named on purpose (airlock diff ~/.cache/x) is shown
				// even when it is noise.
				if len(shown) > 0 || len(paths) == 0 {
					changes, hidden = shown, n
				}
			}
			return printDiff(cmd.OutOrStdout(), p.Roots(), changes, hidden, f)
		},
	}
	fl := cmd.Flags()
	fl.BoolVar(&f.stat, "stat", false, "show lines added and removed per file")
	fl.BoolVarP(&f.patch, "patch", "p", false, "show unified text diffs")
	fl.BoolVar(&f.asJSON, "json", false, "print JSON")
	fl.BoolVar(&f.all, "all", false, "include noise hidden by diff.ignore")
	return cmd
}

func printDiff(w io.Writer, roots []layer.Root, changes []layer.Change, hidden int, f diffFlags) error {
	if f.asJSON {
		type out struct {
			Changes []layer.Change `json:"changes"`
			Hidden  int            `json:"hidden"`
		}
		if changes == nil {
			changes = []layer.Change{}
		}
		return writeJSON(w, out{changes, hidden})
	}
	switch {
	case f.patch:
		if f.stat { // --stat -p: the summary, then the patches, as git does
			if err := printStat(w, roots, changes); err != nil {
				return err
			}
			fmt.Fprintln(w)
		}
		for _, c := range changes {
			if err := layer.WritePatch(w, roots, c); err != nil {
				return err
			}
		}
	case f.stat:
		if err := printStat(w, roots, changes); err != nil {
			return err
		}
	default:
		for _, c := range changes {
			fmt.Fprintln(w, changeLine(c))
		}
	}
	if len(changes) == 0 && !f.patch {
		fmt.Fprintln(w, "no changes")
	}
	if hidden > 0 && !f.patch {
		fmt.Fprintf(w, "(%s hidden by diff.ignore; --all shows them)\n", plural(hidden, "change", "changes"))
	}
	return nil
}

// changeLine is one line of the default diff listing: a status letter,
// the escaped path, and what changed when the letter alone does not say.
func changeLine(c layer.Change) string {
	name := layer.EscapeName(c.Display())
	switch c.Kind {
	case layer.Added:
		return "A  " + name + typeNote(c.Type)
	case layer.Deleted:
		return "D  " + name + typeNote(c.OldType)
	case layer.TypeChg:
		return fmt.Sprintf("T  %s (%s -> %s)", name, c.OldType, c.Type)
	case layer.ModeChg:
		return fmt.Sprintf("M  %s (mode %04o -> %04o)", name, layer.PermBits(c.OldMode), layer.PermBits(c.Mode))
	}
	if c.Opaque {
		return "M  " + name + "/ (directory replaced)"
	}
	return "M  " + name + typeNote(c.Type)
}

func typeNote(t string) string {
	if t == "" || t == "file" {
		return ""
	}
	if t == "dir" {
		return "/"
	}
	return " (" + t + ")"
}

func printStat(w io.Writer, roots []layer.Root, changes []layer.Change) error {
	var added, removed int
	width := 0
	lines := make([]layer.StatLine, 0, len(changes))
	for _, c := range changes {
		st, err := layer.Stat(roots, c)
		if err != nil {
			return err
		}
		lines = append(lines, st)
		added += st.Added
		removed += st.Removed
		if n := len(layer.EscapeName(st.Path)); n > width {
			width = n
		}
	}
	for _, st := range lines {
		if st.Binary {
			fmt.Fprintf(w, " %-*s | binary\n", width, layer.EscapeName(st.Path))
			continue
		}
		fmt.Fprintf(w, " %-*s | %5d %s%s\n", width, layer.EscapeName(st.Path), st.Added+st.Removed,
			strings.Repeat("+", min(st.Added, 40)), strings.Repeat("-", min(st.Removed, 40)))
	}
	fmt.Fprintf(w, " %s, %d insertions(+), %d deletions(-)\n", plural(len(changes), "path changed", "paths changed"), added, removed)
	return nil
}
