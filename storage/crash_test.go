package storage_test

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/parley-im/parley/codec"
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

// TestCrashKeepsReceiptsSeen is the crash test of receipts that ride on
// the next sync (shard_sync.go): the file system is cut at a random moment
// while bob acknowledges what alice and carol send him, each ACK making a
// delivered receipt that asks for no sync of its own. After recovery:
// every receipt entry a sender saw before the cut is still at its seq
// with the same content (a receipt released before its sync and lost
// would have its seq reused); every message bob saw is at its seq again
// if it comes again; every send answered Sent reaches bob; and each
// sender gets a receipt covering every message bob processed, the ACKs
// lost in the crash being made again when bob acknowledges the entries
// that come again.
func TestCrashKeepsReceiptsSeen(t *testing.T) {
	for round := range 3 {
		rng := rand.New(rand.NewPCG(uint64(round), 7))
		fs := vfs.NewCrashableMem()
		n := newNodeOn(t, fs, 2, nil)
		alice, carol, bob := n.register(t, "+15550001001"), n.register(t, "+15550001002"), n.register(t, "+15550001003")
		senders := []account{alice, carol}

		var mu sync.Mutex
		sent := map[uint64]bool{}                                                          // ids of messages answered Sent
		seen := map[uint64]map[uint64]string{bob.user: {}, alice.user: {}, carol.user: {}} // user → seq → entry
		acks := 0
		progress := make(chan struct{}, 1)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		bep := n.login(t, bob, 0)
		for _, from := range senders {
			ep := n.login(t, from, 0)
			wg.Add(1)
			go func() {
				defer wg.Done()
				for cmid := uint64(1); ; cmid++ {
					if err := n.router.Submit(storage.Op{Kind: storage.OpSend, From: from.user, FromDevice: from.device, User: bob.user, CMID: cmid, Body: []byte("x"), Conn: ep.ref}); err != nil {
						return
					}
					for answered := false; !answered; {
						select {
						case <-stop:
							return
						case <-ep.changed:
						}
						for _, f := range takeFrames(ep) {
							mu.Lock()
							switch m := f.msg.(type) {
							case *pb.Sent:
								sent[m.Id], answered = true, true
							case codec.Receipt:
								seen[from.user][m.Seq] = fmt.Sprint(m)
							}
							mu.Unlock()
						}
					}
				}
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				case <-bep.changed:
				}
				var last uint64
				for _, f := range takeFrames(bep) {
					if m, ok := f.msg.(codec.Message); ok {
						mu.Lock()
						seen[bob.user][m.Seq] = fmt.Sprint(m.ID, m.From)
						mu.Unlock()
						last = m.Seq
					}
				}
				if last == 0 {
					continue
				}
				if err := n.router.Submit(storage.Op{Kind: storage.OpAck, User: bob.user, Device: bob.device, Seq: last, Conn: bep.ref}); err != nil {
					return
				}
				mu.Lock()
				acks++
				mu.Unlock()
				select {
				case progress <- struct{}{}:
				default:
				}
			}
		}()
		// The cut falls after a random number of bob's ACKs.
		for target := 1 + rng.IntN(150); ; {
			mu.Lock()
			done := acks >= target
			mu.Unlock()
			if done {
				break
			}
			select {
			case <-progress:
			case <-time.After(30 * time.Second):
				t.Fatalf("round %d: no ACK in 30 s, waiting for %d", round, target)
			}
		}
		mu.Lock()
		sentBefore := maps.Clone(sent)
		before := map[uint64]map[uint64]string{}
		for u, m := range seen {
			before[u] = maps.Clone(m)
		}
		mu.Unlock()
		clone := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(100), RNG: rng})
		close(stop)
		wg.Wait()

		after := newNodeOn(t, clone, 2, nil)
		processed := map[uint64]uint64{} // sender → the highest message id bob processed
		delivered := map[uint64]bool{}
		for _, fp := range before[bob.user] {
			var id, from uint64
			if _, err := fmt.Sscan(fp, &id, &from); err != nil {
				t.Fatal(err)
			}
			delivered[id] = true
			processed[from] = max(processed[from], id)
		}
		for _, m := range after.drain(t, bob, after.login(t, bob, 0)) {
			if prev, ok := before[bob.user][m.Seq]; ok && prev != fmt.Sprint(m.ID, m.From) {
				t.Fatalf("round %d: bob's seq %d was message %s, now %d from %d", round, m.Seq, prev, m.ID, m.From)
			}
			delivered[m.ID] = true
			processed[m.From] = max(processed[m.From], m.ID)
		}
		for id := range sentBefore {
			if !delivered[id] {
				t.Fatalf("round %d: message %d answered Sent before the cut never reached bob", round, id)
			}
		}
		for _, from := range senders {
			var upTo, last uint64
			for seq := range before[from.user] {
				last = max(last, seq)
			}
			want := processed[from.user]
			ep := after.login(t, from, 0)
			var cursor uint64
			deadline := time.After(30 * time.Second)
			for cursor < last || upTo < want {
				for _, f := range takeFrames(ep) {
					r, ok := f.msg.(codec.Receipt)
					if !ok {
						continue
					}
					if prev, ok := before[from.user][r.Seq]; ok && prev != fmt.Sprint(r) {
						t.Fatalf("round %d: user %d's seq %d was %s before the cut, now %v", round, from.user, r.Seq, prev, r)
					}
					if r.Type == pb.ReceiptType_RECEIPT_DELIVERED && r.Peer == bob.user {
						upTo = max(upTo, r.UpTo)
					}
					cursor = r.Seq
					after.ack(from, ep, r.Seq)
				}
				if cursor >= last && upTo >= want {
					break
				}
				select {
				case <-ep.changed:
				case <-deadline:
					t.Fatalf("round %d: user %d saw receipts up to seq %d before the cut, has them up to %d after; delivered up to %d, bob processed up to %d", round, from.user, last, cursor, upTo, want)
				}
			}
		}
		t.Logf("round %d: cut after %d ACKs, %d sends answered, receipts seen %d %d, shards %d %d %d", round, acks, len(sentBefore), len(before[alice.user]), len(before[carol.user]), n.router.ShardOf(alice.user), n.router.ShardOf(carol.user), n.router.ShardOf(bob.user))
	}
}

// takeFrames removes and returns the frames ep has received.
func takeFrames(ep *endpoint) []frame {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	f := ep.frames
	ep.frames = nil
	return f
}
