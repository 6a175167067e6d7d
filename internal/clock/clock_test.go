package clock

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestSleeper: on the system clock (one reused timer) and on a manual one
// (a timer per wait), a Sleeper returns nil once d has elapsed, again and
// again, and ctx's error when ctx ends first.
func TestSleeper(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	sys := NewSleeper(System{})
	defer sys.Stop()
	for i := range 3 {
		start := time.Now()
		if err := sys.Sleep(ctx, time.Millisecond); err != nil || time.Since(start) < time.Millisecond {
			t.Fatalf("system sleep %d: %v after %v, want nil after 1ms or more", i, err, time.Since(start))
		}
	}
	ended, end := context.WithCancel(ctx)
	end()
	if err := sys.Sleep(ended, time.Hour); !errors.Is(err, context.Canceled) {
		t.Fatalf("system sleep with ctx ended: %v, want context.Canceled", err)
	}
	if err := sys.Sleep(ctx, time.Millisecond); err != nil {
		t.Fatalf("system sleep after a cancelled one: %v", err)
	}

	m := NewManual(time.Unix(0, 0))
	ms := NewSleeper(m)
	done := make(chan error, 1)
	go func() { done <- ms.Sleep(ctx, 5*time.Second) }()
	if p, ok := m.WaitPending(10*time.Second, func(p []time.Duration) bool { return len(p) == 1 }); !ok {
		t.Fatalf("manual sleep: timers %v, want one", p)
	}
	select {
	case err := <-done:
		t.Fatalf("manual sleep returned %v before the clock moved", err)
	default:
	}
	m.Advance(5 * time.Second)
	if err := <-done; err != nil {
		t.Fatalf("manual sleep: %v, want nil", err)
	}
	stopCtx, stop := context.WithCancel(ctx)
	go func() { done <- ms.Sleep(stopCtx, 5*time.Second) }()
	if p, ok := m.WaitPending(10*time.Second, func(p []time.Duration) bool { return len(p) == 1 }); !ok {
		t.Fatalf("manual sleep: timers %v, want one", p)
	}
	stop()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("manual sleep with ctx ended: %v, want context.Canceled", err)
	}
	if p := m.Pending(); len(p) != 0 {
		t.Fatalf("timers left after the cancelled sleep: %v", p)
	}
}
