package storage_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
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
// promise waiting, or ops in hand): either alone keeps it green.
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
