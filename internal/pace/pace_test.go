package pace

import (
	"testing"
	"time"
)

func TestHeldWritesCountFromSchedule(t *testing.T) {
	start := time.Unix(1000, 0)
	s := New(start, time.Millisecond)
	if w := s.Wait(start.Add(-300 * time.Microsecond)); w != 300*time.Microsecond {
		t.Fatalf("Wait before the first write = %v, want 300µs", w)
	}
	// The sender's timer fired 400 µs late, nothing held it back: charged
	// from the write, the lateness its own.
	now := start.Add(400 * time.Microsecond)
	if n := s.Due(now, 10); n != 1 {
		t.Fatalf("Due = %d, want 1", n)
	}
	w := s.Take(now.UnixNano())
	if w.From != now.UnixNano() || w.Held || w.Late(now.UnixNano()) != 400e3 {
		t.Fatalf("not held: %+v late %d, want from the write, 400µs late", w, w.Late(now.UnixNano()))
	}
	s.Written(now)
	// A full window held it back for 2.5 ms: each due write counts from
	// its scheduled time, and none is the sender's lateness.
	s.Hold()
	now = start.Add(3500 * time.Microsecond)
	if n := s.Due(now, 10); n != 3 {
		t.Fatalf("Due after the hold = %d, want 3 (1, 2 and 3 ms)", n)
	}
	for i := range 3 {
		w := s.Take(now.UnixNano())
		want := start.Add(time.Duration(i+1) * time.Millisecond).UnixNano()
		if w.From != want || !w.Held || w.Late(now.UnixNano()) != 0 {
			t.Fatalf("held write %d: %+v, want from %d, held, no lateness", i, w, want)
		}
	}
	s.Written(now)
	now = start.Add(4200 * time.Microsecond)
	if w := s.Take(now.UnixNano()); w.From != now.UnixNano() || w.Held {
		t.Fatalf("after Written: %+v, want from the write", w)
	}
}

// TestPartOfABacklog: a window that gives back room for part of the
// writes that came due while it was full leaves the rest charged from
// their scheduled times, not as the sender's own lateness.
func TestPartOfABacklog(t *testing.T) {
	start := time.Unix(1000, 0)
	s := New(start, time.Millisecond)
	s.Hold()
	now := start.Add(5500 * time.Microsecond) // writes at 0…5 ms are due
	if n := s.Due(now, 2); n != 2 {
		t.Fatalf("Due with room for 2 = %d", n)
	}
	for range 2 {
		s.Take(now.UnixNano())
	}
	s.Written(now)
	now = now.Add(100 * time.Microsecond)
	if n := s.Due(now, 10); n != 4 {
		t.Fatalf("Due after the room came back = %d, want the 4 left", n)
	}
	for i := range 4 {
		w := s.Take(now.UnixNano())
		if want := start.Add(time.Duration(i+2) * time.Millisecond).UnixNano(); w.From != want || !w.Held || w.Late(now.UnixNano()) != 0 {
			t.Fatalf("backlog write %d: %+v, want from its schedule %d, held", i, w, want)
		}
	}
	s.Written(now)
	now = start.Add(6200 * time.Microsecond) // caught up: the next is on the sender
	if w := s.Take(now.UnixNano()); w.Held || w.From != now.UnixNano() {
		t.Fatalf("after catching up: %+v, want from the write", w)
	}
}

func TestFlatOut(t *testing.T) {
	s := New(time.Unix(1000, 0), 0)
	now := time.Unix(999, 0) // flat out: always due, whatever the clock
	if s.Wait(now) != 0 || s.Due(now, 7) != 7 {
		t.Fatalf("flat out: Wait %v Due %d, want 0 and the limit", s.Wait(now), s.Due(now, 7))
	}
	s.Hold()
	if w := s.Take(now.UnixNano()); w.From != now.UnixNano() || w.Scheduled != 0 || w.Late(now.UnixNano()) != 0 {
		t.Fatalf("flat out: %+v, want from the write, nothing scheduled", w)
	}
}
