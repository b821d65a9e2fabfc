package layer

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// updateGolden reports whether -update was given. The flag is looked up
// rather than owned, so another test file of the package may define it too.
var updateGolden = lookupOrDefineBool("update", "rewrite golden files under testdata")

func lookupOrDefineBool(name, usage string) func() bool {
	if f := flag.Lookup(name); f != nil {
		return func() bool { v, _ := strconv.ParseBool(f.Value.String()); return v }
	}
	p := flag.Bool(name, false, usage)
	return func() bool { return *p }
}

type patchGoldenCase struct {
	name   string
	root   string // "workspace" unless set
	setup  func(t *testing.T, host, up string)
	change Change
}

func patchNumbered(n int, edit map[int]string) string {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		if s, ok := edit[i]; ok {
			b.WriteString(s)
			continue
		}
		fmt.Fprintf(&b, "line %d\n", i)
	}
	return b.String()
}

var patchGoldenCases = []patchGoldenCase{
	{name: "modified_two_hunks", change: Change{Path: "f.txt", Kind: Modified}, setup: func(t *testing.T, h, u string) {
		diffWrite(t, h+"/f.txt", patchNumbered(30, nil), 0o644)
		diffWrite(t, u+"/f.txt", patchNumbered(30, map[int]string{2: "two\n", 25: "", 26: "x\ny\n"}), 0o644)
	}},
	{name: "modified_merged_hunk", change: Change{Path: "f.txt", Kind: Modified}, setup: func(t *testing.T, h, u string) {
		diffWrite(t, h+"/f.txt", patchNumbered(20, nil), 0o644)
		diffWrite(t, u+"/f.txt", patchNumbered(20, map[int]string{5: "five\n", 11: "eleven\n"}), 0o644)
	}},
	{name: "added", change: Change{Path: "new/a.go", Kind: Added}, setup: func(t *testing.T, h, u string) {
		diffWrite(t, u+"/new/a.go", "package a\n\nfunc A() {}\n", 0o644)
	}},
	{name: "added_empty", change: Change{Path: "empty", Kind: Added}, setup: func(t *testing.T, h, u string) {
		diffWrite(t, u+"/empty", "", 0o600)
	}},
	{name: "deleted", change: Change{Path: "gone.txt", Kind: Deleted}, setup: func(t *testing.T, h, u string) {
		diffWrite(t, h+"/gone.txt", "one\ntwo\n", 0o644)
	}},
	{name: "deleted_dir", change: Change{Path: "build", Kind: Deleted}, setup: func(t *testing.T, h, u string) {
		diffWrite(t, h+"/build/out.o", "x", 0o644)
	}},
	{name: "mode_only", change: Change{Path: "run.sh", Kind: ModeChg}, setup: func(t *testing.T, h, u string) {
		diffWrite(t, h+"/run.sh", "#!/bin/sh\n", 0o644)
		diffWrite(t, u+"/run.sh", "#!/bin/sh\n", 0o755)
	}},
	{name: "setuid_and_content", change: Change{Path: "tool", Kind: Modified}, setup: func(t *testing.T, h, u string) {
		diffWrite(t, h+"/tool", "a\n", 0o755)
		diffWrite(t, u+"/tool", "b\n", 0o755)
		diffMust(t, os.Chmod(u+"/tool", os.ModeSetuid|0o755))
	}},
	{name: "symlink_modified", change: Change{Path: "lnk", Kind: Modified}, setup: func(t *testing.T, h, u string) {
		diffMust(t, os.Symlink("old/target", h+"/lnk"))
		diffMust(t, os.Symlink("../../etc/passwd", u+"/lnk"))
	}},
	{name: "file_to_symlink", change: Change{Path: "cfg", Kind: TypeChg}, setup: func(t *testing.T, h, u string) {
		diffWrite(t, h+"/cfg", "k=v\n", 0o644)
		diffMust(t, os.Symlink("/etc/cfg", u+"/cfg"))
	}},
	{name: "dir_to_file", change: Change{Path: "d", Kind: TypeChg}, setup: func(t *testing.T, h, u string) {
		diffWrite(t, h+"/d/x", "x\n", 0o644)
		diffWrite(t, u+"/d", "now a file\n", 0o644)
	}},
	{name: "binary_nul", change: Change{Path: "img.bin", Kind: Modified}, setup: func(t *testing.T, h, u string) {
		diffWrite(t, h+"/img.bin", "PNG\x00\x01", 0o644)
		diffWrite(t, u+"/img.bin", "PNG\x00\x02", 0o644)
	}},
	{name: "binary_invalid_utf8", change: Change{Path: "latin1.txt", Kind: Added}, setup: func(t *testing.T, h, u string) {
		diffWrite(t, u+"/latin1.txt", "caf\xe9\n", 0o644)
	}},
	{name: "too_large", change: Change{Path: "big.log", Kind: Modified}, setup: func(t *testing.T, h, u string) {
		diffWrite(t, h+"/big.log", "small\n", 0o644)
		diffWrite(t, u+"/big.log", "", 0o644)
		diffMust(t, os.Truncate(u+"/big.log", 9<<20))
	}},
	{name: "no_newline_at_end", change: Change{Path: "n.txt", Kind: Modified}, setup: func(t *testing.T, h, u string) {
		diffWrite(t, h+"/n.txt", "a\nb\nc", 0o644)
		diffWrite(t, u+"/n.txt", "a\nb\nc\nd", 0o644)
	}},
	{name: "hostile_name_and_content", change: Change{Path: "\x1b]0;pwned\x07\u202egnp.js", Kind: Added}, setup: func(t *testing.T, h, u string) {
		diffWrite(t, u+"/\x1b]0;pwned\x07\u202egnp.js", "ok\n\x1b]52;c;ZXZpbA==\x07\nevil();\rgood();\n", 0o644)
	}},
	{name: "home_root", root: "home", change: Change{Path: ".bashrc", Kind: Modified}, setup: func(t *testing.T, h, u string) {
		diffWrite(t, h+"/.bashrc", "export A=1\n", 0o644)
		diffWrite(t, u+"/.bashrc", "export A=1\nexport B=2\n", 0o644)
	}},
}

