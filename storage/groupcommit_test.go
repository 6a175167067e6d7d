package storage_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
	"github.com/parley-im/parley/router"
	"github.com/parley-im/parley/storage"
)

// TestSyncWaitNeverAtLightLoad: a shard whose actor has nothing in hand
// when its syncer wakes syncs at once, even with a SyncWait of an hour.
// One client that waits for each answer before its next request (for an
// ack, its delivered receipt) never leaves work in hand, however close
// its requests follow each other: it registers, logs in, sends and
// acknowledges, every answer arrives, and no sync waited. (When the wait followed the last sync's end instead, a
// client this quick made every sync wait, and this test times out.)
func TestSyncWaitNeverAtLightLoad(t *testing.T) {
	n := newNode(t, 1, func(c *storage.Config) { c.SyncWait = time.Hour })
	a := n.register(t, "+15550000001") // REQUEST_CODE and VERIFY: promises, answered after a sync
	b := n.register(t, "+15550000002")
	ea, eb := n.login(t, a, 0), n.login(t, b, 0)
	for i := range uint64(20) {
		id := n.send(t, a, ea, b.user, i+1, fmt.Sprintf("quick #%d", i))
		m := eb.messages(t, 1)[0]
		if m.ID != id {
			t.Fatalf("got message %d, want %d", m.ID, id)
		}
		n.ack(b, eb, m.Seq)
		// The ack is answered by nothing but its delivered receipt: wait
		// for it, or the next SEND overlaps the receipt's promise.
		if r := ea.take(t, protocol.KindReceipt).(codec.Receipt); r.Peer != b.user {
			t.Fatalf("receipt %+v, want bob's (%d)", r, b.user)
		}
	}
	if st := n.shards[0].Stats(); st.SyncWaits != 0 {
		t.Errorf("%d of %d syncs waited; want none", st.SyncWaits, st.Syncs)
	}
}

// TestSyncWaitUnderOverlap: with clients whose requests overlap, the
// syncer waits before some syncs (SyncWaits counts them: red when it never
// waits), and every request is still answered: a wait never strands a
// promise. It does not tell the two reasons to wait apart (more than one
// promise waiting, or ops in hand): either alone keeps it green;
// TestSyncWaitsForWorkInHand guards the wait for ops in hand.
func TestSyncWaitUnderOverlap(t *testing.T) {
	r, s := startCodeShard(t, storage.Config{SyncWait: 5 * time.Millisecond})

	const clients, each = 16, 30
	errs := make(chan error, clients)
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ep := newBenchEndpoint()
			defer testConns.m.Delete(ep.ref)
			for i := range each {
				phone := fmt.Sprintf("+1556%03d%05d", c, i)
				if err := r.Submit(storage.Op{Kind: storage.OpRequestCode, Phone: phone, RID: 1, Conn: ep.ref}); err != nil {
					errs <- err
					return
				}
				select {
				case <-ep.answered:
				case <-time.After(30 * time.Second):
					errs <- fmt.Errorf("client %d: request %d not answered within 30 s", c, i)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if st := s.Stats(); st.SyncWaits == 0 {
		t.Errorf("none of %d syncs waited for work in hand", st.Syncs)
	}
}

// TestSyncWaitsForWorkInHand: a syncer woken by one promise (no overlap)
// while the actor has work in hand waits for the actor's commit, so one
// sync covers the cycle that woke it and the work that was in hand; with
// nothing in hand it does not wait (TestSyncWaitNeverAtLightLoad). Work in
// hand is an op queued while the actor is busy elsewhere ("queued": its
// once-a-second Tick), or a cycle being applied ("applying"). It runs in a
// synctest bubble: the syncer is held just after a sync while cycle 1
// commits a promise, the actor is held at its fence with work in hand, and
// synctest.Wait tells when the syncer, let go, has decided: synced cycle 1
// at once (red) or waits for the actor (the sync count stays). SyncWait is
// an hour, so only the actor's commit ends the wait.
func TestSyncWaitsForWorkInHand(t *testing.T) {
	for _, hand := range []string{"queued", "applying"} {
		t.Run(hand, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { syncWaitInHand(t, hand == "applying") })
		})
	}
}

