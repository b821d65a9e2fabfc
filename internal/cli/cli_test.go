package cli

import (
	"bytes"
	"slices"
	"testing"
)

// Each verb registers the names newRoot matches args[0] against; they must
// be the names cobra itself would route to that command.
func TestVerbNames(t *testing.T) {
	seen := map[string]bool{}
	for _, v := range verbs {
		c := v.build()
		want := append([]string{c.Name()}, c.Aliases...)
		if !slices.Equal(v.names, want) {
			t.Errorf("verb registered as %q; its command answers to %q", v.names, want)
		}
		for _, n := range v.names {
			if seen[n] {
				t.Errorf("two verbs answer to %q", n)
			}
			seen[n] = true
		}
	}
}

// A named verb gets a tree of one; anything else gets every verb.
func TestNewRootBuildsOnlyTheNamedVerb(t *testing.T) {
	for _, args := range [][]string{{"run", "p", "--", "true"}, {"rm", "p"}, {"list"}} {
		if n := len(newRoot(args).Commands()); n != 1 {
			t.Errorf("newRoot(%q) built %d verbs; want 1", args, n)
		}
	}
	for _, args := range [][]string{nil, {"help"}, {"--help"}, {"rnu"}} {
		if n := len(newRoot(args).Commands()); n < len(verbs) {
			t.Errorf("newRoot(%q) built %d verbs; want all %d", args, n, len(verbs))
		}
	}
}

// A verb's help reads the same whether the tree holds it alone or every verb.
func TestVerbHelpSameInSmallTree(t *testing.T) {
	for _, v := range verbs {
		help := func(root []string) string {
			r := newRoot(root)
			var out bytes.Buffer
			r.SetOut(&out)
			r.SetErr(&out)
			r.SetArgs([]string{v.names[0], "--help"})
			if err := r.Execute(); err != nil {
				t.Fatalf("%s --help: %v", v.names[0], err)
			}
			return out.String()
		}
		if alone, all := help([]string{v.names[0]}), help(nil); alone != all {
			t.Errorf("%s --help differs:\nalone:\n%s\nin the full tree:\n%s", v.names[0], alone, all)
		}
	}
}
