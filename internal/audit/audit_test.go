package audit

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	if os.Getenv("AUDIT_TEST_HELPER") == "append" {
		helperAppend()
	}
	os.Exit(m.Run())
}

// helperAppend appends 200 events from a separate process.
func helperAppend() {
	key, err := KeyFor(os.Getenv("AUDIT_TEST_HOME"))
	if err == nil {
		var l *Log
		if l, err = Open(os.Getenv("AUDIT_TEST_PATH"), key); err == nil {
			for i := 0; i < 200 && err == nil; i++ {
				_, err = l.Append(Event{Pod: "p", Actor: "helper", Action: "net.dns", Outcome: "allowed"})
			}
			if cerr := l.Close(); err == nil {
				err = cerr
			}
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// trail writes n events to a fresh trail and returns its path and key.
func trail(t *testing.T, n int) (string, []byte) {
	t.Helper()
	home := t.TempDir()
	key, err := KeyFor(home)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(home, "pods", "dev")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "audit.jsonl")
	l, err := Open(path, key)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= n; i++ {
		e, err := l.Append(Event{Pod: "dev", Actor: "user", Action: "commit", Outcome: "ok",
			Details: map[string]any{"i": i, "path": fmt.Sprintf("src/f%d.go", i), "big": int64(1) << 60}})
		if err != nil {
			t.Fatal(err)
		}
		if e.Seq != uint64(i) || e.Hash == "" || e.Prev == "" || e.Time.IsZero() {
			t.Fatalf("Append returned %+v", e)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return path, key
}

func lines(t *testing.T, path string) [][]byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ls := bytes.SplitAfter(data, []byte("\n"))
	if len(ls[len(ls)-1]) == 0 {
		ls = ls[:len(ls)-1]
	}
	return ls
}

func rewrite(t *testing.T, path string, ls [][]byte) {
	t.Helper()
	out := bytes.Join(ls, nil)
	if len(out) > 0 && out[len(out)-1] != '\n' {
		out = append(out, '\n')
	}
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
}

func wantBad(t *testing.T, path string, key []byte, line int, reason string) {
	t.Helper()
	n, err := Verify(path, key)
	var ve *VerifyError
	if !errors.As(err, &ve) {
		t.Fatalf("Verify = %d, %v; want a VerifyError at line %d", n, err, line)
	}
	if ve.Line != line || !strings.Contains(ve.Error(), reason) {
		t.Fatalf("Verify: %q, want line %d and %q", ve.Error(), line, reason)
	}
	if n != line-1 {
		t.Errorf("Verify counted %d intact lines, want %d", n, line-1)
	}
}

func TestIntactTrail(t *testing.T) {
	path, key := trail(t, 12)
	n, err := Verify(path, key)
	if err != nil || n != 12 {
		t.Fatalf("Verify = %d, %v", n, err)
	}
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o600 {
		t.Errorf("trail mode %v", st.Mode())
	}
	// Reopening continues the chain.
	l, err := Open(path, key)
	if err != nil {
		t.Fatal(err)
	}
	e, err := l.Append(Event{Action: "rollback"})
	l.Close()
	if err != nil || e.Seq != 13 {
		t.Fatalf("append after reopen: %+v %v", e, err)
	}
	if n, err := Verify(path, key); err != nil || n != 13 {
		t.Fatalf("Verify after reopen = %d, %v", n, err)
	}
}

func TestEmptyAndMissing(t *testing.T) {
	dir := t.TempDir()
	key := bytes.Repeat([]byte{1}, KeySize)
	if n, err := Verify(filepath.Join(dir, "audit.jsonl"), key); n != 0 || err != nil {
		t.Fatalf("missing trail: %d %v", n, err)
	}
	path, key := trail(t, 3)
	os.Remove(path)
	wantBad(t, path, key, 1, "missing")
}

// The attacker's moves, each of which Verify must catch and locate.

func TestAttackEditField(t *testing.T) {
	path, key := trail(t, 9)
	ls := lines(t, path)
	ls[6] = bytes.Replace(ls[6], []byte(`"outcome":"ok"`), []byte(`"outcome":"no"`), 1)
	rewrite(t, path, ls)
	wantBad(t, path, key, 7, "line 7: hash mismatch")
}

func TestAttackEditDetailsKeepsLength(t *testing.T) {
	path, key := trail(t, 5)
	ls := lines(t, path)
	ls[1] = bytes.Replace(ls[1], []byte("src/f2.go"), []byte("src/f9.go"), 1)
	rewrite(t, path, ls)
	wantBad(t, path, key, 2, "hash mismatch")
}

func TestAttackDeleteMiddleLine(t *testing.T) {
	path, key := trail(t, 9)
	ls := lines(t, path)
	rewrite(t, path, append(ls[:3:3], ls[4:]...))
	wantBad(t, path, key, 4, "line 4: sequence 5 follows 3 (removed or reordered)")
}

func TestAttackDeleteFirstLine(t *testing.T) {
	path, key := trail(t, 4)
	rewrite(t, path, lines(t, path)[1:])
	wantBad(t, path, key, 1, "sequence 2 follows 0")
}

func TestAttackDeleteLastLines(t *testing.T) {
	path, key := trail(t, 12)
	rewrite(t, path, lines(t, path)[:9])
	wantBad(t, path, key, 10, "file ends at line 9 but the head records 12 lines (lines removed)")
}

func TestAttackDeleteEverything(t *testing.T) {
	path, key := trail(t, 3)
	os.WriteFile(path, nil, 0o600)
	wantBad(t, path, key, 1, "file ends at line 0 but the head records 3 lines")
}

func TestAttackDeleteHead(t *testing.T) {
	path, key := trail(t, 3)
	rewrite(t, path, lines(t, path)[:2])
	os.Remove(HeadPath(path))
	wantBad(t, path, key, 3, "head record is missing")
}

func TestAttackForgeHead(t *testing.T) {
	path, key := trail(t, 5)
	ls := lines(t, path)
	rewrite(t, path, ls[:3])
	// Point the head at line 3, signed with a guessed key.
	var e Event
	json.Unmarshal(ls[2], &e)
	fake := fmt.Sprintf("%s %020d %s %s\n", headTag, 3, e.Hash, headMAC(make([]byte, KeySize), 3, e.Hash))
	os.WriteFile(HeadPath(path), []byte(fake), 0o600)
	wantBad(t, path, key, 4, "forged")
}

func TestAttackSwapLines(t *testing.T) {
	path, key := trail(t, 6)
	ls := lines(t, path)
	ls[2], ls[3] = ls[3], ls[2]
	rewrite(t, path, ls)
	wantBad(t, path, key, 3, "sequence 4 follows 2")
}

func TestAttackForgedAppend(t *testing.T) {
	path, key := trail(t, 5)
	ls := lines(t, path)
	var last Event
	json.Unmarshal(ls[4], &last)
	// The attacker knows the format and the previous hash but not the key.
	forged := Event{Seq: 6, Time: time.Now().UTC(), Pod: "dev", Actor: "user", Action: "commit", Outcome: "ok", Prev: last.Hash}
	line, _ := encode(bytes.Repeat([]byte{0x42}, KeySize), &forged)
	rewrite(t, path, append(ls, line))
	wantBad(t, path, key, 6, "hash mismatch")
}

func TestAttackPlainSHA256Chain(t *testing.T) {
	// A forger who assumes the chain is a bare SHA-256 of prev||body.
	path, key := trail(t, 2)
	ls := lines(t, path)
	b, _, _ := split(bytes.TrimSuffix(ls[1], []byte("\n")))
	b = bytes.Replace(b, []byte(`"ok"`), []byte(`"ko"`), 1)
	var e Event
	json.Unmarshal(ls[0], &e)
	sum := sha256.Sum256(append([]byte(e.Hash), b...))
	forged := append(append(b[:len(b)-1:len(b)-1], []byte(`,"hash":"`+hex.EncodeToString(sum[:])+`"}`)...), '\n')
	rewrite(t, path, [][]byte{ls[0], forged})
	wantBad(t, path, key, 2, "hash mismatch")
}

func TestAttackTruncateMidLine(t *testing.T) {
	path, key := trail(t, 4)
	data, _ := os.ReadFile(path)
	os.WriteFile(path, data[:len(data)-20], 0o600)
	wantBad(t, path, key, 4, "truncated")
}

func TestAttackReplaceWithOtherKeyChain(t *testing.T) {
	path, key := trail(t, 4)
	// A whole self-consistent trail, head included, made with another key.
	other := bytes.Repeat([]byte{7}, KeySize)
	os.Remove(path)
	os.Remove(HeadPath(path))
	l, err := Open(path, other)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 4; i++ {
		l.Append(Event{Pod: "dev", Action: "commit", Outcome: "ok"})
	}
	l.Close()
	if n, err := Verify(path, other); err != nil || n != 4 {
		t.Fatalf("the forger's own chain should verify under their key: %d %v", n, err)
	}
	wantBad(t, path, key, 1, "hash mismatch")
}

func TestAttackTrailFromAnotherPod(t *testing.T) {
	path, key := trail(t, 3)
	other := filepath.Join(filepath.Dir(filepath.Dir(path)), "prod", "audit.jsonl")
	os.MkdirAll(filepath.Dir(other), 0o700)
	data, _ := os.ReadFile(path)
	head, _ := os.ReadFile(HeadPath(path))
	os.WriteFile(other, data, 0o600)
	os.WriteFile(HeadPath(other), head, 0o600)
	wantBad(t, other, key, 1, "does not chain")
}

func TestAttackInsertGarbage(t *testing.T) {
	path, key := trail(t, 3)
	ls := lines(t, path)
	rewrite(t, path, [][]byte{ls[0], []byte("{\"seq\":2}\n"), ls[1], ls[2]})
	wantBad(t, path, key, 2, "not an audit record")
}

func TestConcurrentGoroutinesAndProcesses(t *testing.T) {
	home := t.TempDir()
	key, _ := KeyFor(home)
	path := filepath.Join(home, "audit.jsonl")
	var cmds []*exec.Cmd
	for i := 0; i < 2; i++ {
		c := exec.Command(os.Args[0], "-test.run=^$")
		c.Env = append(os.Environ(), "AUDIT_TEST_HELPER=append", "AUDIT_TEST_HOME="+home, "AUDIT_TEST_PATH="+path)
		c.Stderr = os.Stderr
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, c)
	}
	l, err := Open(path, key)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				if _, err := l.Append(Event{Pod: "p", Action: "net.connect", Outcome: "allowed"}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	l.Close()
	for _, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Fatalf("helper: %v", err)
		}
	}
	if n, err := Verify(path, key); err != nil || n != 800 {
		t.Fatalf("Verify after concurrent appends = %d, %v", n, err)
	}
}

func TestAppendAfterDamagedTail(t *testing.T) {
	path, key := trail(t, 3)
	f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString(`{"seq":4,"half`)
	f.Close()
	l, _ := Open(path, key)
	e, err := l.Append(Event{Action: "commit"})
	l.Close()
	if err != nil || e.Seq != 4 {
		t.Fatalf("append after damage: %+v %v", e, err)
	}
	// The damaged line is named; the new line does not hide it.
	wantBad(t, path, key, 4, "not an audit record")
}

func TestKeyFor(t *testing.T) {
	home := filepath.Join(t.TempDir(), "h")
	var wg sync.WaitGroup
	keys := make([][]byte, 8)
	for i := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, err := KeyFor(home)
			if err != nil {
				t.Error(err)
			}
			keys[i] = k
		}()
	}
	wg.Wait()
	for _, k := range keys {
		if len(k) != KeySize || !hmac.Equal(k, keys[0]) {
			t.Fatal("concurrent first uses got different keys")
		}
	}
	st, _ := os.Stat(filepath.Join(home, "audit.key"))
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key mode %v", st.Mode())
	}
	entries, _ := os.ReadDir(home)
	if len(entries) != 1 {
		t.Errorf("KeyFor left temp files: %v", entries)
	}
	os.Chmod(filepath.Join(home, "audit.key"), 0o644)
	if _, err := KeyFor(home); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("world-readable key accepted: %v", err)
	}
	os.WriteFile(filepath.Join(home, "audit.key"), []byte("short"), 0o600)
	os.Chmod(filepath.Join(home, "audit.key"), 0o600)
	if _, err := KeyFor(home); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Errorf("short key accepted: %v", err)
	}
	link := filepath.Join(t.TempDir(), "h2")
	os.Mkdir(link, 0o700)
	os.Symlink(filepath.Join(home, "audit.key"), filepath.Join(link, "audit.key"))
	if _, err := KeyFor(link); err == nil {
		t.Error("KeyFor followed a symlinked key")
	}
}

