package layer

import (
	"path"
	"path/filepath"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/airlock-dev/airlock/internal/errdefs"
)

// maxPathArg bounds a user-given path argument (PATH_MAX).
const maxPathArg = 4096

// absRoot marks a selector given as an absolute host path.
const absRoot = "/"

// ValidatePath checks one user-given path argument for diff, commit or
// rollback. Three forms are accepted: a workspace-relative path
// ("src/a.go", "./src", "src/", "."), a home path ("~", "~/x"), and an
// absolute host path, which selects changes of extra copy-on-write roots
// (ResolveArgs maps absolute workspace and home paths to the first two
// forms first, and refuses those outside every root). Everything else is
// rejected with errdefs.ErrInvalid: empty, a ".." that climbs out after
// cleaning, control characters (NUL, newline, ESC, DEL, C1), "~user", and
// anything longer than 4096 bytes.
func ValidatePath(p string) error {
	_, _, err := parsePathArg(p)
	return err
}

// parsePathArg validates p and returns the root it names ("workspace",
// "home", or absRoot for an absolute path) and the cleaned path inside that
// root ("" for the root itself; the whole clean path for absRoot).
func parsePathArg(p string) (root, rel string, err error) {
	if p == "" {
		return "", "", errdefs.Invalid("empty path: name a workspace path like src/a.go or a home path like ~/x")
	}
	if len(p) > maxPathArg {
		return "", "", errdefs.Invalid("path is longer than %d bytes: name a shorter path", maxPathArg)
	}
	if i := indexControl(p); i >= 0 {
		return "", "", errdefs.Invalid("path %s contains a control character: name the path without it", EscapeName(p))
	}
	root, body := "workspace", p
	switch {
	case p == "~":
		return "home", "", nil
	case strings.HasPrefix(p, "~/"):
		root, body = "home", p[2:]
	case strings.HasPrefix(p, "~"):
		return "", "", errdefs.Invalid("path %s names another user's home: only ~/ paths are allowed", EscapeName(p))
	case strings.HasPrefix(p, "/"):
		// An absolute path names an extra copy-on-write root's change by its
		// host path; ResolveArgs has already turned workspace and home paths
		// into their relative forms and refused paths outside every root.
		return absRoot, path.Clean(p), nil
	}
	if body == "" {
		return root, "", nil
	}
	clean := path.Clean(body)
	if clean == ".." || strings.HasPrefix(clean, "../") || strings.HasPrefix(clean, "/") {
		return "", "", errdefs.Invalid("path %s leaves the %s: name a path inside it", EscapeName(p), root)
	}
	if clean == "." {
		clean = ""
	}
	return root, clean, nil
}

// indexControl returns the byte offset of the first control character
// (C0, DEL or a C1 code point) in s, or -1.
func indexControl(s string) int {
	for i, r := range s {
		if r == utf8.RuneError {
			continue // an invalid byte, not a control: names may hold them
		}
		if unicode.IsControl(r) {
			return i
		}
	}
	return -1
}

// pathSel is a validated path argument.
type pathSel struct {
	arg  string // as given, for messages
	root string
	rel  string
}

func (s pathSel) covers(c Change) bool {
	if s.root == absRoot {
		if c.Root == "workspace" || c.Root == "home" {
			return false // their changes are selected by relative and ~/ paths
		}
		d := c.Display()
		return s.rel == "/" || d == s.rel || strings.HasPrefix(d, s.rel+"/")
	}
	if c.Root != s.root {
		return false
	}
	return s.rel == "" || c.Path == s.rel || strings.HasPrefix(c.Path, s.rel+"/")
}

func parseSels(paths []string) ([]pathSel, error) {
	sels := make([]pathSel, 0, len(paths))
	for _, p := range paths {
		root, rel, err := parsePathArg(p)
		if err != nil {
			return nil, err
		}
		sels = append(sels, pathSel{arg: p, root: root, rel: rel})
	}
	return sels, nil
}

// Select keeps the changes at or beneath any of paths (all of them when
// paths is empty), then drops those at or beneath any of exclude. Every
// path is validated first. A path that matches no change is an
// errdefs.ErrNotFound error, so a typo never silently selects nothing.
func Select(changes []Change, paths, exclude []string) ([]Change, error) {
	inc, err := parseSels(paths)
	if err != nil {
		return nil, err
	}
	exc, err := parseSels(exclude)
	if err != nil {
		return nil, err
	}
	hit := make([]bool, len(inc))
	var out []Change
	for _, c := range changes {
		if !matchAny(inc, c, hit) || matchAny(exc, c, nil) {
			continue
		}
		out = append(out, c)
	}
	for i, h := range hit {
		if !h {
			return nil, errdefs.NotFound("no change at %s; see airlock diff", EscapeName(inc[i].arg))
		}
	}
	return out, nil
}

