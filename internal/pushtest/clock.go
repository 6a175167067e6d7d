package pushtest

import (
	"sync"
	"testing"
	"time"
)

// Clock is a push.Clock whose timers fire only when the test advances
// it, on the test's goroutine. Its methods are safe for concurrent use.
type Clock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*timer      // guarded by mu
	added  chan struct{} // signalled on every AfterFunc
}

type timer struct {
	at      time.Time
	f       func()
	stopped bool
}

// NewClock returns a Clock at a fixed time.
func NewClock() *Clock {
	return &Clock{now: time.Date(2026, 12, 5, 1, 0, 0, 0, time.UTC), added: make(chan struct{}, 1)}
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// AfterFunc implements push.Clock.
func (c *Clock) AfterFunc(d time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &timer{at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	select {
	case c.added <- struct{}{}:
	default:
	}
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		was := !t.stopped
		t.stopped = true
		return was
	}
}

// Advance moves the clock and runs the timers due, on this goroutine.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []func()
	live := c.timers[:0]
	for _, t := range c.timers {
		switch {
		case t.stopped:
		case !t.at.After(c.now):
			t.stopped = true
			due = append(due, t.f)
		default:
			live = append(live, t)
		}
	}
	c.timers = live
	c.mu.Unlock()
	for _, f := range due {
		f()
	}
}

// NextAt returns when the earliest live timer fires; zero when none is
// set.
func (c *Clock) NextAt() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	var at time.Time
	for _, t := range c.timers {
		if !t.stopped && (at.IsZero() || t.at.Before(at)) {
			at = t.at
		}
	}
	return at
}

// WaitTimers waits until n timers are set and neither fired nor stopped,
// failing the test after 10 s.
func (c *Clock) WaitTimers(t testing.TB, n int) {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		live := 0
		for _, tm := range c.timers {
			if !tm.stopped {
				live++
			}
		}
		c.mu.Unlock()
		if live >= n {
			return
		}
		select {
		case <-c.added:
		case <-deadline.C:
			t.Fatalf("pushtest: %d timers within 10 s, want %d", live, n)
		}
	}
}
