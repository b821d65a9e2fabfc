package coalesce

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// rec is one written record.
type rec struct {
	v string
	n int
}

type sink struct {
	mu   sync.Mutex
	recs []rec
}

func (s *sink) write(v string, n int) {
	s.mu.Lock()
	s.recs = append(s.recs, rec{v, n})
	s.mu.Unlock()
}

func (s *sink) take() []rec {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.recs
	s.recs = nil
	return r
}

// sum adds up what was written for v: a first record stands for one.
func sum(recs []rec, v string) int {
	total := 0
	for _, r := range recs {
		if r.v == v {
			total += max(r.n, 1)
		}
	}
	return total
}

func TestFirstAtOnceRepeatsCounted(t *testing.T) {
	var s sink
	l := New(time.Hour, Limits[string, string]{}, s.write)
	defer l.Close()
	l.Add("a", "a1")
	if got := s.take(); len(got) != 1 || got[0] != (rec{"a1", 0}) {
		t.Fatalf("first record: %v, want it written at once", got)
	}
	for i := range 9 {
		l.Add("a", fmt.Sprint("a", i+2))
	}
	if got := s.take(); len(got) != 0 {
		t.Fatalf("repeats written before a flush: %v", got)
	}
	l.Flush()
	// The count is written with the first record's value.
	if got := s.take(); len(got) != 1 || got[0] != (rec{"a1", 9}) {
		t.Fatalf("flush: %v, want a1 counted 9", got)
	}
	// Still known for one quiet period, then forgotten: written at once again.
	l.Add("a", "again")
	l.Flush()
	if got := s.take(); len(got) != 1 || got[0] != (rec{"a1", 1}) {
		t.Fatalf("second period: %v", got)
	}
	l.Flush()
	l.Add("a", "new")
	if got := s.take(); len(got) != 1 || got[0] != (rec{"new", 0}) {
		t.Fatalf("after a quiet period: %v, want the record written at once", got)
	}
}

func TestFlushedOnTick(t *testing.T) {
	var s sink
	l := New(20*time.Millisecond, Limits[string, string]{}, s.write)
	defer l.Close()
	for range 3 {
		l.Add("a", "a")
	}
	deadline := time.Now().Add(5 * time.Second)
	var got []rec
	for sum(got, "a") < 3 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
		got = append(got, s.take()...)
	}
	counted := false
	for _, r := range got {
		counted = counted || r.n > 0
	}
	if sum(got, "a") != 3 || !counted {
		t.Fatalf("records %v, want the repeats flushed by the ticker", got)
	}
}

func TestCloseLosesNothing(t *testing.T) {
	var s sink
	l := New(time.Hour, Limits[string, string]{}, s.write)
	for i := range 100 {
		l.Add(fmt.Sprint(i%3), fmt.Sprint(i%3))
	}
	l.Count("lost", "lost")
	l.Count("lost", "lost")
	l.Close()
	l.Close() // a second Close is harmless
	got := s.take()
	for v, want := range map[string]int{"0": 34, "1": 33, "2": 33, "lost": 2} {
		if n := sum(got, v); n != want {
			t.Errorf("%s: %d written, want %d: %v", v, n, want, got)
		}
	}
	if len(got) != 7 {
		t.Errorf("%d records, want 3 first, 3 counts and 1 of the lost: %v", len(got), got)
	}
}

// Past Keys without Spill, records are written as they come; with Spill,
// past Fresh they are counted under the spilled key, which is written
// at once the first time.
func TestLimits(t *testing.T) {
	var s sink
	l := New(time.Hour, Limits[string, string]{Keys: 2}, s.write)
	for i := range 5 {
		l.Add(fmt.Sprint(i), fmt.Sprint(i))
	}
	l.Close()
	if got := s.take(); len(got) != 5 {
		t.Errorf("past Keys: %v, want every record written at once", got)
	}

	spill := func(string, string) (string, string) { return "many", "many" }
	l = New(time.Hour, Limits[string, string]{Fresh: 2, Spill: spill}, s.write)
	defer l.Close()
	for i := range 10 {
		l.Add(fmt.Sprint(i), fmt.Sprint(i))
	}
	got := s.take()
	if len(got) != 3 || got[2] != (rec{"many", 0}) {
		t.Fatalf("past Fresh: %v, want 2 records and one of the many", got)
	}
	l.Flush()
	if got := s.take(); len(got) != 1 || got[0] != (rec{"many", 7}) {
		t.Fatalf("flush: %v, want the many counted 7", got)
	}
	// Fresh is per period: the flush made room again.
	l.Add("x", "x")
	if got := s.take(); len(got) != 1 || got[0] != (rec{"x", 0}) {
		t.Errorf("next period: %v", got)
	}
}

// Adds from many goroutines against a fast ticker: every record is
// accounted for (run with -race).
func TestConcurrent(t *testing.T) {
	var s sink
	l := New(time.Millisecond, Limits[string, string]{Keys: 8}, s.write)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				k := fmt.Sprint((g + i) % 16)
				l.Add(k, k)
				if i%100 == 0 {
					l.Flush()
				}
			}
		})
	}
	wg.Wait()
	l.Close()
	got, total := s.take(), 0
	for _, r := range got {
		total += max(r.n, 1)
	}
	if total != 8*2000 {
		t.Errorf("%d records written for %d added", total, 8*2000)
	}
}
