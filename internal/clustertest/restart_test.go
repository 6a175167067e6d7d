package clustertest_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parley-im/parley/internal/clustertest"
	"github.com/parley-im/parley/internal/nodetest"
)

// sendReliably sends body from d to user to until a SENT comes,
// reconnecting and resending the identical SEND ([S-8-14]) after a
// retriable error or a lost connection, as a client does; it gives up
// after bound.
func sendReliably(d *nodetest.Device, to uint64, body string, bound time.Duration) error {
	deadline := time.Now().Add(bound)
	var cmid uint64
	for time.Now().Before(deadline) {
		d.Connect()
		if cmid == 0 {
			if cmid, _ = d.Send(to, []byte(body)); cmid == 0 {
				continue // not connected yet: Connect again
			}
		} else {
			d.Resend(cmid)
		}
		if _, err := d.WaitSentWithin(cmid, 2*time.Second); err == nil {
			return nil
		}
	}
	return fmt.Errorf("%v: no SENT for %q within %v", d, body, bound)
}

// TestNodeRestartLosesNothing: under traffic between users homed on the
// three nodes, one node is shut down and started again in process (a new
// boot generation, the same shards at the same epochs). Its users get
// retriable errors meanwhile and their clients resend; afterwards every
// acknowledged message has reached its recipient once and in order, and
// the outboxes towards the restarted node have drained.
func TestNodeRestartLosesNothing(t *testing.T) {
	c := clustertest.Start(t, 3, nil)
	rec := nodetest.NewRecorder(t, c.Node(1))
	// One user homed on each node, each connected through node 1 or 2:
	// the node that restarts serves shards, not connections.
	var devs []*nodetest.Device
	for home := uint32(1); home <= 3; home++ {
		via := uint32(1)
		if home == 1 {
			via = 2
		}
		d := rec.Device(c.Register(t, home, via))
		d.Via(c.Node(via))
		d.Connect()
		d.WaitSynced()
		devs = append(devs, d)
	}
	// Each sender goes on until the restart is over and it has sent
	// afterSends more: traffic crosses the restart.
	const afterSends = 10
	var acked atomic.Int64
	var restarted atomic.Bool
	errs := make(chan error, len(devs))
	var wg sync.WaitGroup
	for i, d := range devs {
		to := devs[(i+1)%len(devs)].User.ID
		wg.Add(1)
		go func() {
			defer wg.Done()
			after := 0
			for k := 0; after < afterSends; k++ {
				if restarted.Load() {
					after++
				}
				if err := sendReliably(d, to, fmt.Sprintf("%v #%d", d, k), 60*time.Second); err != nil {
					errs <- err
					return
				}
				acked.Add(1)
			}
		}()
	}
	rec.Wait("traffic under way", func() bool { return acked.Load() >= int64(3*len(devs)) })
	c.Restart(t, 3)
	restarted.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// A client whose connection the restart closed reconnects, as the
	// SDK does; a device that had finished sending may not have yet.
	for _, d := range devs {
		d.Connect()
	}
	rec.Settle()
	// The sources hear the last confirmations just after the deliveries:
	// poll the counters (no event announces them) up to the bound.
	deadline := time.Now().Add(nodetest.Timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		var left []string
		for id := uint32(1); id <= 3; id++ {
			for _, s := range c.Node(id).Shards() {
				if n := s.Stats().Unconfirmed; n != 0 {
					left = append(left, fmt.Sprintf("node %d shard %d: %d", id, s.ID(), n))
				}
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("outbox entries still unconfirmed after %v: %v", nodetest.Timeout, left)
		}
		<-tick.C
	}
}
