package clock

import (
	"slices"
	"sync"
	"time"
)

// Manual is a Clock that moves only when Advance is called: a test drives
// timeouts, intervals and backoff with it without sleeping, and sees
// which timers are set (Pending, WaitPending, Waits). Its methods are
// safe for concurrent use. Timers fire in their own goroutines, as Clock
// requires, so Advance does not wait for what they do.
type Manual struct {
	mu      sync.Mutex
	now     time.Time       // guarded by mu
	timers  []*manualTimer  // guarded by mu: set, neither fired nor stopped, in the order set
	waits   []time.Duration // guarded by mu: every delay given to AfterFunc, in order
	changed chan struct{}   // guarded by mu: closed and replaced when timers changes
}

type manualTimer struct {
	d  time.Duration
	at time.Time
	f  func()
}

// NewManual returns a Manual clock standing at start.
func NewManual(start time.Time) *Manual {
	return &Manual{now: start, changed: make(chan struct{})}
}

// Now returns the clock's time: start plus every Advance so far.
func (c *Manual) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// AfterFunc implements Clock: f runs in its own goroutine once Advance
// has moved the clock d past the present, or at once when d is not
// positive, as with time.AfterFunc. stop reports whether it prevented the
// call.
func (c *Manual) AfterFunc(d time.Duration, f func()) (stop func() bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.waits = append(c.waits, d)
	if d <= 0 {
		go f()
		return func() bool { return false }
	}
	tm := &manualTimer{d: d, at: c.now.Add(d), f: f}
	c.timers = append(c.timers, tm)
	c.changedLocked()
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		i := slices.Index(c.timers, tm)
		if i < 0 {
			return false // fired or stopped already
		}
		c.timers = slices.Delete(c.timers, i, i+1)
		c.changedLocked()
		return true
	}
}

// Advance moves the clock forward by d and starts the timers now due,
// each in its own goroutine. It does not wait for them to run.
func (c *Manual) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []*manualTimer
	c.timers = slices.DeleteFunc(c.timers, func(tm *manualTimer) bool {
		if tm.at.After(c.now) {
			return false
		}
		due = append(due, tm)
		return true
	})
	if len(due) > 0 {
		c.changedLocked()
	}
	c.mu.Unlock()
	for _, tm := range due {
		go tm.f()
	}
}

// Waits returns every delay AfterFunc was given so far, in order, fired
// and stopped timers included.
func (c *Manual) Waits() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.waits)
}

// Pending returns the delays of the timers set and neither fired nor
// stopped, in the order they were set.
func (c *Manual) Pending() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pendingLocked()
}

func (c *Manual) pendingLocked() []time.Duration {
	ds := make([]time.Duration, len(c.timers))
	for i, tm := range c.timers {
		ds[i] = tm.d
	}
	return ds
}

// NextAt returns when the earliest pending timer fires; the zero time
// when none is pending.
func (c *Manual) NextAt() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	var at time.Time
	for _, tm := range c.timers {
		if at.IsZero() || tm.at.Before(at) {
			at = tm.at
		}
	}
	return at
}

// WaitPending waits until ok holds of Pending, looking again whenever a
// timer is set, fired or stopped, for at most timeout of real time. It
// returns the last Pending it looked at and whether ok held of it.
func (c *Manual) WaitPending(timeout time.Duration, ok func(pending []time.Duration) bool) ([]time.Duration, bool) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		pending, changed := c.pendingLocked(), c.changed
		c.mu.Unlock()
		if ok(pending) {
			return pending, true
		}
		select {
		case <-changed:
		case <-deadline.C:
			return pending, false
		}
	}
}

// changedLocked wakes the WaitPending calls.
func (c *Manual) changedLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}
