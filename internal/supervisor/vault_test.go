package supervisor

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/airlock-dev/airlock/internal/sandbox"
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

// A started pod's commands get what the walls set in a run's environment
// (proxy, vault placeholders, CA bundle), over the person's own value.
func TestSetWallEnv(t *testing.T) {
	r := &runner{spec: &sandbox.Spec{Env: []string{"HOME=/h", "TOKEN=user"}}}
	r.setWallEnv("TOKEN", "airlock-placeholder")
	r.setWallEnv("HTTPS_PROXY", "http://10.0.0.1:3128")
	if got := strings.Join(r.spec.Env, " "); got != "HOME=/h TOKEN=airlock-placeholder HTTPS_PROXY=http://10.0.0.1:3128" {
		t.Errorf("the command's environment: %s", got)
	}
	if got := strings.Join(r.wallEnv, " "); got != "TOKEN=airlock-placeholder HTTPS_PROXY=http://10.0.0.1:3128" {
		t.Errorf("what the walls set: %s", got)
	}
}