// matchAny reports whether any selector covers c (true for no selectors
// when hit is non-nil, i.e. an inclusion list), marking every hit.
func matchAny(sels []pathSel, c Change, hit []bool) bool {
	if len(sels) == 0 {
		return hit != nil
	}
	found := false
	for i, s := range sels {
		if s.covers(c) {
			found = true
			if hit == nil {
				return true
			}
			hit[i] = true
		}
	}
	return found
}

// selectQuiet is Select without the not-found check (Diff with Paths
// reports an empty result rather than an error for a quiet path).
func selectQuiet(changes []Change, paths []string) ([]Change, error) {
	sels, err := parseSels(paths)
	if err != nil || len(sels) == 0 {
		return changes, err
	}
	out := changes[:0:0]
	for _, c := range changes {
		if matchAny(sels, c, make([]bool, len(sels))) {
			out = append(out, c)
		}
	}
	return out, nil
}

// FilterNoise hides changes the user has declared uninteresting (caches,
// build output) and counts them. Each ignore entry is a display-form path
// ("~/.cache", "node_modules/.cache", "/opt/x/tmp"); a change matches when
// its Display() equals the entry or lies beneath it. "*" matches any run of
// characters within one component.
func FilterNoise(changes []Change, ignore []string) (shown []Change, hidden int) {
	pats := make([][]string, 0, len(ignore))
	for _, ig := range ignore {
		ig = strings.TrimSuffix(ig, "/")
		if ig != "" {
			pats = append(pats, strings.Split(ig, "/"))
		}
	}
	shown = make([]Change, 0, len(changes))
	for _, c := range changes {
		if noiseMatch(pats, strings.Split(c.Display(), "/")) {
			hidden++
			continue
		}
		shown = append(shown, c)
	}
	return shown, hidden
}

func noiseMatch(pats [][]string, comps []string) bool {
	for _, pat := range pats {
		if len(pat) > len(comps) {
			continue
		}
		ok := true
		for i, pc := range pat {
			if !starMatch(pc, comps[i]) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// starMatch matches name against pattern where "*" is any run of bytes
// and every other byte is literal (no [classes] or escapes, so entries
// naming files with brackets just work).
func starMatch(pattern, name string) bool {
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return pattern == name
	}
	if !strings.HasPrefix(name, parts[0]) {
		return false
	}
	name = name[len(parts[0]):]
	last := parts[len(parts)-1]
	for _, mid := range parts[1 : len(parts)-1] {
		i := strings.Index(name, mid)
		if i < 0 {
			return false
		}
		name = name[i+len(mid):]
	}
	return len(name) >= len(last) && strings.HasSuffix(name, last)
}

// ResolveArgs rewrites the absolute path arguments a shell hands over
// (a tab-completed /home/me/proj/src, an expanded ~/.bashrc) into the form
// Select understands: workspace paths relative, home paths as ~/..., paths
// of extra roots kept absolute. The deepest root holding a path wins (a
// workspace inside the home directory is the workspace). An absolute path
// outside every root is errdefs.ErrInvalid. Other arguments pass unchanged
// (Select validates them).
func ResolveArgs(roots []Root, args []string) ([]string, error) {
	out := make([]string, len(args))
	for i, a := range args {
		if !strings.HasPrefix(a, "/") || indexControl(a) >= 0 {
			out[i] = a
			continue
		}
		r, err := resolveAbs(roots, path.Clean(a))
		if err != nil {
			return nil, err
		}
		out[i] = r
	}
	return out, nil
}

func resolveAbs(roots []Root, p string) (string, error) {
	best := -1
	for i, r := range roots {
		if under(p, r.Host) && (best < 0 || len(r.Host) > len(roots[best].Host)) {
			best = i
		}
	}
	if best < 0 {
		if real := realPrefix(p); real != p {
			return resolveAbs(roots, real)
		}
		return "", errdefs.Invalid("path %s is outside the workspace and every copy-on-write directory: name a path inside them", EscapeName(p))
	}
	r := roots[best]
	rel := strings.TrimPrefix(strings.TrimPrefix(p, r.Host), "/")
	switch r.Name {
	case "workspace":
		if rel == "" {
			return ".", nil
		}
		return rel, nil
	case "home":
		return path.Join("~", rel), nil
	}
	return p, nil
}

// under reports whether p is dir or beneath it (both clean and absolute).
func under(p, dir string) bool {
	return dir == "/" || p == dir || strings.HasPrefix(p, dir+"/")
}

// realPrefix resolves symlinks in the longest existing leading part of p
// (/home -> /data/home), so a path typed through a symlinked directory
// still finds its root. It only interprets an argument: commit and
// rollback resolve every path themselves, beneath the root, by descriptor.
func realPrefix(p string) string {
	rest := ""
	for d := p; d != "/"; d = path.Dir(d) {
		if real, err := filepath.EvalSymlinks(d); err == nil {
			return path.Join(real, rest)
		}
		rest = path.Join(path.Base(d), rest)
	}
	return p
}
