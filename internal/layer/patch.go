package layer

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"unicode/utf8"

	"github.com/airlock-dev/airlock/internal/errdefs"
	"golang.org/x/sys/unix"
)

const (
	// maxPatchFile is the largest file WritePatch reads; above it a note
	// replaces the hunks so a huge log or dump cannot stall a review.
	maxPatchFile = 8 << 20
	// binarySniff is how much of a file is searched for a NUL byte.
	binarySniff = 8 << 10
	// patchContext is the number of unchanged lines around each change.
	patchContext = 3
	// maxEditDistance bounds Myers' search (time O(N·D), memory O(D²));
	// beyond it the changed middle is shown as one replace hunk.
	maxEditDistance = 1000
)

// WritePatch writes a git-style unified diff of one change: the host
// version ("a/") against the layer version ("b/"). Added and deleted files
// diff against nothing; symlinks appear as "symlink -> target"; permission
// changes as "old mode"/"new mode" lines. Binary files (a NUL in the first
// 8 KiB, or invalid UTF-8) and files over 8 MiB get a one-line note
// instead of hunks. Paths are escaped with EscapeName, and control
// characters in content lines are escaped so that a file cannot drive the
// reviewer's terminal.
func WritePatch(w io.Writer, roots []Root, c Change) error {
	old, cur, err := loadSides(roots, c)
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(w)
	writePatch(bw, c, old, cur)
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("writing patch of %s: %w", EscapeName(c.Display()), err)
	}
	return nil
}

// patchSide is one version of a path: the host's or the layer's.
type patchSide struct {
	exists   bool
	mode     uint32 // raw st_mode
	size     int64
	data     []byte // file content, or "symlink -> target\n"
	tooLarge bool
}

func (s patchSide) hasContent() bool {
	t := s.mode & unix.S_IFMT
	return s.exists && (t == unix.S_IFREG || t == unix.S_IFLNK)
}

func (s patchSide) binary() bool {
	if !s.hasContent() {
		return false
	}
	return bytes.IndexByte(s.data[:min(len(s.data), binarySniff)], 0) >= 0 || !utf8.Valid(s.data)
}

// loadSides reads the host and layer versions of c.
func loadSides(roots []Root, c Change) (old, cur patchSide, err error) {
	r, err := findRoot(roots, c)
	if err != nil {
		return patchSide{}, patchSide{}, err
	}
	if c.Kind != Added {
		if old, err = readSide(r.Host, c.Path, false); err != nil {
			return patchSide{}, patchSide{}, fmt.Errorf("reading host version of %s: %w", EscapeName(c.Display()), err)
		}
	}
	if c.Kind != Deleted {
		if cur, err = readSide(r.Upper, c.Path, true); err != nil {
			return patchSide{}, patchSide{}, fmt.Errorf("reading layer version of %s: %w", EscapeName(c.Display()), err)
		}
	}
	return old, cur, nil
}

func findRoot(roots []Root, c Change) (Root, error) {
	if c.Path == "" || strings.HasPrefix(c.Path, "/") || c.Path == ".." ||
		strings.HasPrefix(c.Path, "../") || strings.Contains(c.Path, "/../") || strings.HasSuffix(c.Path, "/..") {
		return Root{}, errdefs.Invalid("change path %s is not a clean relative path; run airlock diff again", EscapeName(c.Path))
	}
	for _, r := range roots {
		if r.Name == c.Root {
			return r, nil
		}
	}
	return Root{}, errdefs.NotFound("no root named %s in this pod; run airlock diff again", EscapeName(c.Root))
}

// readSide loads dir/rel through an os.Root, never leaving dir. In the
// layer (upper) a whiteout counts as absent.
func readSide(dir, rel string, upper bool) (patchSide, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return patchSide{}, err
	}
	defer root.Close()
	fi, err := root.Lstat(rel)
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return patchSide{}, nil
	}
	if err != nil {
		return patchSide{}, err
	}
	st, _ := fi.Sys().(*syscall.Stat_t)
	if st == nil {
		return patchSide{}, fmt.Errorf("no stat data for %s", EscapeName(rel))
	}
	s := patchSide{exists: true, mode: st.Mode, size: st.Size}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFCHR:
		s.exists = !(upper && st.Rdev == 0)
	case unix.S_IFLNK:
		target, err := root.Readlink(rel)
		if err != nil {
			return patchSide{}, err
		}
		s.data = []byte("symlink -> " + target + "\n")
	case unix.S_IFREG:
		err = s.readFile(root, rel)
	}
	return s, err
}

