package pod

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// RunState is what the last run of a pod did (run/last.json). Only the
// supervisor that holds the run lock writes it, so it needs no pod lock.
// It is neither synced nor replaced by rename: losing it to a power cut
// loses a line of `airlock status`, and the durable account of every run
// is the audit trail's run.start and run.exit. A synced replace cost four
// fsyncs per run, two of them before the agent could start; even an
// unsynced rename over the old file makes ext4 write the new one out at
// once (auto_da_alloc). So the record is overwritten in place, padded to
// a fixed size so that the file never shrinks, and a reader that catches
// a write half done sees bad JSON, which reads as "no record".
type RunState struct {
	Started time.Time `json:"started"`
	// Exit is the command's status; nil while the run is on, or when its
	// supervisor died before it could record one.
	Exit  *int              `json:"exit,omitempty"`
	Walls map[string]string `json:"walls,omitempty"` // wall -> status
	// Serve marks a started pod (airlock start), which runs each airlock
	// run sent to it rather than one command.
	Serve bool `json:"serve,omitempty"`
}

// LastRun returns what the last run recorded; ok is false when the pod
// never ran, or the record is missing or damaged.
func (p *Pod) LastRun() (rs RunState, ok bool) {
	data, err := os.ReadFile(p.runStatePath())
	if err != nil || json.Unmarshal(data, &rs) != nil || rs.Started.IsZero() {
		return RunState{}, false
	}
	return rs, true
}

// runStateSize is what a record is padded to; one page, written once.
const runStateSize = 1024

// SaveRun records rs as the last run. The caller holds the run lock
// (AcquireRun), so no two writers meet.
func (p *Pod) SaveRun(rs RunState) error {
	data, err := json.Marshal(rs)
	if err != nil {
		return fmt.Errorf("encoding run state of pod %s: %w", p.Name, err)
	}
	data = append(data, '\n')
	if pad := runStateSize - len(data); pad > 0 {
		data = append(data, bytes.Repeat([]byte(" "), pad)...)
	}
	f, err := os.OpenFile(p.runStatePath(), os.O_WRONLY|os.O_CREATE|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("recording the run of pod %s: %w", p.Name, err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data, 0); err != nil {
		return fmt.Errorf("recording the run of pod %s: %w", p.Name, err)
	}
	// A record longer than the pad (walls with long reasons) may have
	// been written before; cut what is left of it.
	if st, err := f.Stat(); err == nil && st.Size() > int64(len(data)) {
		return f.Truncate(int64(len(data)))
	}
	return nil
}
