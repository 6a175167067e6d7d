package storage_test

import (
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
	"github.com/parley-im/parley/storage"
)

// TestCrashKeepsAcknowledgedSends is invariant 1: the file system is cut
// at a random moment during a stream of sends, keeping only what was
// synced (plus a random part of what was not). Every send whose Sent the
// sender had seen before the cut is in the recipient's inbox after
// recovery, exactly once and in order.
func TestCrashKeepsAcknowledgedSends(t *testing.T) {
	for round := range 5 {
		rng := rand.New(rand.NewPCG(uint64(round), 42))
		fs := vfs.NewCrashableMem()
		n := newNodeOn(t, fs, 2, nil)
		alice, carol, bob := n.register(t, "+15550001001"), n.register(t, "+15550001002"), n.register(t, "+15550001003")

		var mu sync.Mutex
		acked := map[uint64]bool{} // message ids with a Sent
		progress := make(chan struct{}, 1)
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for _, from := range []account{alice, carol} {
			ep := n.login(t, from, 0)
			wg.Add(1)
			go func() {
				defer wg.Done()
				for cmid := uint64(1); ; cmid++ {
					select {
					case <-stop:
						return
					default:
					}
					if err := n.router.Submit(storage.Op{Kind: storage.OpSend, From: from.user, FromDevice: from.device, User: bob.user, CMID: cmid, Body: []byte("x"), Conn: ep.ref}); err != nil {
						return
					}
					ep.wait(t, "sent", func(e *endpoint) bool {
						for i, f := range e.frames {
							if f.kind == protocol.KindSent {
								mu.Lock()
								acked[f.msg.(*pb.Sent).Id] = true
								mu.Unlock()
								select {
								case progress <- struct{}{}:
								default:
								}
								e.frames = append(e.frames[:i:i], e.frames[i+1:]...)
								return true
							}
						}
						return e.isClosed
					})
				}
			}()
		}
		// The cut falls after a random number of acknowledged sends: a
		// moment chosen by progress, not by a sleep a loaded machine would
		// spend before the first send.
		for target := 1 + rng.IntN(400); ; {
			mu.Lock()
			n := len(acked)
			mu.Unlock()
			if n >= target {
				break
			}
			select {
			case <-progress:
			case <-time.After(10 * time.Second):
				t.Fatalf("round %d: %d sends acknowledged in 10 s, waiting for %d", round, n, target)
			}
		}
		mu.Lock()
		before := make(map[uint64]bool, len(acked))
		for id := range acked {
			before[id] = true
		}
		mu.Unlock()
		clone := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(100), RNG: rng})
		close(stop)
		wg.Wait()
		if len(before) == 0 {
			t.Fatalf("round %d: no send was acknowledged before the cut", round)
		}

		after := newNodeOn(t, clone, 2, nil)
		bep := after.login(t, bob, 0)
		msgs := after.drain(t, bob, bep)
		seen := map[uint64]bool{}
		var last uint64
		for _, m := range msgs {
			if seen[m.ID] {
				t.Fatalf("round %d: message %d delivered twice", round, m.ID)
			}
			if m.Seq <= last {
				t.Fatalf("round %d: seq %d after %d", round, m.Seq, last)
			}
			seen[m.ID], last = true, m.Seq
		}
		for id := range before {
			if !seen[id] {
				t.Fatalf("round %d: acknowledged message %d lost in the crash (%d acked, %d recovered)", round, id, len(before), len(msgs))
			}
		}
		t.Logf("round %d: %d acknowledged before the cut, %d recovered", round, len(before), len(msgs))
	}
}
