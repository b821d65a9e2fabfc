package layer

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/airlock-dev/airlock/internal/testutil"
)

// benchCommitMB is the size committed per iteration: AIRLOCK_BENCH_COMMIT_MB
// (default 64), spread over 10,000 files per GiB in 16 directories.
func benchCommitMB(b *testing.B) (mb, files int) {
	mb = 64
	if v := os.Getenv("AIRLOCK_BENCH_COMMIT_MB"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			b.Fatalf("AIRLOCK_BENCH_COMMIT_MB=%q is not a positive number", v)
		}
		mb = n
	}
	return mb, max(16, 10000*mb/1024)
}

// fillUpper writes the benchmark's files into dir and flushes them, so
// the timed part pays only for its own writes.
func fillUpper(b *testing.B, dir string, mb, files int) {
	size := mb << 20 / files
	buf := make([]byte, size)
	for i := range buf {
		buf[i] = byte(i*7 + i>>9)
	}
	for i := range files {
		p := filepath.Join(dir, fmt.Sprintf("d%02d", i%16), fmt.Sprintf("f%05d", i))
		if i < 16 {
			chk(b, os.MkdirAll(filepath.Dir(p), 0o755))
		}
		buf[0] = byte(i)
		chk(b, os.WriteFile(p, buf, 0o644))
	}
	unix.Sync()
}

// BenchmarkCommit compares Commit with `cp -a` of the same upper tree into
// a fresh directory on the same file system (and `cp -a` followed by
// sync, since Commit ends with a syncfs). "link" is Commit when the layer
// shares the host's file system (files are hard-linked: a pod with
// resources.disk 0); "copy" forces the data copy (copy_file_range here).
// A disk-capped pod's layer is an ext4 image of its own, where the copy
// goes through sendfile from a freshly mounted, cold layer: bench/commit.sh
// measures that end to end.
func BenchmarkCommit(b *testing.B) {
	testutil.RequireRoot(b)
	mb, files := benchCommitMB(b)
	b.Logf("%d MiB in %d files", mb, files)
	for _, mode := range []string{"link", "copy", "cp-a", "cp-a+sync"} {
		b.Run(mode, func(b *testing.B) {
			b.SetBytes(int64(mb) << 20)
			for b.Loop() {
				b.StopTimer()
				dir := b.TempDir()
				root := Root{Name: "workspace", Host: filepath.Join(dir, "host"), Upper: filepath.Join(dir, "upper")}
				chk(b, os.Mkdir(root.Host, 0o755))
				chk(b, os.Mkdir(root.Upper, 0o755))
				fillUpper(b, root.Upper, mb, files)
				cs, err := Diff([]Root{root}, DiffOptions{})
				chk(b, err)
				b.StartTimer()
				switch mode {
				case "link", "copy":
					linkFromLayer = mode == "link"
					_, err = Commit([]Root{root}, cs, filepath.Join(dir, "journal"), nil, CommitOptions{})
					linkFromLayer = true
				default:
					err = exec.Command("cp", "-a", root.Upper+"/.", root.Host).Run()
					if mode == "cp-a+sync" {
						unix.Sync()
					}
				}
				chk(b, err)
			}
		})
	}
}