func TestRead(t *testing.T) {
	path, key := trail(t, 3)
	l, _ := Open(path, key)
	l.Append(Event{Action: "net.dns", Details: map[string]any{"name": "example.com"}})
	l.Append(Event{Action: "net.connect"})
	l.Close()
	all, err := Read(path, Filter{})
	if err != nil || len(all) != 5 {
		t.Fatalf("Read = %d, %v", len(all), err)
	}
	if v := all[0].Details["big"]; fmt.Sprint(v) != "1152921504606846976" {
		t.Errorf("large integer read back as %v", v)
	}
	if ev, _ := Read(path, Filter{Action: "net."}); len(ev) != 2 {
		t.Errorf("prefix filter: %d", len(ev))
	}
	if ev, _ := Read(path, Filter{Action: "commit"}); len(ev) != 3 {
		t.Errorf("action filter: %d", len(ev))
	}
	if ev, _ := Read(path, Filter{Since: time.Now().Add(time.Hour)}); len(ev) != 0 {
		t.Errorf("since filter: %d", len(ev))
	}
	if ev, err := Read(filepath.Join(t.TempDir(), "none.jsonl"), Filter{}); ev != nil || err != nil {
		t.Errorf("missing trail: %v %v", ev, err)
	}
}

func BenchmarkAppend(b *testing.B) {
	key := bytes.Repeat([]byte{3}, KeySize)
	l, err := Open(filepath.Join(b.TempDir(), "audit.jsonl"), key)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	e := Event{Pod: "dev", Actor: "supervisor", Action: "net.dns", Outcome: "allowed",
		Details: map[string]any{"name": "registry.npmjs.org", "type": "A", "answers": 2}}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := l.Append(e); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendDurable(b *testing.B) {
	key := bytes.Repeat([]byte{3}, KeySize)
	l, err := Open(filepath.Join(b.TempDir(), "audit.jsonl"), key)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	for i := 0; i < b.N; i++ {
		if _, err := l.Append(Event{Pod: "dev", Action: "commit", Outcome: "ok"}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	key := bytes.Repeat([]byte{3}, KeySize)
	path := filepath.Join(b.TempDir(), "audit.jsonl")
	l, _ := Open(path, key)
	for i := 0; i < 10000; i++ {
		l.Append(Event{Pod: "dev", Action: "net.dns", Outcome: "allowed", Details: map[string]any{"name": "x.example.com"}})
	}
	l.Close()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if n, err := Verify(path, key); err != nil || n != 10000 {
			b.Fatal(n, err)
		}
	}
}

// A Log prepared ahead still chains onto lines another writer appended
// between its Prepare and its Append.
func TestPrepareThenOtherWriter(t *testing.T) {
	path, key := trail(t, 3)
	l1, err := Open(path, key)
	if err != nil {
		t.Fatal(err)
	}
	defer l1.Close()
	if err := l1.Prepare(); err != nil {
		t.Fatal(err)
	}
	l2, err := Open(path, key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l2.Append(Event{Action: "rollback"}); err != nil {
		t.Fatal(err)
	}
	l2.Close()
	e, err := l1.Append(Event{Action: "run.start"})
	if err != nil || e.Seq != 5 {
		t.Fatalf("append after another writer: seq %d, %v; want 5", e.Seq, err)
	}
	if n, err := Verify(path, key); err != nil || n != 5 {
		t.Fatalf("Verify = %d, %v", n, err)
	}
}
