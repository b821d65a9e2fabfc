package audit

import (
	"bytes"
	"crypto/hmac"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Log appends to one trail. It is safe for concurrent use, and several
// processes may hold a Log on the same file at once.
type Log struct {
	mu   sync.Mutex
	key  []byte
	path string
	f    *os.File // O_APPEND
	head *os.File
	// What this Log last saw at the end of the file; when the size
	// differs, another process appended and the tail is read again.
	size  int64
	seq   uint64
	hash  string
	dirty bool // lines written since the last fsync
}

// HeadPath returns where the head record of the trail at path lives:
// audit.jsonl -> audit.head.
func HeadPath(path string) string {
	return strings.TrimSuffix(path, ".jsonl") + ".head"
}

// Open opens (creating, 0600) the trail at path for appending.
func Open(path string, key []byte) (*Log, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("opening audit trail %s: key is %d bytes, want %d", path, len(key), KeySize)
	}
	flags := unix.O_NOFOLLOW | unix.O_CLOEXEC | os.O_CREATE
	f, err := os.OpenFile(path, flags|os.O_RDWR|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening audit trail: %w", err)
	}
	h, err := os.OpenFile(HeadPath(path), flags|os.O_RDWR, 0o600)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("opening audit head: %w", err)
	}
	return &Log{key: append([]byte(nil), key...), path: path, f: f, head: h, size: -1}, nil
}

// Append writes e as the next line and returns it with Seq, Time, Prev
// and Hash filled in. On failure nothing of the line remains in the file.
func (l *Log) Append(e Event) (Event, error) {
	unlock, err := l.lockEnd("appending to")
	if err != nil {
		return e, err
	}
	defer unlock()
	e.Seq, e.Prev, e.Time = l.seq+1, l.hash, time.Now().UTC()
	line, err := encode(l.key, &e)
	if err != nil {
		return e, err
	}
	if err := l.write(line); err != nil {
		return e, err
	}
	l.seq, l.hash, l.dirty = e.Seq, e.Hash, true
	if err := l.writeHead(); err != nil {
		return e, err
	}
	if Durable[e.Action] {
		return e, l.flush()
	}
	return e, nil
}

// Prepare reads the end of the trail now, so that the next Append only
// encodes, writes and syncs: a caller that knows it will append soon
// (run, before its durable run.start) does the reading beside other work.
func (l *Log) Prepare() error {
	unlock, err := l.lockEnd("reading")
	if err == nil {
		unlock()
	}
	return err
}

// lockEnd takes the Log's mutex and the file's lock and brings seq and
// hash up to date with the end of the file; unlock releases both.
func (l *Log) lockEnd(doing string) (unlock func(), err error) {
	l.mu.Lock()
	if l.f == nil {
		l.mu.Unlock()
		return nil, fmt.Errorf("%s audit trail %s: log is closed", doing, l.path)
	}
	if err := flock(l.f, unix.LOCK_EX); err != nil {
		l.mu.Unlock()
		return nil, fmt.Errorf("locking audit trail %s: %w", l.path, err)
	}
	unlock = func() { flock(l.f, unix.LOCK_UN); l.mu.Unlock() }
	if err := l.sync(); err != nil {
		unlock()
		return nil, err
	}
	return unlock, nil
}

// write appends line with one write(2); a short or failed write is cut
// off again so that no partial line stays behind.
func (l *Log) write(line []byte) error {
	n, err := l.f.Write(line)
	if err == nil && n == len(line) {
		l.size += int64(n)
		return nil
	}
	if n > 0 {
		_ = l.f.Truncate(l.size)
	}
	if err == nil {
		err = io.ErrShortWrite
	}
	return fmt.Errorf("writing audit trail %s (is the disk full?): %w", l.path, err)
}

