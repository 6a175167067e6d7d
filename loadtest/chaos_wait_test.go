package loadtest

import (
	"context"
	"testing"
	"time"

	"github.com/parley-im/parley/internal/clock"
)

// TestWaitForLeavesTheLockFree: a slow check that holds the verifier's
// lock (as the final wait's does) must not starve the devices recording
// events: however many events arrive meanwhile, waitFor lets three times
// the check's own time pass before it checks again. Checked after every
// event, the two alternated on the lock, one check per event, and a run's
// answers crawled behind it. On a manual clock, each check takes 2 ms of
// it; after the first, 100 events are recorded, and the wait must have
// set one timer of 6 ms before its second check (red when it checks again
// at the events: no timer is ever set), which comes when the clock gets
// there.
func TestWaitForLeavesTheLockFree(t *testing.T) {
	const checkTakes = 2 * time.Millisecond
	clk := clock.NewManual(time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC))
	v := newChaosVerifier()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	checks := make(chan int, 200)
	done := make(chan struct{})
	waited := make(chan error, 1)
	go func() {
		n := 0
		waited <- waitPaced(ctx, clk, v.changed, func() bool {
			v.mu.Lock()
			defer v.mu.Unlock()
			n++
			clk.Advance(checkTakes) // the check's work, under the lock
			checks <- n
			select {
			case <-done:
				return true
			default:
				return false
			}
		})
	}()
	next := func(what string) int {
		t.Helper()
		select {
		case n := <-checks:
			return n
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
			return 0
		}
	}
	if n := next("the first check"); n != 1 {
		t.Fatalf("check %d first", n)
	}
	for range 100 { // the devices' events, each under the lock
		v.mu.Lock()
		v.notifyLocked()
		v.mu.Unlock()
	}
	if pending, ok := clk.WaitPending(10*time.Second, func(p []time.Duration) bool { return len(p) > 0 }); !ok || len(pending) != 1 || pending[0] != checkPace*checkTakes {
		t.Fatalf("after a check of %v and 100 events: timers %v (checks so far %d), want one of %v before the next check",
			checkTakes, pending, 1+len(checks), checkPace*checkTakes)
	}
	if len(checks) != 0 {
		t.Fatalf("checked again before its pace had passed")
	}
	close(done)
	clk.Advance(checkPace * checkTakes)
	if n := next("the second check, once the pace has passed"); n != 2 {
		t.Fatalf("check %d second", n)
	}
	select {
	case err := <-waited:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("timed out waiting for waitFor to return")
	}
}
