package cli

import (
	"encoding/json"
	"strings"
	"testing"
)

// Audit details come from the agent (its command line, file names): the
// text view must not let them drive the terminal, and must stay JSON.
func TestTerminalJSON(t *testing.T) {
	hostile := "a > b \x1b]0;owned\x07\x1b[2J \u202eexe.txt \u0085\u009b\x7f \U000E0001 naïve"
	in := map[string]any{"args": []string{"sh", "-c", hostile}}
	out := terminalJSON(in)
	if i := strings.IndexFunc(out, func(r rune) bool {
		return r < 0x20 || r == 0x7f || (r >= 0x80 && r <= 0x9f) || r == 0x202e || r == 0xE0001
	}); i >= 0 {
		t.Fatalf("raw control or format character at %d: %q", i, out)
	}
	if !strings.Contains(out, "a > b") || !strings.Contains(out, "naïve") {
		t.Errorf("harmless text was escaped: %s", out)
	}
	var back map[string][]string
	if err := json.Unmarshal([]byte(out), &back); err != nil || back["args"][2] != hostile {
		t.Fatalf("not the same JSON: %v %q", err, back)
	}
}

func TestOneLine(t *testing.T) {
	got := oneLine("applying evil\x1b]0;x\x07\u202e\xff: renameat evil\x1b[2J: file exists\nsecond line")
	if strings.ContainsAny(got, "\x1b\x07\n\u202e\xff") {
		t.Fatalf("oneLine left a raw control: %q", got)
	}
	if !strings.Contains(got, `evil\x1b]0;x\a\u202e\xff`) || !strings.Contains(got, "; second line") {
		t.Errorf("oneLine = %q", got)
	}
	if s := `no change at a\nb; see airlock diff`; oneLine(s) != s {
		t.Errorf("an already escaped message changed: %q", oneLine(s))
	}
}
