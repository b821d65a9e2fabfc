package supervisor

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// The state directory is hidden whole, or around a root kept inside it,
// never with the root itself.
func TestHideAround(t *testing.T) {
	d := t.TempDir()
	for _, p := range []string{"pods/a/upper", "ws/proj/src", "ws/other"} {
		if err := os.MkdirAll(filepath.Join(d, p), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(d, "vault.key"), []byte("k"), 0o600)
	if got := hideAround(d, []string{"/elsewhere/proj", d + "x"}); !slices.Equal(got, []string{d}) {
		t.Errorf("no root inside: hide %v, want the whole dir", got)
	}
	got := hideAround(d, []string{filepath.Join(d, "ws/proj")})
	want := []string{filepath.Join(d, "pods"), filepath.Join(d, "vault.key"), filepath.Join(d, "ws/other")}
	if !slices.Equal(got, want) {
		t.Errorf("root inside: hide %v, want %v", got, want)
	}
	if got := hideAround(d, []string{d}); len(got) != 0 {
		t.Errorf("the dir is a root: hide %v, want nothing", got)
	}
}

// A started pod's commands get what the walls added to an ordinary run's
// environment (proxy, vault placeholders, CA bundle), and nothing else
// of the supervisor's.
func TestAddedEnv(t *testing.T) {
	base := []string{"HOME=/h", "PATH=/bin", "TOKEN=user"}
	env := setEnv(append(append([]string(nil), base...), "HTTPS_PROXY=http://10.0.0.1:3128"), "TOKEN", "airlock-placeholder")
	got := addedEnv(base, env)
	want := []string{"TOKEN=airlock-placeholder", "HTTPS_PROXY=http://10.0.0.1:3128"}
	if len(got) != len(want) {
		t.Fatalf("added %q, want %q", got, want)
	}
	for _, kv := range want {
		found := false
		for _, g := range got {
			found = found || g == kv
		}
		if !found {
			t.Errorf("added %q lacks %q", got, kv)
		}
	}
}
