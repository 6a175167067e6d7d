package loadtest

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// TestWaitForLeavesTheLockFree: a slow check that holds the verifier's
// lock (as the final wait's does) must not starve the devices recording
// events: while a recorder takes the lock for each of its events, waitFor
// checks far fewer times than there are events. Checked after every event,
// the two alternated on the lock, one check per event, and a run's answers
// crawled behind it.
func TestWaitForLeavesTheLockFree(t *testing.T) {
	r := &chaosRun{ver: newChaosVerifier()}
	const devices, each = 8, 40
	const events = devices * each
	var recorded, checks atomic.Int64
	for range devices {
		go func() {
			for range each {
				r.ver.mu.Lock()
				r.ver.notifyLocked()
				r.ver.mu.Unlock()
				recorded.Add(1)
				time.Sleep(100 * time.Microsecond) // the device's own work before its next event
			}
		}()
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := r.waitFor(ctx, func() bool {
		checks.Add(1)
		r.ver.mu.Lock()
		defer r.ver.mu.Unlock()
		time.Sleep(2 * time.Millisecond) // the check's work, under the lock
		return recorded.Load() == events
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := checks.Load(); n >= each/2 { // one event per device per check would make each checks
		t.Fatalf("%d checks while %d events were recorded: the checks held the lock against the events", n, events)
	}
}
