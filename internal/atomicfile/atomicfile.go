// Package atomicfile writes files so that a reader, or the system after a
// crash, sees a file's old content or its new content, never a mix: the
// content goes to a 0600 temp file in the same directory (".<name>.tmp-*"),
// is fsynced, and is then renamed (Write) or hard-linked (Create) into
// place, and the directory is fsynced so that step is durable too. On an
// error the temp file is removed and the target is as it was. Every
// durable file of Airlock (pod state, commit journals, vault records and
// keys, the audit key) is written through here.
package atomicfile

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Write replaces path with what write produces (buffered).
func Write(path string, write func(io.Writer) error) error {
	tmp, err := temp(path, buffered(write))
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("replacing %s: %w", path, err)
	}
	return SyncDir(filepath.Dir(path))
}

// WriteFile replaces path with data.
func WriteFile(path string, data []byte) error {
	return Write(path, bytesOf(data))
}

// Create makes path with data only if nothing is there yet: a racing
// creator, or an existing file, gets os.ErrExist and path keeps what it
// holds. A reader never sees a half-written file.
func Create(path string, data []byte) error {
	tmp, err := temp(path, bytesOf(data))
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, os.ErrExist) {
			return os.ErrExist
		}
		return fmt.Errorf("creating %s: %w", path, err)
	}
	return SyncDir(filepath.Dir(path))
}

// SyncDir makes the entries of dir (a rename, link or removal in it)
// durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}

// buffered runs write through a buffer. Only the streaming writers need
// one: a 256 KiB buffer is a large allocation, page-faulted and zeroed,
// that a small state file would pay for on every save.
func buffered(write func(io.Writer) error) func(io.Writer) error {
	return func(w io.Writer) error {
		bw := bufio.NewWriterSize(w, 256<<10)
		if err := write(bw); err != nil {
			return err
		}
		return bw.Flush()
	}
}

func bytesOf(data []byte) func(io.Writer) error {
	return func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	}
}

// temp writes a synced 0600 temp file next to path and returns its name.
func temp(path string, write func(io.Writer) error) (string, error) {
	dir, base := filepath.Split(path)
	f, err := os.CreateTemp(dir, "."+base+".tmp-*") // mode 0600
	if err != nil {
		return "", fmt.Errorf("writing %s: %w", path, err)
	}
	tmp := f.Name()
	err = write(f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("writing %s: %w", path, err)
	}
	return tmp, nil
}
