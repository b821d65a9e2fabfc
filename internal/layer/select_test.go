package layer

import (
	"errors"
	"path"
	"strings"
	"testing"

	"github.com/airlock-dev/airlock/internal/errdefs"
)

func TestValidatePath(t *testing.T) {
	good := []string{"src/a.go", "./src", "src/", ".", "./", "a/../b", "~", "~/", "~/x", "~/.config/app",
		"dir with space/f", "naïve.txt", "bad\xffutf8", "-rf", "a//b", strings.Repeat("a", 4096)}
	for _, p := range good {
		if err := ValidatePath(p); err != nil {
			t.Errorf("ValidatePath(%q) = %v, want ok", p, err)
		}
	}
	bad := []string{"", "..", "../x", "./..", "src/../../x", "a/b/../../..",
		"~/..", "~/../root", "~/a/../../b", "~root", "~root/.ssh", "~~", "a\x00b", "a\nb", "a\rb",
		"\x1b]0;x\x07", "tab\tname", "del\x7f", "c1\u0085", "c1\u009b[2J", strings.Repeat("a", 4097)}
	for _, p := range bad {
		err := ValidatePath(p)
		if !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("ValidatePath(%q) = %v, want ErrInvalid", p, err)
			continue
		}
		msg := err.Error()
		if strings.ContainsAny(msg, "\x00\n\r\x1b\x7f") || strings.Contains(msg, "\u009b") {
			t.Errorf("error message for %q is not one safe line: %q", p, msg)
		}
	}
}

func FuzzValidatePath(f *testing.F) {
	for _, s := range []string{"src/a.go", "./src", "~/x", "../x", "~root", "/etc", "a\nb", "a/../../b", "~/..", "."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		root, rel, err := parsePathArg(p)
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalid) || strings.ContainsAny(err.Error(), "\n\r\x1b\x00") {
				t.Fatalf("bad error for %q: %q", p, err)
			}
			return
		}
		if root == absRoot {
			if rel != path.Clean(rel) || !strings.HasPrefix(rel, "/") || strings.ContainsRune(rel, 0) {
				t.Fatalf("%q accepted as the absolute selector %q", p, rel)
			}
			return
		}
		if root != "workspace" && root != "home" {
			t.Fatalf("%q: root %q", p, root)
		}
		if rel == ".." || strings.HasPrefix(rel, "../") || strings.HasPrefix(rel, "/") ||
			strings.Contains(rel, "/../") || strings.HasSuffix(rel, "/..") || rel == "." || strings.ContainsRune(rel, 0) {
			t.Fatalf("%q accepted as %s:%q, which escapes", p, root, rel)
		}
	})
}

var selectFixture = []Change{
	{Root: "workspace", Path: "docs", Kind: Added},
	{Root: "workspace", Path: "docs/a.md", Kind: Added},
	{Root: "workspace", Path: "src", Kind: ModeChg},
	{Root: "workspace", Path: "src/a.go", Kind: Modified},
	{Root: "workspace", Path: "src/ab.go", Kind: Modified},
	{Root: "workspace", Path: "src/gen/x.go", Kind: Added},
	{Root: "workspace", Path: "srcx", Kind: Added},
	{Root: "workspace", Path: "a\nb", Kind: Added},
	{Root: "home", Path: ".bashrc", Kind: Modified},
	{Root: "home", Path: ".cache/pip/x", Kind: Added},
	{Root: "/opt/tool", Path: "bin/t", Kind: Added},
}

func TestSelect(t *testing.T) {
	cases := []struct {
		paths, exclude []string
		want           string
	}{
		{nil, nil, "docs,docs/a.md,src,src/a.go,src/ab.go,src/gen/x.go,srcx,a\nb,~/.bashrc,~/.cache/pip/x,/opt/tool/bin/t"},
		{[]string{"src"}, nil, "src,src/a.go,src/ab.go,src/gen/x.go"},
		{[]string{"./src/"}, []string{"src/gen"}, "src,src/a.go,src/ab.go"},
		{[]string{"src/a.go"}, nil, "src/a.go"},
		{[]string{"src/gen/../a.go", "~/.bashrc"}, nil, "src/a.go,~/.bashrc"},
		{[]string{"~"}, []string{"~/.cache"}, "~/.bashrc"},
		{[]string{"."}, []string{"src", "docs", "srcx"}, "a\nb"},
		{nil, []string{"src", "~"}, "docs,docs/a.md,srcx,a\nb,/opt/tool/bin/t"},
		{[]string{"/opt/tool"}, nil, "/opt/tool/bin/t"},
		{[]string{"/opt/tool/bin/t"}, nil, "/opt/tool/bin/t"},
		{nil, []string{"/opt/tool/bin"}, "docs,docs/a.md,src,src/a.go,src/ab.go,src/gen/x.go,srcx,a\nb,~/.bashrc,~/.cache/pip/x"},
	}
	for _, c := range cases {
		got, err := Select(selectFixture, c.paths, c.exclude)
		if err != nil {
			t.Errorf("Select(%q, %q): %v", c.paths, c.exclude, err)
			continue
		}
		if d := diffDisplays(got); d != c.want {
			t.Errorf("Select(%q, %q) = %q, want %q", c.paths, c.exclude, d, c.want)
		}
	}
}

