package sms_test

import (
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeClock is a Clock that moves only when a test advances it.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	timers  []*fakeTimer // guarded by mu: pending, in no order
	changed chan struct{}
}

type fakeTimer struct {
	d  time.Duration
	at time.Time
	f  func()
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC), changed: make(chan struct{}, 1)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) func() bool {
	c.mu.Lock()
	tm := &fakeTimer{d: d, at: c.now.Add(d), f: f}
	c.timers = append(c.timers, tm)
	c.mu.Unlock()
	select {
	case c.changed <- struct{}{}:
	default:
	}
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		i := slices.Index(c.timers, tm)
		if i < 0 {
			return false
		}
		c.timers = slices.Delete(c.timers, i, i+1)
		return true
	}
}

// Advance moves the clock by d and fires the timers due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []*fakeTimer
	c.timers = slices.DeleteFunc(c.timers, func(tm *fakeTimer) bool {
		if !tm.at.After(c.now) {
			due = append(due, tm)
			return true
		}
		return false
	})
	c.mu.Unlock()
	for _, tm := range due {
		go tm.f()
	}
}

// waitTimer waits until a timer of duration d is pending.
func (c *fakeClock) waitTimer(t *testing.T, d time.Duration) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		c.mu.Lock()
		found := slices.ContainsFunc(c.timers, func(tm *fakeTimer) bool { return tm.d == d })
		var ds []time.Duration
		for _, tm := range c.timers {
			ds = append(ds, tm.d)
		}
		c.mu.Unlock()
		if found {
			return
		}
		select {
		case <-c.changed:
		case <-deadline:
			t.Fatalf("no timer of %v; pending: %v", d, ds)
		}
	}
}
