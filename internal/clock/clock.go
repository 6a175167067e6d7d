// Package clock is the source of time that the SDK, the SMS sender and
// the push dispatcher take, so that tests drive timeouts, intervals and
// backoff without sleeping: System is the time package's, Manual the
// tests' own, moved by hand.
//
// Threading: a Clock's methods are called from several goroutines; System
// and Manual are safe for that, and so must be every test clock.
package clock

import "time"

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