func TestWritePatchGolden(t *testing.T) {
	old := unix.Umask(0o022)
	defer unix.Umask(old)
	for _, tc := range patchGoldenCases {
		t.Run(tc.name, func(t *testing.T) {
			root := Root{Name: "workspace", Host: t.TempDir(), Upper: t.TempDir()}
			if tc.root != "" {
				root.Name = tc.root
			}
			tc.setup(t, root.Host, root.Upper)
			c := tc.change
			c.Root = root.Name
			var buf bytes.Buffer
			diffMust(t, WritePatch(&buf, []Root{root}, c))
			golden := filepath.Join("testdata", "patch", tc.name+".golden")
			if updateGolden() {
				diffMust(t, os.MkdirAll(filepath.Dir(golden), 0o755))
				diffMust(t, os.WriteFile(golden, buf.Bytes(), 0o644))
			}
			want, err := os.ReadFile(golden)
			diffMust(t, err)
			if !bytes.Equal(buf.Bytes(), want) {
				t.Errorf("patch differs from %s (rerun with -update after checking):\n%s", golden, buf.String())
			}
			if bytes.ContainsAny(buf.Bytes(), "\x1b\x07") || bytes.Contains(buf.Bytes(), []byte("\u202e")) {
				t.Errorf("patch carries raw terminal controls:\n%q", buf.String())
			}
		})
	}
}

func TestWritePatchRejectsBadChanges(t *testing.T) {
	roots := []Root{{Name: "workspace", Host: t.TempDir(), Upper: t.TempDir()}}
	for _, c := range []Change{
		{Root: "workspace", Path: "../../etc/passwd", Kind: Modified},
		{Root: "workspace", Path: "/etc/passwd", Kind: Modified},
		{Root: "workspace", Path: "", Kind: Modified},
		{Root: "nope", Path: "a", Kind: Modified},
	} {
		if err := WritePatch(&bytes.Buffer{}, roots, c); err == nil {
			t.Errorf("WritePatch accepted %+v", c)
		}
	}
}

// TestWritePatchHostSymlinkNotFollowed: a host directory replaced by a
// symlink out of the workspace must not make WritePatch read outside.
func TestWritePatchHostSymlinkNotFollowed(t *testing.T) {
	outside := t.TempDir()
	diffWrite(t, outside+"/secret", "TOP SECRET\n", 0o644)
	root := Root{Name: "workspace", Host: t.TempDir(), Upper: t.TempDir()}
	diffMust(t, os.Symlink(outside, root.Host+"/d"))
	diffWrite(t, root.Upper+"/d/secret", "mine\n", 0o644)
	var buf bytes.Buffer
	err := WritePatch(&buf, []Root{root}, Change{Root: "workspace", Path: "d/secret", Kind: Modified})
	if strings.Contains(buf.String(), "SECRET") {
		t.Fatalf("patch read through a host symlink out of the root:\n%s", buf.String())
	}
	t.Logf("err=%v", err)
}

