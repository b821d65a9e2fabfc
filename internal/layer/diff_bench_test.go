package layer

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// benchTreeVersion keys the cached 1M-file tree: bump it when the shape
// of the tree changes so an old cache is not reused.
const benchTreeVersion = "v1"

// The Diff benchmarks call Diff, the function `airlock diff` calls, on
// uppers written directly (no overlay, so no whiteouts or opaque
// directories) and already in the page cache. The command adds its own
// start, the pod lock, the layer's mount when the disk wall is up (a cold
// page cache for the layer each time), noise filtering and printing:
// bench/diff.sh measures it end to end.

// BenchmarkDiff10kChanges: 10,000 changed files in an upper of 100
// directories: half modified with the same size (bytes compared), a
// quarter resized, a quarter added. Budget: ≤ 100 ms per Diff.
func BenchmarkDiff10kChanges(b *testing.B) {
	host, up := b.TempDir(), b.TempDir()
	for d := range 100 {
		for f := range 100 {
			name := fmt.Sprintf("dir%03d/file%03d.go", d, f)
			payload := fmt.Sprintf("package p // %s original content, some bytes to compare\n", name)
			switch {
			case f < 50:
				writeBenchFile(b, filepath.Join(host, name), payload)
				writeBenchFile(b, filepath.Join(up, name), payload[:len(payload)-2]+"X\n")
			case f < 75:
				writeBenchFile(b, filepath.Join(host, name), payload)
				writeBenchFile(b, filepath.Join(up, name), payload+"// more\n")
			default:
				writeBenchFile(b, filepath.Join(up, name), payload)
			}
		}
	}
	runDiffBench(b, Root{Name: "workspace", Host: host, Upper: up}, 10000)
}

// BenchmarkDiffNoChanges10k: a 10,000-file host tree and an empty upper.
func BenchmarkDiffNoChanges10k(b *testing.B) {
	host := b.TempDir()
	buildBenchTree(b, host, 10_000)
	runDiffBench(b, Root{Name: "workspace", Host: host, Upper: b.TempDir()}, 0)
}

// BenchmarkDiffNoChanges1M: a 1,000,000-file host tree and an empty
// upper; budget ≤ 10 ms. The tree is built once and cached under
// os.TempDir(); set AIRLOCK_BENCH_LARGE=1 to run it.
func BenchmarkDiffNoChanges1M(b *testing.B) {
	if os.Getenv("AIRLOCK_BENCH_LARGE") != "1" {
		b.Skip("set AIRLOCK_BENCH_LARGE=1 to build (once) and diff a 1,000,000-file tree")
	}
	host := filepath.Join(os.TempDir(), "airlock-bench-1m", benchTreeVersion)
	done := filepath.Join(host, ".complete")
	if _, err := os.Stat(done); err != nil {
		_ = os.RemoveAll(host)
		buildBenchTree(b, host, 1_000_000)
		writeBenchFile(b, done, "")
	}
	runDiffBench(b, Root{Name: "workspace", Host: host, Upper: b.TempDir()}, 0)
}

func runDiffBench(b *testing.B, r Root, want int) {
	b.ResetTimer()
	for b.Loop() {
		got, err := Diff([]Root{r}, DiffOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if n := countFileChanges(got); n != want {
			b.Fatalf("got %d file changes, want %d", n, want)
		}
	}
}

func countFileChanges(cs []Change) int {
	n := 0
	for _, c := range cs {
		if c.Type == "file" {
			n++
		}
	}
	return n
}

// buildBenchTree creates n empty files, 1,000 per directory, with one
// mknodat each and one goroutine per CPU (a 1M-file tree in minutes, not hours).
func buildBenchTree(b *testing.B, root string, n int) {
	dirs := (n + 999) / 1000
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, runtime.GOMAXPROCS(0))
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for d := int(next.Add(1) - 1); d < dirs; d = int(next.Add(1) - 1) {
				if err := buildBenchDir(filepath.Join(root, fmt.Sprintf("d%04d", d)), min(1000, n-d*1000)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
}

func buildBenchDir(dir string, files int) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	for f := range files {
		if err := unix.Mknodat(fd, fmt.Sprintf("f%04d", f), unix.S_IFREG|0o644, 0); err != nil && err != unix.EEXIST {
			return fmt.Errorf("creating %s/f%04d: %w", dir, f, err)
		}
	}
	return nil
}

func writeBenchFile(b *testing.B, path, data string) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		b.Fatal(err)
	}
}
