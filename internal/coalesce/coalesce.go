// Package coalesce turns a flood of identical records into a few. The
// first record of a key is written at once; its repeats are counted, and
// the count is written once a period and at Close. A key quiet for a
// whole period is forgotten, so its next record is again written at once.
// The supervisor's seccomp notify server and the network wall's drop log
// use it, so that a pod looping over a refused call fills neither the
// trail nor the supervisor's memory.
//
// Invariants:
//   - Nothing counted is lost: Close writes what is still counted, and
//     Flush returns only once every repeat counted before it is written
//     (flushes are serialized, so a flush of the ticker that is still
//     writing finishes first).
//   - Records are written outside the lock that guards the counts, so a
//     slow writer does not hold up Add; write must be safe to call from
//     Add's goroutine and from the ticker's at once.
//   - Memory is bounded by Limits.Keys (plus the keys Spill makes).
package coalesce

import (
	"sync"
	"time"
)

// Limits bound what a Log holds. A zero field is no bound.
type Limits[K comparable, V any] struct {
	// Keys is how many distinct keys are counted at once.
	Keys int
	// Fresh is how many new keys are written at once per period.
	Fresh int
	// Spill maps a new key past either bound to the key it is counted
	// under instead (such as "many destinations"); that key is taken in
	// past the bounds. Without Spill, such a record is written at once
	// and not counted.
	Spill func(K, V) (K, V)
}

// Log coalesces records of type V by key K. It is safe for concurrent use.
type Log[K comparable, V any] struct {
	write func(v V, n int)
	lim   Limits[K, V]

	mu      sync.Mutex
	pending map[K]*entry[V]
	fresh   int // new keys written at once this period

	flushMu   sync.Mutex
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

type entry[V any] struct {
	v V // the key's first record
	n int
}

// New starts a Log that flushes every period. write writes one record:
// n is 0 for a record written as it comes, else the count of the repeats
// since the key's last record (the first record's value stands for them).
func New[K comparable, V any](every time.Duration, lim Limits[K, V], write func(v V, n int)) *Log[K, V] {
	l := &Log[K, V]{write: write, lim: lim, pending: map[K]*entry[V]{},
		stop: make(chan struct{}), done: make(chan struct{})}
	go l.tick(every)
	return l
}

func (l *Log[K, V]) tick(every time.Duration) {
	defer close(l.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			l.Flush()
			return
		case <-t.C:
			l.Flush()
		}
	}
}

// Add writes v at once if k is new, and counts it otherwise.
func (l *Log[K, V]) Add(k K, v V) {
	l.mu.Lock()
	e, seen := l.pending[k]
	if !seen && l.full() {
		if l.lim.Spill == nil {
			l.mu.Unlock()
			l.write(v, 0)
			return
		}
		k, v = l.lim.Spill(k, v)
		e, seen = l.pending[k]
	}
	if seen {
		e.n++
		l.mu.Unlock()
		return
	}
	l.pending[k] = &entry[V]{v: v}
	l.fresh++
	l.mu.Unlock()
	l.write(v, 0)
}

func (l *Log[K, V]) full() bool {
	return l.lim.Keys > 0 && len(l.pending) >= l.lim.Keys ||
		l.lim.Fresh > 0 && l.fresh >= l.lim.Fresh
}

// Count counts v under k without writing anything at once: what it
// counts is written at the next flush. It is for records that are sums
// to begin with (messages the kernel lost), and ignores the Limits.
func (l *Log[K, V]) Count(k K, v V) {
	l.mu.Lock()
	if e, ok := l.pending[k]; ok {
		e.n++
	} else {
		l.pending[k] = &entry[V]{v: v, n: 1}
	}
	l.mu.Unlock()
}

// Flush writes the counts of the period and forgets the keys that were
// quiet through it.
func (l *Log[K, V]) Flush() {
	l.flushMu.Lock()
	defer l.flushMu.Unlock()
	l.mu.Lock()
	type count struct {
		v V
		n int
	}
	var out []count
	for k, e := range l.pending {
		if e.n == 0 {
			delete(l.pending, k)
			continue
		}
		out = append(out, count{e.v, e.n})
		e.n = 0
	}
	l.fresh = 0
	l.mu.Unlock()
	for _, c := range out {
		l.write(c.v, c.n)
	}
}

// Close stops the ticker and writes what is still counted. What is
// counted after Close is written only by a later Flush.
func (l *Log[K, V]) Close() {
	l.closeOnce.Do(func() { close(l.stop) })
	<-l.done
}
