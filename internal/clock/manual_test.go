package clock

import (
	"slices"
	"testing"
	"time"
)

// TestManual: time moves only by Advance; a timer fires once it is due,
// in its own goroutine, unless stopped; a delay that is not positive
// fires at once; Waits, Pending, NextAt and WaitPending show the timers.
func TestManual(t *testing.T) {
	start := time.Date(2026, 12, 5, 9, 0, 0, 0, time.UTC)
	c := NewManual(start)
	var _ Clock = c
	if !c.Now().Equal(start) || !c.NextAt().IsZero() {
		t.Fatalf("new clock: now %v, next %v", c.Now(), c.NextAt())
	}

	fired := make(chan string, 4)
	next := func() string {
		t.Helper()
		select {
		case f := <-fired:
			return f
		case <-time.After(10 * time.Second):
			t.Fatal("no timer fired within 10 s")
			return ""
		}
	}
	hold := make(chan struct{})
	c.AfterFunc(2*time.Second, func() { <-hold; fired <- "2s" }) // runs only when let go
	stop5 := c.AfterFunc(5*time.Second, func() { fired <- "5s" })
	stop1 := c.AfterFunc(time.Second, func() { fired <- "1s" })
	if !stop1() || stop1() {
		t.Fatal("stop: want true once, then false")
	}
	if p := c.Pending(); !slices.Equal(p, []time.Duration{2 * time.Second, 5 * time.Second}) {
		t.Fatalf("pending %v, want [2s 5s]", p)
	}
	if at := c.NextAt(); !at.Equal(start.Add(2 * time.Second)) {
		t.Fatalf("next at %v, want start+2s", at)
	}

	c.Advance(1999 * time.Millisecond)
	if p := c.Pending(); len(p) != 2 {
		t.Fatalf("pending %v at 1.999s, want both timers still", p)
	}
	advanced := make(chan struct{})
	go func() { c.Advance(time.Millisecond); close(advanced) }() // 2s due
	select {
	case <-advanced:
	case <-time.After(10 * time.Second):
		t.Fatal("Advance waited for the timer it fired")
	}
	if p := c.Pending(); !slices.Equal(p, []time.Duration{5 * time.Second}) {
		t.Fatalf("pending after 2s %v, want [5s]", p)
	}
	close(hold)
	if f := next(); f != "2s" {
		t.Fatalf("fired %s, want 2s", f)
	}
	if !c.Now().Equal(start.Add(2 * time.Second)) {
		t.Fatalf("now %v, want start+2s", c.Now())
	}

	go func() { c.AfterFunc(3*time.Second, func() { fired <- "3s" }) }()
	if p, ok := c.WaitPending(10*time.Second, func(p []time.Duration) bool { return len(p) == 2 }); !ok {
		t.Fatalf("pending %v, want the 3s timer set from another goroutine", p)
	}
	if p, ok := c.WaitPending(time.Millisecond, func(p []time.Duration) bool { return len(p) == 3 }); ok {
		t.Fatalf("WaitPending held for %v", p)
	}

	c.Advance(time.Hour) // both due, in any order
	got := []string{next(), next()}
	slices.Sort(got)
	if !slices.Equal(got, []string{"3s", "5s"}) {
		t.Fatalf("fired %v, want 3s and 5s", got)
	}
	if stop5() {
		t.Fatal("stop after firing reported true")
	}

	c.AfterFunc(0, func() { fired <- "0" })
	if f := next(); f != "0" {
		t.Fatalf("fired %s, want 0 at once", f)
	}
	want := []time.Duration{2 * time.Second, 5 * time.Second, time.Second, 3 * time.Second, 0}
	if w := c.Waits(); !slices.Equal(w, want) {
		t.Fatalf("waits %v, want %v", w, want)
	}
	if len(c.Pending()) != 0 || !c.NextAt().IsZero() {
		t.Fatalf("pending %v, next %v after everything fired", c.Pending(), c.NextAt())
	}
}