func (s *patchSide) readFile(root *os.Root, rel string) error {
	if s.size > maxPatchFile {
		s.tooLarge = true
		return nil
	}
	f, err := root.OpenFile(rel, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	s.data, err = io.ReadAll(io.LimitReader(f, maxPatchFile+1))
	if len(s.data) > maxPatchFile {
		s.tooLarge, s.data = true, nil
	}
	return err
}

// writePatch renders the patch; bw errors surface at Flush.
func writePatch(bw *bufio.Writer, c Change, old, cur patchSide) {
	name := strings.TrimPrefix(c.Display(), "/")
	a, b := "a/"+EscapeName(name), "b/"+EscapeName(name)
	fmt.Fprintf(bw, "diff --git %s %s\n", a, b)
	writeModeLines(bw, old, cur)
	if !old.hasContent() {
		a = "/dev/null"
	}
	if !cur.hasContent() {
		b = "/dev/null"
	}
	switch {
	case !old.hasContent() && !cur.hasContent():
	case old.tooLarge || cur.tooLarge:
		fmt.Fprintf(bw, "File %s is larger than 8 MiB (%d bytes -> %d bytes); not shown\n", b, old.size, cur.size)
	case bytes.Equal(old.data, cur.data) && old.hasContent() == cur.hasContent():
	case old.binary() || cur.binary():
		fmt.Fprintf(bw, "Binary files %s and %s differ\n", a, b)
	case len(old.data) == 0 && len(cur.data) == 0:
		// An empty file created or deleted: git shows only the mode line,
		// and a ---/+++ pair without a hunk is not a valid patch.
	default:
		fmt.Fprintf(bw, "--- %s\n+++ %s\n", a, b)
		writeHunks(bw, splitLines(old.data), splitLines(cur.data))
	}
}

func writeModeLines(bw *bufio.Writer, old, cur patchSide) {
	const bits = unix.S_IFMT | 07777
	switch {
	case !old.exists && cur.exists:
		fmt.Fprintf(bw, "new file mode %06o\n", cur.mode&bits)
	case old.exists && !cur.exists:
		fmt.Fprintf(bw, "deleted file mode %06o\n", old.mode&bits)
	case old.exists && old.mode&bits != cur.mode&bits:
		fmt.Fprintf(bw, "old mode %06o\nnew mode %06o\n", old.mode&bits, cur.mode&bits)
	}
}

// splitLines splits data after each newline; the last line may lack one.
func splitLines(data []byte) []string {
	if len(data) == 0 {
		return nil
	}
	s := string(data)
	lines := make([]string, 0, strings.Count(s, "\n")+1)
	for len(s) > 0 {
		i := strings.IndexByte(s, '\n')
		if i < 0 {
			lines = append(lines, s)
			break
		}
		lines = append(lines, s[:i+1])
		s = s[i+1:]
	}
	return lines
}

// writeHunks writes the @@ hunks turning lines a into lines b.
func writeHunks(bw *bufio.Writer, a, b []string) {
	ops := diffLines(a, b)
	for _, h := range groupHunks(ops, patchContext) {
		h.write(bw, ops, a, b)
	}
}

// patchHunk is a range of ops [start, end) with the line positions at start.
type patchHunk struct {
	start, end   int
	aLine, bLine int // lines of a and b consumed before start
	aLen, bLen   int
}

// groupHunks groups changes separated by at most 2*ctx equal lines.
func groupHunks(ops []editOp, ctx int) []patchHunk {
	var hunks []patchHunk
	ai, bi := 0, 0
	var cur *patchHunk
	lastChange := -1
	for k, op := range ops {
		if op != opEqual {
			if cur == nil || k-lastChange-1 > 2*ctx {
				s := max(k-ctx, 0)
				if cur != nil {
					cur.end = min(lastChange+ctx+1, len(ops))
					s = max(s, cur.end)
				}
				hunks = append(hunks, patchHunk{start: s, aLine: ai - (k - s), bLine: bi - (k - s)})
				cur = &hunks[len(hunks)-1]
			}
			lastChange = k
		}
		switch op {
		case opEqual:
			ai, bi = ai+1, bi+1
		case opDelete:
			ai++
		case opInsert:
			bi++
		}
	}
	if cur != nil {
		cur.end = min(lastChange+ctx+1, len(ops))
	}
	for i := range hunks {
		hunks[i].count(ops)
	}
	return hunks
}

func (h *patchHunk) count(ops []editOp) {
	for _, op := range ops[h.start:h.end] {
		if op != opInsert {
			h.aLen++
		}
		if op != opDelete {
			h.bLen++
		}
	}
}

func (h patchHunk) write(bw *bufio.Writer, ops []editOp, a, b []string) {
	fmt.Fprintf(bw, "@@ -%s +%s @@\n", hunkRange(h.aLine, h.aLen), hunkRange(h.bLine, h.bLen))
	ai, bi := h.aLine, h.bLine
	for _, op := range ops[h.start:h.end] {
		switch op {
		case opEqual:
			writeLine(bw, ' ', a[ai])
			ai, bi = ai+1, bi+1
		case opDelete:
			writeLine(bw, '-', a[ai])
			ai++
		case opInsert:
			writeLine(bw, '+', b[bi])
			bi++
		}
	}
}

// hunkRange formats "start,count" the way git does: an empty range names
// the line before it, and a count of one is left out.
func hunkRange(before, n int) string {
	switch n {
	case 0:
		return fmt.Sprintf("%d,0", before)
	case 1:
		return fmt.Sprintf("%d", before+1)
	default:
		return fmt.Sprintf("%d,%d", before+1, n)
	}
}

func writeLine(bw *bufio.Writer, prefix byte, line string) {
	bw.WriteByte(prefix)
	bw.WriteString(escapeContentLine(line))
	if !strings.HasSuffix(line, "\n") {
		bw.WriteString("\n\\ No newline at end of file\n")
	}
}

// editOp is one step of an edit script over lines.
type editOp uint8

const (
	opEqual  editOp = iota // line kept: advance a and b
	opDelete               // line of a removed: advance a
	opInsert               // line of b added: advance b
)

// diffLines returns an edit script turning a into b: the common prefix
// and suffix are kept, and the middle is diffed with Myers' O(ND)
// algorithm, or replaced wholesale when it is too far apart.
func diffLines(a, b []string) []editOp {
	ia, ib := internLines(a, b)
	pre := 0
	for pre < len(ia) && pre < len(ib) && ia[pre] == ib[pre] {
		pre++
	}
	suf := 0
	for suf < len(ia)-pre && suf < len(ib)-pre && ia[len(ia)-1-suf] == ib[len(ib)-1-suf] {
		suf++
	}
	ops := make([]editOp, 0, len(a)+len(b))
	for range pre {
		ops = append(ops, opEqual)
	}
	mid, ok := myers(ia[pre:len(ia)-suf], ib[pre:len(ib)-suf], maxEditDistance)
	if !ok {
		mid = replaceAll(len(ia)-pre-suf, len(ib)-pre-suf)
	}
	ops = append(ops, mid...)
	for range suf {
		ops = append(ops, opEqual)
	}
	return ops
}

// internLines maps equal lines to equal integers so that the search
// compares ints, not strings.
func internLines(a, b []string) ([]int32, []int32) {
	ids := make(map[string]int32, len(a))
	conv := func(lines []string) []int32 {
		out := make([]int32, len(lines))
		for i, l := range lines {
			id, ok := ids[l]
			if !ok {
				id = int32(len(ids))
				ids[l] = id
			}
			out[i] = id
		}
		return out
	}
	return conv(a), conv(b)
}

func replaceAll(n, m int) []editOp {
	ops := make([]editOp, 0, n+m)
	for range n {
		ops = append(ops, opDelete)
	}
	for range m {
		ops = append(ops, opInsert)
	}
	return ops
}

// myers finds a shortest edit script with at most maxD edits (Myers 1986,
// greedy forward search). v[k] is the furthest x reached on diagonal
// k = x - y; a copy of v's live window is kept per round to walk back.
// It reports false when more than maxD edits are needed.
func myers(a, b []int32, maxD int) ([]editOp, bool) {
	n, m := len(a), len(b)
	limit := min(n+m, maxD)
	off := limit + 1
	v := make([]int32, 2*off+1)
	var trace [][]int32
	for d := 0; d <= limit; d++ {
		// Window k in [-d-1, d+1]: what round d reads.
		trace = append(trace, append([]int32(nil), v[off-d-1:off+d+2]...))
		for k := -d; k <= d; k += 2 {
			var x int
			if k == -d || (k != d && v[off+k-1] < v[off+k+1]) {
				x = int(v[off+k+1])
			} else {
				x = int(v[off+k-1]) + 1
			}
			y := x - k
			for x < n && y < m && a[x] == b[y] {
				x, y = x+1, y+1
			}
			v[off+k] = int32(x)
			if x >= n && y >= m {
				return backtrack(trace, n, m), true
			}
		}
	}
	return nil, false
}

// backtrack rebuilds the edit script from the per-round windows.
func backtrack(trace [][]int32, n, m int) []editOp {
	rev := make([]editOp, 0, n+m)
	x, y := n, m
	for d := len(trace) - 1; d >= 0; d-- {
		w := trace[d]
		at := func(k int) int { return int(w[k+d+1]) }
		k := x - y
		var pk int
		if k == -d || (k != d && at(k-1) < at(k+1)) {
			pk = k + 1
		} else {
			pk = k - 1
		}
		px := at(pk)
		py := px - pk
		for x > px && y > py {
			rev = append(rev, opEqual)
			x, y = x-1, y-1
		}
		if d > 0 {
			if x == px {
				rev = append(rev, opInsert)
			} else {
				rev = append(rev, opDelete)
			}
		}
		x, y = px, py
	}
	for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
		rev[i], rev[j] = rev[j], rev[i]
	}
	return rev
}