// sync brings seq and hash up to date with the end of the file.
func (l *Log) sync() error {
	st, err := l.f.Stat()
	if err != nil {
		return fmt.Errorf("reading audit trail %s: %w", l.path, err)
	}
	if st.Size() == l.size {
		return nil
	}
	l.size = st.Size()
	l.seq, l.hash = 0, genesis(l.path)
	if l.size == 0 {
		return nil
	}
	tail, err := readTail(l.f, l.size)
	if err != nil {
		return fmt.Errorf("reading audit trail %s: %w", l.path, err)
	}
	if !bytes.HasSuffix(tail, []byte("\n")) {
		// A damaged last line: end it, so that ours starts clean and
		// Verify names the damaged one.
		if err := l.write([]byte("\n")); err != nil {
			return err
		}
	}
	if seq, hash, ok := lastRecord(tail); ok {
		l.seq, l.hash = seq, hash
	}
	return nil
}

// readTail returns the end of the file, growing the window until it holds
// at least one whole line (or the whole file).
func readTail(f *os.File, size int64) ([]byte, error) {
	for window := int64(64 << 10); ; window *= 4 {
		off := max(size-window, 0)
		buf := make([]byte, size-off)
		if _, err := f.ReadAt(buf, off); err != nil && err != io.EOF {
			return nil, err
		}
		if off == 0 || bytes.Count(buf, []byte("\n")) >= 2 {
			return buf, nil
		}
	}
}

// lastRecord finds the last well-formed line in tail and returns its seq
// and hash.
func lastRecord(tail []byte) (uint64, string, bool) {
	lines := bytes.Split(bytes.TrimRight(tail, "\n"), []byte("\n"))
	for i := len(lines) - 1; i >= 0; i-- {
		b, hash, ok := split(lines[i])
		if !ok {
			continue
		}
		var rec struct{ Seq uint64 }
		if json.Unmarshal(b, &rec) == nil {
			return rec.Seq, hash, true
		}
	}
	return 0, "", false
}

// The head record is one fixed-length line, rewritten in place:
//
//	airlock-audit-head <seq, 20 digits> <hash> <HMAC of seq and hash>
const headTag = "airlock-audit-head"

func headMAC(key []byte, seq uint64, hash string) string {
	return mac(key, headTag, []byte(strconv.FormatUint(seq, 10)+" "+hash))
}

func (l *Log) writeHead() error {
	rec := fmt.Sprintf("%s %020d %s %s\n", headTag, l.seq, l.hash, headMAC(l.key, l.seq, l.hash))
	if _, err := l.head.WriteAt([]byte(rec), 0); err != nil {
		return fmt.Errorf("writing audit head of %s: %w", l.path, err)
	}
	return nil
}

// readHead parses and authenticates a head record.
func readHead(path string, key []byte) (seq uint64, hash string, err error) {
	data, err := os.ReadFile(HeadPath(path))
	if err != nil {
		return 0, "", err
	}
	f := strings.Fields(string(data))
	if len(f) != 4 || f[0] != headTag {
		return 0, "", errors.New("head record is damaged")
	}
	seq, err = strconv.ParseUint(f[1], 10, 64)
	if err != nil || !hmac.Equal([]byte(f[3]), []byte(headMAC(key, seq, f[2]))) {
		return 0, "", errors.New("head record is forged or damaged")
	}
	return seq, f[2], nil
}

// flush fsyncs the trail and its head.
func (l *Log) flush() error {
	if !l.dirty {
		return nil
	}
	// The two files are independent; their fsyncs run at once, so a
	// durable line costs one disk round trip instead of two.
	headErr := make(chan error, 1)
	go func() { headErr <- l.head.Sync() }()
	err := l.f.Sync()
	herr := <-headErr
	if err != nil {
		return fmt.Errorf("syncing audit trail %s: %w", l.path, err)
	}
	if herr != nil {
		return fmt.Errorf("syncing audit head of %s: %w", l.path, herr)
	}
	l.dirty = false
	return nil
}

// Sync makes every line appended so far durable.
func (l *Log) Sync() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	return l.flush()
}

// Close syncs what was appended and closes the files.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.flush()
	l.f.Close()
	l.head.Close()
	l.f, l.head = nil, nil
	return err
}

func flock(f *os.File, how int) error {
	for {
		err := unix.Flock(int(f.Fd()), how)
		if err != unix.EINTR {
			return err
		}
	}
}
