package vault

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/sys/unix"

	"github.com/airlock-dev/airlock/internal/atomicfile"
	"github.com/airlock-dev/airlock/internal/errdefs"
)

// KeySize is the size of the host key and of every data key.
const KeySize = chacha20poly1305.KeySize

// Key-wrapping methods recorded in key.json.
const (
	KDFHost     = "host"     // data key sealed under $AIRLOCK_HOME/vault.key
	KDFArgon2id = "argon2id" // data key sealed under argon2id(passphrase)
)

// ArgonParams are the argon2id costs used for new passphrase vaults.
// They are stored with the vault, so changing them never locks one out.
type ArgonParams struct {
	Time    uint32 `json:"time"`
	Memory  uint32 `json:"memory_kib"`
	Threads uint8  `json:"threads"`
}

// DefaultArgon follows RFC 9106's second recommendation (64 MiB, t=3).
var DefaultArgon = ArgonParams{Time: 3, Memory: 64 * 1024, Threads: 4}

// keyFile is key.json.
type keyFile struct {
	Version int          `json:"v"`
	KDF     string       `json:"kdf"`
	Salt    []byte       `json:"salt,omitempty"`
	Argon   *ArgonParams `json:"argon2id,omitempty"`
	Nonce   []byte       `json:"nonce"`
	Wrapped []byte       `json:"wrapped"`
}

func (v *Vault) keyPath() string { return filepath.Join(v.dir, "key.json") }

func (v *Vault) wrapAD() []byte { return []byte("airlock-vault-datakey-v1\x00" + v.pod) }

// KDF reports how the vault's data key is protected, or "" when the vault
// has none yet.
func (v *Vault) KDF() (string, error) {
	kf, err := v.readKeyFile()
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return kf.KDF, nil
}

// Init creates the vault's data key: protected by the passphrase when one
// is given, else by the host key. It refuses to replace an existing key.
func (v *Vault) Init(passphrase []byte) error {
	if _, err := os.Lstat(v.keyPath()); err == nil {
		return errdefs.Conflict("the vault of pod %s already has a key; remove the pod's vault to start over", v.pod)
	}
	protectProcess()
	dk := make([]byte, KeySize)
	if _, err := rand.Read(dk); err != nil {
		return err
	}
	kf := keyFile{Version: 1, KDF: KDFHost}
	var kek []byte
	var err error
	if passphrase != nil {
		if len(passphrase) == 0 {
			return errdefs.Invalid("empty vault passphrase")
		}
		kf.KDF, kf.Argon, kf.Salt = KDFArgon2id, &ArgonParams{}, make([]byte, 16)
		*kf.Argon = DefaultArgon
		if _, err := rand.Read(kf.Salt); err != nil {
			return err
		}
		kek = deriveKey(passphrase, kf.Salt, *kf.Argon)
	} else if kek, err = HostKey(v.home, true); err != nil {
		return err
	}
	defer clear(kek)
	if kf.Nonce, kf.Wrapped, err = sealBytes(kek, dk, v.wrapAD()); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(kf, "", "  ")
	if err := os.MkdirAll(v.dir, 0o700); err != nil {
		return fmt.Errorf("creating the vault of pod %s: %w", v.pod, err)
	}
	if err := atomicfile.Create(v.keyPath(), b); err != nil {
		clear(dk)
		if errors.Is(err, os.ErrExist) {
			return errdefs.Conflict("the vault of pod %s was given a key by another process meanwhile; run the command again", v.pod)
		}
		return err
	}
	v.dataKey = dk
	return nil
}

