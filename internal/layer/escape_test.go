package layer

import (
	"encoding/json"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// unescapeName inverts EscapeName with Go's own string-literal decoder;
// that it round-trips proves EscapeName injective.
func unescapeName(s string) (string, error) {
	return strconv.Unquote(`"` + strings.ReplaceAll(s, `"`, `\"`) + `"`)
}

func TestEscapeNameExamples(t *testing.T) {
	for in, want := range map[string]string{
		"src/main.go":        "src/main.go",
		"héllo wörld 日本.txt": "héllo wörld 日本.txt",
		"\x1b]0;pwned\x07":   `\x1b]0;pwned\a`,
		"a\nb":               `a\nb`,
		"tab\there":          `tab\there`,
		"back\\slash":        `back\\slash`,
		"\x1b[2J":            `\x1b[2J`,
		"del\x7f":            `del\x7f`,
		"c1\u0085\u009b":     `c1\u0085\u009b`,
		"bad\xff\xfe":        `bad\xff\xfe`,
		"\u202eevil.txt":     `\u202eevil.txt`,
		"\u2066iso\u2069":    `\u2066iso\u2069`,
		"\u061c\u200e\u200f": `\u061c\u200e\u200f`,
		"zw\u200bsp\ufeff":   `zw\u200bsp\ufeff`,
		"line\u2028sep":      `line\u2028sep`,
		"\U000e0041tag":      `\U000e0041tag`,
		"\uFFFD":             "\uFFFD",
		`"quoted"`:           `"quoted"`,
	} {
		if got := EscapeName(in); got != want {
			t.Errorf("EscapeName(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestEscapeNameProperties checks, over random strings biased toward the
// dangerous bytes, that output is terminal-safe and decodes back exactly.
func TestEscapeNameProperties(t *testing.T) {
	alphabet := []string{"a", "/", " ", "\\", "\"", "\x00", "\x1b", "\n", "\r", "\x7f", "\x80", "\xc2",
		"\xff", "\u0085", "\u202e", "\u2067", "é", "日", "\U0001F600", "\uFFFD", "x", "\\x1b", "\\u202e"}
	rng := rand.New(rand.NewPCG(1, 2))
	seen := map[string]string{}
	for range 20000 {
		var b strings.Builder
		for range rng.IntN(8) {
			b.WriteString(alphabet[rng.IntN(len(alphabet))])
		}
		in := b.String()
		out := EscapeName(in)
		checkNameEscaped(t, in, out)
		if prev, ok := seen[out]; ok && prev != in {
			t.Fatalf("EscapeName not injective: %q and %q both give %q", prev, in, out)
		}
		seen[out] = in
	}
}

func checkNameEscaped(t testing.TB, in, out string) {
	t.Helper()
	if !utf8.ValidString(out) {
		t.Fatalf("EscapeName(%q) = %q is not valid UTF-8", in, out)
	}
	for _, r := range out {
		if r != ' ' && !unicode.IsPrint(r) {
			t.Fatalf("EscapeName(%q) = %q keeps %U", in, out, r)
		}
	}
	back, err := unescapeName(out)
	if err != nil || back != in {
		t.Fatalf("EscapeName(%q) = %q decodes to %q, %v", in, out, back, err)
	}
}

func FuzzEscapeName(f *testing.F) {
	for _, s := range []string{"", "a", "\x1b]0;pwned\x07", "a\nb", "\xff", "\u202e", `\x41`, "\\", "\u0085", "\xc2\x85"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		checkNameEscaped(t, s, EscapeName(s))
	})
}

func TestEscapeContentLine(t *testing.T) {
	for in, want := range map[string]string{
		"\tcode(); // a\\b\n":      "\tcode(); // a\\b\n",
		"crlf\r\n":                 "crlf\r\n",
		"evil();\rgood();\n":       `evil();\rgood();` + "\n",
		"\x1b]52;c;ZXZpbA==\x07\n": `\x1b]52;c;ZXZpbA==\a` + "\n",
		"if x \u202e{\n":           `if x \u202e{` + "\n",
		"no newline":               "no newline",
	} {
		if got := escapeContentLine(in); got != want {
			t.Errorf("escapeContentLine(%q) = %q, want %q", in, got, want)
		}
	}
}

// --json shows modes as octal permission strings, and reads them back.
func TestChangeJSONModes(t *testing.T) {
	c := Change{Root: "workspace", Path: "bin/tool", Kind: ModeChg, Type: "file", OldType: "file",
		Mode: statFileMode(unix.S_IFREG | 0o4755), OldMode: statFileMode(unix.S_IFREG | 0o644), Size: 3}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"mode":"4755"`) || !strings.Contains(string(b), `"old_mode":"0644"`) {
		t.Fatalf("JSON modes: %s", b)
	}
	d := Change{Root: "workspace", Path: "d", Kind: Added, Type: "dir", Mode: statFileMode(unix.S_IFDIR | 0o1777)}
	for _, want := range []Change{c, d, {Root: "home", Path: "gone", Kind: Deleted, OldType: "symlink", OldMode: statFileMode(unix.S_IFLNK | 0o777)}} {
		b, err := json.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		var got Change
		if err := json.Unmarshal(b, &got); err != nil || got != want {
			t.Errorf("round trip of %s: %+v, %v; want %+v", b, got, err, want)
		}
	}
	if b, _ := json.Marshal(d); !strings.Contains(string(b), `"mode":"1777"`) || strings.Contains(string(b), "old_mode") {
		t.Errorf("added dir JSON: %s", b)
	}
}