func TestSelectErrors(t *testing.T) {
	_, err := Select(selectFixture, []string{"src", "nope/\x1b[31mred"}, nil)
	if !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("control char in path: got %v, want ErrInvalid", err)
	}
	_, err = Select(selectFixture, []string{"src", "missing\u202etxt.exe"}, nil)
	if !errors.Is(err, errdefs.ErrNotFound) || err.Error() != `no change at missing\u202etxt.exe; see airlock diff` {
		t.Fatalf("unmatched path: got %v, want escaped NotFound", err)
	}
	for _, attack := range []string{"../../etc/shadow", "~root/.ssh/id_rsa", "src/../../.."} {
		if _, err := Select(selectFixture, []string{attack}, nil); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("Select(%q): got %v, want ErrInvalid", attack, err)
		}
		if _, err := Select(selectFixture, nil, []string{attack}); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("Select exclude %q: got %v, want ErrInvalid", attack, err)
		}
	}
	// "sr" is a prefix of "src" as a string but not as a path.
	if _, err := Select(selectFixture, []string{"sr"}, nil); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Select(sr): got %v, want NotFound", err)
	}
}

// The shell hands over absolute paths: a tab-completed workspace path, an
// expanded ~/x. They select the same changes as their relative forms; a
// path outside every root, or one that climbs out with "..", is refused.
func TestResolveArgs(t *testing.T) {
	roots := []Root{{Name: "workspace", Host: "/home/me/proj"}, {Name: "home", Host: "/home/me"}, {Name: "/opt/tool", Host: "/opt/tool"}}
	good := map[string]string{
		"/home/me/proj":          ".",
		"/home/me/proj/":         ".",
		"/home/me/proj/src/a.go": "src/a.go",
		"/home/me/proj/src/../x": "x",
		"/home/me":               "~",
		"/home/me/.bashrc":       "~/.bashrc",
		"/home/me/projx":         "~/projx",
		"/opt/tool/bin/t":        "/opt/tool/bin/t",
		"src/a.go":               "src/a.go",
		"~/.bashrc":              "~/.bashrc",
	}
	for in, want := range good {
		got, err := ResolveArgs(roots, []string{in})
		if err != nil || got[0] != want {
			t.Errorf("ResolveArgs(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"/etc/shadow", "/", "/home", "/home/me/proj/../../../etc/shadow", "/opt/toolx"} {
		if got, err := ResolveArgs(roots, []string{"src", bad}); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("ResolveArgs(%q) = %q, %v; want ErrInvalid", bad, got, err)
		}
	}
}

func FuzzSelect(f *testing.F) {
	f.Add("src", "src/gen")
	f.Add("./src/", "")
	f.Add("~", "~/.cache")
	f.Add("../x", "")
	f.Add("a\nb", "")
	f.Fuzz(func(t *testing.T, path, exclude string) {
		var ex []string
		if exclude != "" {
			ex = []string{exclude}
		}
		got, err := Select(selectFixture, []string{path}, ex)
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalid) && !errors.Is(err, errdefs.ErrNotFound) {
				t.Fatalf("uncategorised error %v", err)
			}
			return
		}
		root, rel, _ := parsePathArg(path)
		sel := pathSel{root: root, rel: rel}
		for _, c := range got {
			if !sel.covers(c) {
				t.Fatalf("Select(%q) kept %q outside it", path, c.Display())
			}
		}
	})
}

func TestFilterNoise(t *testing.T) {
	shown, hidden := FilterNoise(selectFixture, []string{"~/.cache", "src/*.go", "/opt/tool/", "docs/a.m*"})
	if d := diffDisplays(shown); d != "docs,src,src/gen/x.go,srcx,a\nb,~/.bashrc" || hidden != 5 {
		t.Fatalf("FilterNoise = %q, %d hidden", d, hidden)
	}
	shown, hidden = FilterNoise(selectFixture, nil)
	if len(shown) != len(selectFixture) || hidden != 0 {
		t.Fatalf("no ignores hid %d", hidden)
	}
	for _, c := range []struct {
		pat, name string
		ok        bool
	}{{"*", "x", true}, {"*.go", ".go", true}, {"a*b*c", "abc", true}, {"a*b*c", "axxbyyc", true},
		{"a*b*c", "acb", false}, {"a*a", "a", false}, {"[ab]", "[ab]", true}, {"[ab]", "a", false}} {
		if starMatch(c.pat, c.name) != c.ok {
			t.Errorf("starMatch(%q, %q) != %v", c.pat, c.name, c.ok)
		}
	}
}

// FuzzResolveArgs: an absolute argument is accepted only inside a root,
// and what it becomes selects nothing outside that root.
func FuzzResolveArgs(f *testing.F) {
	roots := []Root{{Name: "workspace", Host: "/home/me/proj"}, {Name: "home", Host: "/home/me"}, {Name: "/opt/tool", Host: "/opt/tool"}}
	for _, s := range []string{"/home/me/proj/x", "/home/me/.bashrc", "/opt/tool/bin", "/etc/passwd", "/home/me/proj/../../../etc", "src", "/", "//home/me"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, arg string) {
		out, err := ResolveArgs(roots, []string{arg})
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalid) || strings.ContainsAny(err.Error(), "\n\r\x1b\x00") {
				t.Fatalf("bad error for %q: %q", arg, err)
			}
			return
		}
		if !strings.HasPrefix(arg, "/") || indexControl(arg) >= 0 {
			if out[0] != arg {
				t.Fatalf("non-absolute %q rewritten to %q", arg, out[0])
			}
			return
		}
		clean := path.Clean(arg)
		inside := false
		for _, r := range roots {
			inside = inside || under(clean, r.Host)
		}
		if !inside && realPrefix(clean) == clean {
			t.Fatalf("%q outside every root accepted as %q", arg, out[0])
		}
		root, rel, err := parsePathArg(out[0])
		if err != nil {
			t.Fatalf("%q became %q, which does not parse: %v", arg, out[0], err)
		}
		if root == absRoot && !under(rel, "/opt/tool") {
			t.Fatalf("%q became the absolute selector %q outside its root", arg, rel)
		}
	})
}
