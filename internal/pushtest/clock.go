package pushtest

import (
	"testing"
	"time"

	"github.com/parley-im/parley/internal/clock"
)

// Clock is a push.Clock whose timers fire only when the test advances it,
// each in its own goroutine (clock.Manual). Its methods are safe for
// concurrent use.
type Clock struct{ *clock.Manual }

// NewClock returns a Clock at a fixed time.
func NewClock() *Clock {
	return &Clock{clock.NewManual(time.Date(2026, 12, 5, 1, 0, 0, 0, time.UTC))}
}

// WaitTimers waits until n timers are set and neither fired nor stopped,
// failing the test after 10 s.
func (c *Clock) WaitTimers(t testing.TB, n int) {
	t.Helper()
	if ds, ok := c.WaitPending(10*time.Second, func(ds []time.Duration) bool { return len(ds) >= n }); !ok {
		t.Fatalf("pushtest: %d timers within 10 s, want %d", len(ds), n)
	}
}