func TestStat(t *testing.T) {
	old := unix.Umask(0o022)
	defer unix.Umask(old)
	want := map[string]StatLine{
		"modified_two_hunks": {Path: "f.txt", Kind: Modified, Added: 3, Removed: 3},
		"added":              {Path: "new/a.go", Kind: Added, Added: 3},
		"deleted":            {Path: "gone.txt", Kind: Deleted, Removed: 2},
		"deleted_dir":        {Path: "build", Kind: Deleted},
		"mode_only":          {Path: "run.sh", Kind: ModeChg},
		"binary_nul":         {Path: "img.bin", Kind: Modified, Binary: true},
		"too_large":          {Path: "big.log", Kind: Modified, Binary: true},
		"no_newline_at_end":  {Path: "n.txt", Kind: Modified, Added: 2, Removed: 1},
		"home_root":          {Path: "~/.bashrc", Kind: Modified, Added: 1},
	}
	for _, tc := range patchGoldenCases {
		w, ok := want[tc.name]
		if !ok {
			continue
		}
		root := Root{Name: "workspace", Host: t.TempDir(), Upper: t.TempDir()}
		if tc.root != "" {
			root.Name = tc.root
		}
		tc.setup(t, root.Host, root.Upper)
		c := tc.change
		c.Root = root.Name
		got, err := Stat([]Root{root}, c)
		diffMust(t, err)
		if got != w {
			t.Errorf("Stat %s = %+v, want %+v", tc.name, got, w)
		}
	}
}

// applyHunks applies writeHunks output to a; used to check random diffs.
func applyHunks(t *testing.T, a []string, patch string) []string {
	t.Helper()
	var out []string
	ai := 0
	lines := strings.SplitAfter(patch, "\n")
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if l == "" {
			continue
		}
		if strings.HasPrefix(l, "@@ ") {
			var start int
			fmt.Sscanf(strings.TrimPrefix(l, "@@ -"), "%d", &start)
			if strings.HasPrefix(strings.Fields(l)[1], "-") && !strings.Contains(strings.Fields(l)[1], ",0") {
				start--
			}
			out = append(out, a[ai:start]...)
			ai = start
			continue
		}
		body := l[1:]
		if i+1 < len(lines) && strings.HasPrefix(lines[i+1], "\\ No newline") {
			body = strings.TrimSuffix(body, "\n")
			i++
		}
		switch l[0] {
		case ' ':
			out = append(out, a[ai])
			ai++
		case '-':
			if a[ai] != body {
				t.Fatalf("patch removes %q but a has %q", body, a[ai])
			}
			ai++
		case '+':
			out = append(out, body)
		}
	}
	return append(out, a[ai:]...)
}

func randomLines(rng *rand.Rand, n int) []string {
	lines := make([]string, n)
	for i := range lines {
		lines[i] = string(rune('a'+rng.IntN(4))) + "\n"
	}
	if n > 0 && rng.IntN(3) == 0 {
		lines[n-1] = strings.TrimSuffix(lines[n-1], "\n")
	}
	return lines
}

// TestDiffLinesRandom checks that scripts and hunks rebuild b from a and
// that Myers finds a shortest script (against an LCS table).
func TestDiffLinesRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 3000 {
		a, b := randomLines(rng, rng.IntN(25)), randomLines(rng, rng.IntN(25))
		ops := diffLines(a, b)
		edits := 0
		for _, op := range ops {
			if op != opEqual {
				edits++
			}
		}
		if want := len(a) + len(b) - 2*lcsLen(a, b); edits != want {
			t.Fatalf("diff of %q -> %q has %d edits, shortest is %d", a, b, edits, want)
		}
		var buf bytes.Buffer
		bw := newPatchBufWriter(&buf)
		writeHunks(bw, a, b)
		diffMust(t, bw.Flush())
		if got := applyHunks(t, a, buf.String()); strings.Join(got, "") != strings.Join(b, "") {
			t.Fatalf("patch of %q -> %q rebuilds %q:\n%s", a, b, got, buf.String())
		}
	}
}

func lcsLen(a, b []string) int {
	dp := make([][]int, len(a)+1)
	for i := range dp {
		dp[i] = make([]int, len(b)+1)
	}
	for i := len(a) - 1; i >= 0; i-- {
		for j := len(b) - 1; j >= 0; j-- {
			if a[i] == b[j] {
				dp[i][j] = dp[i+1][j+1] + 1
			} else {
				dp[i][j] = max(dp[i+1][j], dp[i][j+1])
			}
		}
	}
	return dp[0][0]
}

func TestDiffLinesFallback(t *testing.T) {
	a := make([]string, 3000)
	b := make([]string, 3000)
	for i := range a {
		a[i], b[i] = fmt.Sprintf("a%d\n", i), fmt.Sprintf("b%d\n", i)
	}
	a[0], b[0] = "same\n", "same\n"
	ops := diffLines(a, b)
	if len(ops) != 1+2*2999 || ops[0] != opEqual || ops[1] != opDelete || ops[len(ops)-1] != opInsert {
		t.Fatalf("fallback script has %d ops", len(ops))
	}
}

func newPatchBufWriter(buf *bytes.Buffer) *bufio.Writer { return bufio.NewWriter(buf) }
