package sms_test

import (
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/parley-im/parley/internal/clock"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeClock is a Clock that moves only when a test advances it.
type fakeClock struct{ *clock.Manual }

func newFakeClock() *fakeClock {
	return &fakeClock{clock.NewManual(time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC))}
}

// waitTimer waits until a timer of duration d is pending.
func (c *fakeClock) waitTimer(t *testing.T, d time.Duration) {
	t.Helper()
	if ds, ok := c.WaitPending(10*time.Second, func(ds []time.Duration) bool { return slices.Contains(ds, d) }); !ok {
		t.Fatalf("no timer of %v; pending: %v", d, ds)
	}
}
