package audit

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// VerifyError names the first line of a trail that is not intact.
type VerifyError struct {
	Line   int // 1-based; one past the end when lines were cut off
	Reason string
}

func (e *VerifyError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Reason) }

// Verify checks the whole trail at path against key and its head record.
// n is the number of lines that are intact before the first bad one; err
// is a *VerifyError for tampering, another error when the file cannot be
// read. A trail that does not exist yet (no file, no head) is intact.
func Verify(path string, key []byte) (n int, err error) {
	headSeq, headHash, herr := readHead(path, key)
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		if errors.Is(herr, os.ErrNotExist) {
			return 0, nil
		}
		return 0, &VerifyError{1, "the trail is missing but its head record exists (file deleted)"}
	}
	if err != nil {
		return 0, fmt.Errorf("verifying audit trail: %w", err)
	}
	defer f.Close()
	v := verifier{key: key, prev: genesis(path), headSeq: headSeq, headHash: headHash}
	if err := v.lines(bufio.NewReaderSize(f, 64<<10)); err != nil {
		return v.n, err
	}
	return v.n, v.end(herr)
}

type verifier struct {
	key      []byte
	n        int // intact lines so far
	prev     string
	headSeq  uint64
	headHash string
	sawHead  bool
}

func (v *verifier) lines(r *bufio.Reader) error {
	for {
		line, err := r.ReadBytes('\n')
		if len(line) == 0 && err == io.EOF {
			return nil
		}
		if err != nil && err != io.EOF {
			return fmt.Errorf("verifying audit trail: %w", err)
		}
		if err == io.EOF {
			return &VerifyError{v.n + 1, "truncated in the middle of the line"}
		}
		if err := v.line(bytes.TrimSuffix(line, []byte("\n"))); err != nil {
			return err
		}
	}
}

func (v *verifier) line(line []byte) error {
	no := v.n + 1
	b, hash, ok := split(line)
	var rec struct {
		Seq  uint64 `json:"seq"`
		Prev string `json:"prev"`
	}
	if !ok || json.Unmarshal(b, &rec) != nil {
		return &VerifyError{no, "not an audit record (damaged or inserted)"}
	}
	if !hmac.Equal([]byte(hash), []byte(mac(v.key, rec.Prev, b))) {
		return &VerifyError{no, "hash mismatch (edited, forged, or written with another key)"}
	}
	if rec.Seq != uint64(no) {
		return &VerifyError{no, fmt.Sprintf("sequence %d follows %d (removed or reordered)", rec.Seq, no-1)}
	}
	if rec.Prev != v.prev {
		return &VerifyError{no, "does not chain to the line before it (removed, reordered or replaced)"}
	}
	if rec.Seq == v.headSeq {
		if hash != v.headHash {
			return &VerifyError{no, "differs from the line the head record names (trail rewritten)"}
		}
		v.sawHead = true
	}
	v.prev, v.n = hash, no
	return nil
}

// end checks the head record against where the file ended. The head may
// lag the file by lines whose head update a crash cut off; it may never
// be ahead of it.
func (v *verifier) end(herr error) error {
	switch {
	case errors.Is(herr, os.ErrNotExist) && v.n == 0:
		return nil
	case errors.Is(herr, os.ErrNotExist):
		return &VerifyError{v.n + 1, "the head record is missing (audit.head deleted)"}
	case herr != nil:
		return &VerifyError{v.n + 1, herr.Error()}
	case v.headSeq > uint64(v.n):
		return &VerifyError{v.n + 1, fmt.Sprintf("file ends at line %d but the head records %d lines (lines removed)", v.n, v.headSeq)}
	case !v.sawHead && v.headSeq > 0:
		return &VerifyError{int(v.headSeq), "differs from the line the head record names (trail rewritten)"}
	}
	return nil
}

// Filter selects events for Read. Zero fields select everything.
type Filter struct {
	Since  time.Time // events at or after this time
	Action string    // exact action, or a prefix ending in "." ("net.")
}

func (f Filter) match(e *Event) bool {
	if !f.Since.IsZero() && e.Time.Before(f.Since) {
		return false
	}
	if f.Action == "" || e.Action == f.Action {
		return true
	}
	return f.Action[len(f.Action)-1] == '.' && len(e.Action) > len(f.Action) && e.Action[:len(f.Action)] == f.Action
}

// Read returns the trail's events that match f, in order. It does not
// verify the chain (Verify does); damaged lines are skipped. A missing
// trail has no events.
func Read(path string, f Filter) ([]Event, error) {
	file, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading audit trail: %w", err)
	}
	defer file.Close()
	var out []Event
	r := bufio.NewReaderSize(file, 64<<10)
	for {
		line, err := r.ReadBytes('\n')
		if len(line) > 0 && line[len(line)-1] == '\n' {
			var e Event
			d := json.NewDecoder(bytes.NewReader(line))
			d.UseNumber() // keep large integers exact
			if d.Decode(&e) == nil && f.match(&e) {
				out = append(out, e)
			}
		}
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, fmt.Errorf("reading audit trail: %w", err)
		}
	}
}
