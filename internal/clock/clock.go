// Package clock is the source of time that the SDK, the SMS sender and
// the push dispatcher take, so that tests drive timeouts, intervals and
// backoff without sleeping: System is the time package's, Manual the
// tests' own, moved by hand.
//
// Threading: a Clock's methods are called from several goroutines; System
// and Manual are safe for that, and so must be every test clock.
package clock

import (
	"context"
	"time"
)

// Clock is a source of time.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// AfterFunc calls f in its own goroutine once d has elapsed, unless
	// stop is called first; stop reports whether it prevented the call.
	AfterFunc(d time.Duration, f func()) (stop func() bool)
}

// TimerClock is a Clock that also makes reusable timers: a loop that
// waits again and again (a load generator's pacing, once per write) keeps
// one instead of a timer and a goroutine per wait. System implements it;
// Manual does not, and code that uses it falls back to AfterFunc.
type TimerClock interface {
	Clock
	// NewTimer returns a timer that sends on its channel once d has
	// elapsed, as time.NewTimer.
	NewTimer(d time.Duration) *time.Timer
}

// System is the Clock of the time package.
type System struct{}

// Now implements Clock with time.Now.
func (System) Now() time.Time { return time.Now() }

// NewTimer implements TimerClock with time.NewTimer.
func (System) NewTimer(d time.Duration) *time.Timer { return time.NewTimer(d) }

// AfterFunc implements Clock with time.AfterFunc.
func (System) AfterFunc(d time.Duration, f func()) func() bool {
	return time.AfterFunc(d, f).Stop
}

// Sleeper waits on a Clock again and again, keeping one timer for every
// wait when the clock makes them (TimerClock) and a timer per wait (its
// AfterFunc) otherwise. One goroutine uses a Sleeper at a time.
type Sleeper struct {
	clk Clock
	tm  *time.Timer // nil: clk is no TimerClock
}

// NewSleeper returns a Sleeper on clk; Stop releases its timer.
func NewSleeper(clk Clock) *Sleeper {
	s := &Sleeper{clk: clk}
	if tc, ok := clk.(TimerClock); ok {
		s.tm = tc.NewTimer(time.Hour)
		s.tm.Stop()
	}
	return s
}

// Sleep waits until d has elapsed on the clock or ctx ends, whichever
// comes first; it returns nil in the first case and ctx.Err() in the
// second. A d of zero or less returns ctx.Err() at once.
func (s *Sleeper) Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	if s.tm != nil {
		s.tm.Reset(d)
		select {
		case <-s.tm.C:
			return nil
		case <-ctx.Done():
			s.tm.Stop()
			return ctx.Err()
		}
	}
	due := make(chan struct{})
	stop := s.clk.AfterFunc(d, func() { close(due) })
	select {
	case <-due:
		return nil
	case <-ctx.Done():
		stop()
		return ctx.Err()
	}
}

// Stop releases the Sleeper's timer; it must not be used after.
func (s *Sleeper) Stop() {
	if s.tm != nil {
		s.tm.Stop()
	}
}

// Sleep waits d on clk or until ctx ends, as Sleeper.Sleep, once.
func Sleep(ctx context.Context, clk Clock, d time.Duration) error {
	s := NewSleeper(clk)
	defer s.Stop()
	return s.Sleep(ctx, d)
}