// Unlock loads the data key. A vault without a key is initialised with
// the host key when passphrase is nil.
func (v *Vault) Unlock(passphrase []byte) error {
	kf, err := v.readKeyFile()
	if errors.Is(err, os.ErrNotExist) {
		return v.Init(passphrase)
	}
	if err != nil {
		return err
	}
	protectProcess()
	var kek []byte
	switch kf.KDF {
	case KDFHost:
		if kek, err = HostKey(v.home, false); err != nil {
			return err
		}
	case KDFArgon2id:
		if passphrase == nil {
			return errdefs.Invalid("the vault of pod %s is protected by a passphrase: set AIRLOCK_VAULT_PASSPHRASE or pass --passphrase-stdin", v.pod)
		}
		if kf.Argon == nil || kf.Argon.Time == 0 || kf.Argon.Memory == 0 || kf.Argon.Threads == 0 || len(kf.Salt) < 16 {
			return fmt.Errorf("vault key of pod %s is damaged (bad argon2id parameters)", v.pod)
		}
		kek = deriveKey(passphrase, kf.Salt, *kf.Argon)
	default:
		return fmt.Errorf("vault key of pod %s uses unknown protection %q; upgrade airlock", v.pod, kf.KDF)
	}
	defer clear(kek)
	dk, err := openBytes(kek, kf.Nonce, kf.Wrapped, v.wrapAD())
	if err != nil {
		if kf.KDF == KDFArgon2id {
			return fmt.Errorf("cannot unlock the vault of pod %s: wrong passphrase or damaged key file: %w", v.pod, errdefs.ErrPermission)
		}
		return fmt.Errorf("cannot unlock the vault of pod %s: the host key %s is not the one it was sealed with, or its key file was altered: %w", v.pod, hostKeyPath(v.home), errdefs.ErrPermission)
	}
	v.dataKey = dk
	return nil
}

func (v *Vault) readKeyFile() (*keyFile, error) {
	b, err := readFileNoFollow(v.keyPath())
	if err != nil {
		return nil, err
	}
	var kf keyFile
	if err := json.Unmarshal(b, &kf); err != nil || kf.Version != 1 {
		return nil, fmt.Errorf("vault key of pod %s is damaged (unreadable %s)", v.pod, v.keyPath())
	}
	return &kf, nil
}

func deriveKey(passphrase, salt []byte, p ArgonParams) []byte {
	return argon2.IDKey(passphrase, salt, p.Time, p.Memory, p.Threads, KeySize)
}

func hostKeyPath(home string) string { return filepath.Join(home, "vault.key") }

// HostKey reads $AIRLOCK_HOME/vault.key, creating it when create is set
// and it does not exist. It refuses a symlink, a non-regular file, or a
// key that its group or others could read.
func HostKey(home string, create bool) ([]byte, error) {
	path := hostKeyPath(home)
	key, err := readHostKey(path)
	if errors.Is(err, os.ErrNotExist) && create {
		if err := createHostKey(home, path); err != nil {
			return nil, err
		}
		return readHostKey(path)
	}
	if errors.Is(err, os.ErrNotExist) {
		return nil, errdefs.NotFound("host vault key %s is missing: restore it from a backup (without it the vaults sealed under it cannot be opened)", path)
	}
	return key, err
}

func readHostKey(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ELOOP) {
		return nil, fmt.Errorf("host vault key %s is a symlink; refusing it (replace it with the real 0600 file): %w", path, errdefs.ErrPermission)
	}
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("reading the host vault key: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading the host vault key: %w", err)
	}
	if !st.Mode().IsRegular() || st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("host vault key %s must be a regular file readable only by its owner (chmod 600 %s): %w", path, path, errdefs.ErrPermission)
	}
	key := make([]byte, KeySize+1)
	n, err := io.ReadFull(f, key)
	if n != KeySize || !errors.Is(err, io.ErrUnexpectedEOF) {
		clear(key)
		return nil, fmt.Errorf("host vault key %s is damaged (%d bytes, want %d); restore it from a backup", path, n, KeySize)
	}
	return key[:KeySize], nil
}

func createHostKey(home, path string) error {
	if err := os.MkdirAll(home, 0o700); err != nil {
		return fmt.Errorf("creating the host vault key in %s: %w", home, err)
	}
	key := make([]byte, KeySize)
	defer clear(key)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	err := atomicfile.Create(path, key)
	if errors.Is(err, os.ErrExist) {
		return nil // another process made it first; use theirs
	}
	return err
}
