// Package audit is a pod's tamper-evident audit trail: one JSON event per
// line in pods/<name>/audit.jsonl, each chained to the one before it.
//
// Every line carries Hash = HMAC-SHA256(key, Prev || body), where body is
// the line's own JSON without the hash field and Prev is the previous
// line's Hash (derived from Genesis for the first line). The key is a per-installation
// secret ($AIRLOCK_HOME/audit.key) that the pod never sees, so whoever
// edits, removes, reorders or forges a line cannot rebuild the chain.
// Removing the last lines is caught by a head record (audit.head, also
// HMAC'd) that Append rewrites after every line.
//
// Invariants:
//   - Append writes one whole line with one write(2) on an O_APPEND file
//     under an exclusive flock, so goroutines and processes never
//     interleave, and a failed write is truncated away: no partial line.
//   - The line is written before the head, so a crash between the two
//     leaves the head one line behind, which Verify accepts.
//   - Verify hashes the bytes as stored, never a re-encoding of them.
//
// Durability: a line is fsynced (with the head) only when its action is in
// Durable, or on Close. High-volume events (DNS queries, connections) are
// written to the page cache, which survives a crash of Airlock though not
// a power cut; the actions whose loss would hide what changed the host
// are synced at once.
package audit

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path/filepath"
	"time"
)

// Genesis starts every chain. The first line's Prev is Genesis + ":" +
// the name of the directory holding the trail (the pod's name), so one
// pod's intact trail cannot be passed off as another's.
const Genesis = "airlock-audit-v1"

func genesis(path string) string {
	return Genesis + ":" + filepath.Base(filepath.Dir(path))
}

// Event is one line of the trail.
type Event struct {
	Seq     uint64         `json:"seq"`
	Time    time.Time      `json:"time"`
	Pod     string         `json:"pod"`
	Actor   string         `json:"actor"`
	Action  string         `json:"action"`
	Details map[string]any `json:"details,omitempty"`
	Outcome string         `json:"outcome"`
	Prev    string         `json:"prev"`
	Hash    string         `json:"hash"`
}

// body is Event without Hash: the bytes that are hashed. Its field order
// matches Event's, so a line reads naturally with hash last.
type body struct {
	Seq     uint64         `json:"seq"`
	Time    time.Time      `json:"time"`
	Pod     string         `json:"pod"`
	Actor   string         `json:"actor"`
	Action  string         `json:"action"`
	Details map[string]any `json:"details,omitempty"`
	Outcome string         `json:"outcome"`
	Prev    string         `json:"prev"`
}

// Durable lists the actions whose line is fsynced before Append returns:
// those that change the host, the pod's walls or its existence.
var Durable = map[string]bool{
	"pod.create": true, "pod.destroy": true,
	"commit": true, "commit.recover": true, "undo": true, "rollback": true,
	"wall.downgrade": true, "wall.network": true,
	"run.start": true, "run.exit": true, "kill": true, "stop": true,
	// A command run into a started pod is on disk before it starts;
	// its end is synced just after the person is told (Log.Sync).
	"exec.start": true,
	"vault.set":  true, "vault.get": true, "vault.remove": true,
	"queue.approve": true, "queue.deny": true,
	"snapshot.create": true, "snapshot.restore": true, "snapshot.remove": true,
}

// mac returns the hex HMAC of prev || data.
func mac(key []byte, prev string, data []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(prev))
	m.Write(data)
	return hex.EncodeToString(m.Sum(nil))
}

// hashField is what ends every line: `,"hash":"<64 hex>"}`.
const (
	hashPrefix = `,"hash":"`
	hashLen    = 64
	hashSuffix = `"}`
)

// encode renders e (with Prev and Seq set) as a complete line including
// its hash and the trailing newline.
func encode(key []byte, e *Event) ([]byte, error) {
	b, err := json.Marshal(body{e.Seq, e.Time, e.Pod, e.Actor, e.Action, e.Details, e.Outcome, e.Prev})
	if err != nil {
		return nil, fmt.Errorf("encoding audit event %s: %w", e.Action, err)
	}
	e.Hash = mac(key, e.Prev, b)
	line := make([]byte, 0, len(b)+len(hashPrefix)+hashLen+len(hashSuffix)+1)
	line = append(line, b[:len(b)-1]...)
	line = append(line, hashPrefix...)
	line = append(line, e.Hash...)
	line = append(line, hashSuffix...)
	return append(line, '\n'), nil
}

// split takes a stored line (without newline) apart into the hashed body
// and the hash, or reports that it is not shaped like one of our lines.
func split(line []byte) (bodyJSON []byte, hash string, ok bool) {
	n := len(hashPrefix) + hashLen + len(hashSuffix)
	if len(line) < n+2 || string(line[len(line)-len(hashSuffix):]) != hashSuffix {
		return nil, "", false
	}
	start := len(line) - n
	if string(line[start:start+len(hashPrefix)]) != hashPrefix {
		return nil, "", false
	}
	hash = string(line[start+len(hashPrefix) : start+len(hashPrefix)+hashLen])
	b := make([]byte, 0, start+1)
	b = append(b, line[:start]...)
	return append(b, '}'), hash, true
}