func syncWaitInHand(t *testing.T, applying bool) {
	r, err := router.New(1)
	if err != nil {
		t.Fatal(err)
	}
	var syncs atomic.Int32
	var holdSync, holdFence atomic.Bool
	syncHeld, fenceHeld := make(chan struct{}), make(chan struct{})
	ep := &countEndpoint{ref: storage.ConnRef{ID: testConns.last.Add(1)}}
	testConns.m.Store(ep.ref, ep)
	defer testConns.m.Delete(ep.ref)
	s, err := storage.Open(storage.Config{
		Dir: "shard", FS: vfs.NewMem(), Forwarder: r, Conns: testConns, Codes: &codeBox{},
		SyncWait: time.Hour,
		OnSync: func(time.Duration) {
			syncs.Add(1)
			if holdSync.CompareAndSwap(true, false) {
				<-syncHeld
			}
		},
		Fence: func() bool {
			if holdFence.CompareAndSwap(true, false) {
				<-fenceHeld
			}
			return true
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Attach([]*storage.Shard{s}); err != nil {
		t.Fatal(err)
	}
	s.Start()
	defer s.Close()
	var letGo [2]sync.Once // a failed check lets both go, so Close can end
	release := func(i int, held chan struct{}) { letGo[i].Do(func() { close(held) }) }
	defer release(0, syncHeld)
	defer release(1, fenceHeld)
	request := func(i uint32) { // REQUEST_CODE: a promise, answered after its sync
		t.Helper()
		if err := r.Submit(storage.Op{Kind: storage.OpRequestCode, Phone: fmt.Sprintf("+155570000%02d", i), RID: i, Conn: ep.ref}); err != nil {
			t.Fatal(err)
		}
	}
	var base int32 // syncs before the test's requests
	check := func(when string, wantSyncs, wantAnswers int32) {
		t.Helper()
		if got, answers := syncs.Load()-base, ep.answers.Load(); got != wantSyncs || answers != wantAnswers {
			t.Fatalf("%s: %d syncs, %d answers; want %d, %d", when, got, answers, wantSyncs, wantAnswers)
		}
	}
	synctest.Wait()
	base = syncs.Load()

	holdSync.Store(true)
	request(0) // cycle 0, synced at once (nothing in hand); the syncer is held after it
	synctest.Wait()
	request(1) // cycle 1 commits a promise, and wakes the held syncer
	synctest.Wait()
	check("cycle 1 committed", 1, 0) // cycle 0's answer goes out after OnSync

	holdFence.Store(true)
	if applying {
		request(2) // cycle 2 is held at its fence: a cycle being applied
	} else {
		time.Sleep(time.Second) // the actor's Tick asks the fence, and is held there
		synctest.Wait()
		request(2) // queued behind the held Tick
	}
	synctest.Wait()
	release(0, syncHeld)
	synctest.Wait()
	check("syncer woken for cycle 1 with cycle 2 in hand", 1, 1)

	release(1, fenceHeld)
	synctest.Wait()
	check("cycle 2 committed", 2, 3)
	if st := s.Stats(); st.SyncWaits != 1 {
		t.Errorf("%d syncs waited; want the one woken with work in hand", st.SyncWaits)
	}
}

// countEndpoint counts the answers and entries a shard sends it.
type countEndpoint struct {
	ref     storage.ConnRef
	answers atomic.Int32
}

func (e *countEndpoint) Post([]byte) bool                 { e.answers.Add(1); return true }
func (e *countEndpoint) Reply([]byte)                     { e.answers.Add(1) }
func (e *countEndpoint) Authenticated(storage.Session)    {}
func (e *countEndpoint) Fail(protocol.Code)               { e.answers.Add(1) }
func (e *countEndpoint) Close(protocol.Code)              {}
func (e *countEndpoint) LookupPart(uint64, []*pb.Contact) {}
