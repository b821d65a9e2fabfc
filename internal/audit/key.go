package audit

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/airlock-dev/airlock/internal/atomicfile"
)

// KeySize is the length of the installation's audit key.
const KeySize = 32

// KeyFor returns the audit key of the installation at home
// ($AIRLOCK_HOME/audit.key), creating it (32 random bytes, 0600) on first
// use. Concurrent first uses agree on one key: the key file is written in
// full under a temporary name and published with link(2), which never
// replaces an existing key.
func KeyFor(home string) ([]byte, error) {
	path := filepath.Join(home, "audit.key")
	key, err := readKey(path)
	if !errors.Is(err, os.ErrNotExist) {
		return key, err
	}
	if err := os.MkdirAll(home, 0o700); err != nil {
		return nil, fmt.Errorf("creating the audit key in %s: %w", home, err)
	}
	if err := createKey(path); err != nil {
		return nil, err
	}
	return readKey(path)
}

func readKey(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("reading the audit key: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading the audit key: %w", err)
	}
	if !st.Mode().IsRegular() || st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("audit key %s must be a regular file readable only by its owner (chmod 600 %s)", path, path)
	}
	key := make([]byte, KeySize+1)
	n, err := io.ReadFull(f, key)
	if n != KeySize || !errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, fmt.Errorf("audit key %s is damaged (%d bytes, want %d); restore it from a backup, without it no trail can be verified", path, n, KeySize)
	}
	return key[:KeySize], nil
}

func createKey(path string) error {
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("generating the audit key: %w", err)
	}
	if err := atomicfile.Create(path, key); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("creating the audit key: %w", err)
	}
	return nil
}
