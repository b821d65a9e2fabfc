package vault

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/airlock-dev/airlock/internal/errdefs"
)

var canary = []byte("canary-Zq8v-9f3e1b7c2d-SECRET")

func init() { DefaultArgon = ArgonParams{Time: 1, Memory: 8 * 1024, Threads: 1} }

func newVault(t *testing.T, home, pod string) *Vault {
	t.Helper()
	v := Open(home, pod, filepath.Join(home, "pods", pod, "vault"))
	if err := v.Unlock(nil); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestRoundTripAndNoPlaintextOnDisk(t *testing.T) {
	home := t.TempDir()
	v := newVault(t, home, "p1")
	if err := v.Set("API_KEY", canary); err != nil {
		t.Fatal(err)
	}
	if err := v.Bind("API_KEY", Binding{Mode: ModeProxy, Hosts: []string{"api.example.com"}, Header: "Authorization: Bearer {}"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := v.PodCA(); err != nil {
		t.Fatal(err)
	}
	v.Close()
	v = newVault(t, home, "p1")
	got, err := v.Get("API_KEY")
	if err != nil || !bytes.Equal(got, canary) {
		t.Fatalf("Get = %q, %v", got, err)
	}
	es, err := v.List()
	if err != nil || len(es) != 1 || es[0].Binding.Hosts[0] != "api.example.com" || es[0].Created.IsZero() {
		t.Fatalf("List = %+v, %v", es, err)
	}
	// The attacker reads every file under AIRLOCK_HOME looking for the
	// value, in any common encoding.
	needles := [][]byte{canary, []byte(strings.ToUpper(string(canary)))}
	filepath.Walk(home, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() {
			return err
		}
		b, _ := os.ReadFile(p)
		for _, n := range needles {
			if bytes.Contains(b, n) || bytes.Contains(b, []byte(strings.TrimRight(b64(n), "="))) {
				t.Errorf("plaintext secret found in %s", p)
			}
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s is mode %v, want 0600", p, fi.Mode().Perm())
		}
		return nil
	})
}

func TestTamperedCiphertextRejected(t *testing.T) {
	home := t.TempDir()
	v := newVault(t, home, "p1")
	if err := v.Set("K", canary); err != nil {
		t.Fatal(err)
	}
	path := v.recordPath("K")
	b, _ := os.ReadFile(path)
	rec, _ := v.readRecord("K")
	rec.Sealed[3] ^= 1
	writeRecord(t, v, rec)
	_, err := v.Get("K")
	assertCleanErr(t, err, "does not open")
	os.WriteFile(path, b, 0o600)
	// Rebinding the stored record to another host without the key.
	rec, _ = v.readRecord("K")
	rec.Binding = Binding{Mode: ModeProxy, Hosts: []string{"evil.example"}}
	writeRecord(t, v, rec)
	_, err = v.Get("K")
	assertCleanErr(t, err, "does not open")
}

func TestSwappedCiphertextRejected(t *testing.T) {
	home := t.TempDir()
	a := newVault(t, home, "pa")
	b := newVault(t, home, "pb")
	a.Set("ONE", canary)
	a.Set("TWO", []byte("other"))
	b.Set("ONE", []byte("b-value"))
	// Between keys of one pod.
	one, _ := a.readRecord("ONE")
	two, _ := a.readRecord("TWO")
	two.Nonce, two.Sealed = one.Nonce, one.Sealed
	writeRecord(t, a, two)
	_, err := a.Get("TWO")
	assertCleanErr(t, err, "does not open")
	// Between pods, even with the data key file copied along.
	src, _ := os.ReadFile(a.recordPath("ONE"))
	os.WriteFile(b.recordPath("ONE"), src, 0o600)
	_, err = b.Get("ONE")
	assertCleanErr(t, err, "does not open")
	kf, _ := os.ReadFile(a.keyPath())
	os.WriteFile(b.keyPath(), kf, 0o600)
	b2 := Open(home, "pb", b.dir)
	assertCleanErr(t, b2.Unlock(nil), "cannot unlock")
}

func TestWrongHostKeyRejected(t *testing.T) {
	home := t.TempDir()
	v := newVault(t, home, "p1")
	v.Set("K", canary)
	os.WriteFile(filepath.Join(home, "vault.key"), bytes.Repeat([]byte{7}, KeySize), 0o600)
	err := Open(home, "p1", v.dir).Unlock(nil)
	assertCleanErr(t, err, "host key")
	if !errors.Is(err, errdefs.ErrPermission) {
		t.Errorf("want ErrPermission, got %v", err)
	}
}

func TestHostKeyPermissionsAndSymlink(t *testing.T) {
	home := t.TempDir()
	if _, err := HostKey(home, true); err != nil {
		t.Fatal(err)
	}
	kp := filepath.Join(home, "vault.key")
	os.Chmod(kp, 0o640)
	if _, err := HostKey(home, false); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("group-readable key accepted: %v", err)
	}
	os.Chmod(kp, 0o600)
	os.Rename(kp, kp+".real")
	os.Symlink(kp+".real", kp)
	if _, err := HostKey(home, false); err == nil || !strings.Contains(err.Error(), "symlink") {
		t.Fatalf("symlinked key accepted: %v", err)
	}
}

func TestPassphraseMode(t *testing.T) {
	home := t.TempDir()
	dir := filepath.Join(home, "v")
	v := Open(home, "p1", dir)
	if err := v.Init([]byte("correct horse")); err != nil {
		t.Fatal(err)
	}
	v.Set("K", canary)
	v.Close()
	if _, err := os.Stat(filepath.Join(home, "vault.key")); err == nil {
		t.Error("passphrase mode created a host key")
	}
	if k, _ := Open(home, "p1", dir).KDF(); k != KDFArgon2id {
		t.Errorf("KDF = %q", k)
	}
	assertCleanErr(t, Open(home, "p1", dir).Unlock(nil), "passphrase")
	assertCleanErr(t, Open(home, "p1", dir).Unlock([]byte("wrong")), "wrong passphrase")
	v = Open(home, "p1", dir)
	if err := v.Unlock([]byte("correct horse")); err != nil {
		t.Fatal(err)
	}
	if got, err := v.Get("K"); err != nil || !bytes.Equal(got, canary) {
		t.Fatalf("Get = %q, %v", got, err)
	}
}

func TestCAStableAndSealed(t *testing.T) {
	home := t.TempDir()
	v := newVault(t, home, "p1")
	c1, k1, err := v.PodCA()
	if err != nil {
		t.Fatal(err)
	}
	c2, k2, err := v.PodCA()
	if err != nil || !c1.Equal(c2) || !k1.Equal(k2) || !c1.IsCA || c1.MaxPathLen != 0 {
		t.Fatalf("CA not stable or not a leaf-only CA: %v", err)
	}
	b, _ := os.ReadFile(v.caPath())
	if bytes.Contains(b, k1.D.Bytes()) {
		t.Error("CA private key stored in the clear")
	}
}

func TestNamesAndBindingsValidated(t *testing.T) {
	v := newVault(t, t.TempDir(), "p1")
	for _, n := range []string{"../x", "a/b", "", "1X", "A B", strings.Repeat("A", 129), strings.Repeat("A", 200)} {
		if v.Set(n, canary) == nil {
			t.Errorf("name %q accepted", n)
		}
	}
	v.Set("K", canary)
	proxy := func(h ...string) Binding { return Binding{Mode: ModeProxy, Hosts: h} }
	bad := []Binding{{Mode: ModeProxy}, {Mode: "x", Hosts: []string{"a.b"}},
		{Mode: ModeProxy, Hosts: []string{"a.b"}, Header: "NoBraces: x"},
		{Mode: ModeProxy, Hosts: []string{"a.b"}, Header: "Host: {}"},
		{Mode: ModeProxy, Hosts: []string{"a.b"}, Header: "Content-Length: {}"},
		{Mode: ModeProxy, Hosts: []string{"a.b"}, Header: "Bad Name: {}"},
		{Mode: ModeEnv, Hosts: []string{"a.b"}}, {Hosts: []string{"a.b"}},
		proxy("a.b/c"), proxy("a,b"), proxy("*.a.b"), proxy("a.b:443"), proxy("A.b"), proxy("1.2.3.4"),
		proxy("::1"), proxy("-a.b"), proxy("a..b"), proxy(""), proxy("a.b", "a.b"), proxy(strings.Repeat("a", 64) + ".b")}
	for _, b := range bad {
		if v.Bind("K", b) == nil {
			t.Errorf("binding %+v accepted", b)
		}
	}
	for _, b := range []Binding{proxy("api.example.com", "localhost"), proxy(strings.Repeat("a", 63) + ".b"), {Mode: ModeEnv}, {}} {
		if err := v.Bind("K", b); err != nil {
			t.Errorf("binding %+v refused: %v", b, err)
		}
	}
}

func TestParseEnvFile(t *testing.T) {
	kv, err := ParseEnvFile([]byte("# c\nexport A=1 # one\nB=\"two # words\"\nC='x=y'\n\n"))
	if err != nil || len(kv) != 3 || string(kv[0].Value) != "1" || string(kv[1].Value) != "two # words" || string(kv[2].Value) != "x=y" {
		t.Fatalf("%+v %v", kv, err)
	}
	_, err = ParseEnvFile([]byte("NOPE " + string(canary) + "\n"))
	if err == nil || strings.Contains(err.Error(), string(canary)) {
		t.Fatalf("bad line: %v", err)
	}
}

func writeRecord(t *testing.T, v *Vault, rec *record) {
	t.Helper()
	b, _ := jsonMarshal(rec)
	if err := os.WriteFile(v.recordPath(rec.Name), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func assertCleanErr(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %q", want)
	}
	msg := err.Error()
	if !strings.Contains(msg, want) || strings.Contains(msg, "\n") || strings.Contains(msg, string(canary)) {
		t.Fatalf("error %q: want one line containing %q and no secret", msg, want)
	}
}

// Two processes creating the same vault at once: one key wins, the other
// is told, and nothing sealed under the winner is lost.
func TestInitRaceKeepsOneKey(t *testing.T) {
	home := t.TempDir()
	dir := filepath.Join(home, "v")
	errs := make(chan error, 8)
	for range 8 {
		go func() { errs <- Open(home, "p1", dir).Init(nil) }()
	}
	ok := 0
	for range 8 {
		err := <-errs
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, errdefs.ErrConflict):
			t.Errorf("racing Init: %v", err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d racing Inits succeeded, want 1", ok)
	}
	v := Open(home, "p1", dir)
	if err := v.Unlock(nil); err != nil {
		t.Fatal(err)
	}
	if err := v.Set("K", canary); err != nil {
		t.Fatal(err)
	}
	v2 := Open(home, "p1", dir)
	if err := v2.Unlock(nil); err != nil {
		t.Fatal(err)
	}
	if got, err := v2.Get("K"); err != nil || !bytes.Equal(got, canary) {
		t.Fatalf("after the race: Get = %q, %v", got, err)
	}
}

// A process holding unlocked secrets leaves no core file and cannot be
// read through ptrace or /proc/PID/mem by the user's other processes.
func TestUnlockMakesProcessUndumpable(t *testing.T) {
	newVault(t, t.TempDir(), "p1")
	d, err := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0)
	var rl unix.Rlimit
	_ = unix.Getrlimit(unix.RLIMIT_CORE, &rl)
	if err != nil || d != 0 || rl.Cur != 0 {
		t.Fatalf("dumpable=%d (%v), RLIMIT_CORE=%d after Unlock", d, err, rl.Cur)
	}
}
