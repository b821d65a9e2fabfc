package atomicfile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func entries(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

// Write replaces the content with a 0600 file and leaves no temp file;
// a failing writer leaves the old content and no temp file either.
func TestWrite(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state.json")
	if err := os.WriteFile(p, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(p, []byte("new")); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	fi, _ := os.Stat(p)
	if string(b) != "new" || fi.Mode().Perm() != 0o600 {
		t.Errorf("after WriteFile: %q, mode %v; want new, 0600", b, fi.Mode().Perm())
	}
	boom := errors.New("boom")
	if err := Write(p, func(io.Writer) error { return boom }); !errors.Is(err, boom) {
		t.Errorf("a failing writer: %v, want its error", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "new" {
		t.Errorf("a failed Write changed the file: %q", b)
	}
	if got := entries(t, dir); len(got) != 1 {
		t.Errorf("directory holds %v, want only state.json", got)
	}
}

// Create never replaces: a second Create gets os.ErrExist and the first
// content stays.
func TestCreate(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "key")
	if err := Create(p, []byte("first")); err != nil {
		t.Fatal(err)
	}
	if err := Create(p, []byte("second")); !errors.Is(err, os.ErrExist) {
		t.Errorf("second Create: %v, want os.ErrExist", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "first" {
		t.Errorf("Create replaced the file: %q", b)
	}
	if got := entries(t, dir); len(got) != 1 {
		t.Errorf("directory holds %v, want only key", got)
	}
}
