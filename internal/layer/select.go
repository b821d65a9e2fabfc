package layer

import (
	"path"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/airlock-dev/airlock/internal/errdefs"
)

// maxPathArg bounds a user-given path argument (PATH_MAX).
const maxPathArg = 4096

// ValidatePath checks one user-given path argument for diff, commit or
// rollback. Two forms are accepted: a workspace-relative path ("src/a.go",
// "./src", "src/", ".") and a home path ("~", "~/x"). Everything else is
// rejected with errdefs.ErrInvalid: empty, absolute, a ".." that climbs out
// after cleaning, control characters (NUL, newline, ESC, DEL, C1), "~user",
// and anything longer than 4096 bytes.
func ValidatePath(p string) error {
	_, _, err := parsePathArg(p)
	return err
}

// parsePathArg validates p and returns the root it names ("workspace" or
// "home") and the cleaned path inside that root ("" for the root itself).
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
		return "", "", errdefs.Invalid("path %s is absolute: give it relative to the workspace or as ~/...", EscapeName(p))
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
