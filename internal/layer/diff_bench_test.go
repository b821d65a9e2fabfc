package layer

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// benchTreeVersion keys the cached 1M-file tree: bump it when the shape
// of the tree changes so an old cache is not reused.
const benchTreeVersion = "v1"

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

// buildBenchTree writes n small files, 1,000 per directory.
func buildBenchTree(b *testing.B, root string, n int) {
	for i := range n {
		if i%1000 == 0 {
			if err := os.MkdirAll(filepath.Join(root, fmt.Sprintf("d%04d", i/1000)), 0o755); err != nil {
				b.Fatal(err)
			}
		}
		writeBenchFile(b, filepath.Join(root, fmt.Sprintf("d%04d/f%04d", i/1000, i%1000)), "x\n")
	}
}

func writeBenchFile(b *testing.B, path, data string) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		b.Fatal(err)
	}
}
