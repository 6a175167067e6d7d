package storage_test

import (
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
	"github.com/parley-im/parley/storage"
)

// TestReceiptWaitsForASync: the delivered receipt an ACK makes is a
// promise that may wait (shard_sync.go). The ACK's cycle commits without
// asking for a sync of its own, and what it makes leaves the shard only
// once a sync covers it: the forward of the receipt to the sender's shard,
// and there the receipt entry and the answer that confirms the forward.
// With a crash before the sync, the ACK and its receipt are lost
// together: the entry comes again at the same seq, the ACK that follows
// makes the receipt again, and the sender gets it exactly once.
//
// Shards are stepped (no syncer), so which commit is durable is decided
// here, as in TestSimulation.
func TestReceiptWaitsForASync(t *testing.T) {
	for _, crash := range []bool{false, true} {
		t.Run(fmt.Sprintf("crash=%v", crash), func(t *testing.T) {
			s := newSim(t, 7)
			defer s.closeShards()
			s.setup()
			a, b := s.users[0], s.users[1]
			shA, shB := s.shards[s.ShardOf(a.id)], s.shards[s.ShardOf(b.id)]
			if shA == shB {
				t.Fatalf("users %d and %d on one shard", a.id, b.id)
			}
			da, db := a.devices[0], b.devices[0]
			ea, eb := simLogin(s, da, 0), simLogin(s, db, 0)
			s.settle()
			s.submit(storage.Op{Kind: storage.OpSend, From: a.id, FromDevice: da.id, User: b.id, CMID: 1, Body: []byte("hello"), Conn: ea.ref})
			s.settle()
			sent := ea.take(t, protocol.KindSent).(*pb.Sent)
			m := eb.take(t, protocol.KindMessage).(codec.Message)
			if m.ID != sent.Id {
				t.Fatalf("b got message %d, a was told %d", m.ID, sent.Id)
			}

			s.submit(storage.Op{Kind: storage.OpAck, User: b.id, Device: db.id, Seq: m.Seq, Conn: eb.ref})
			shB.Step()
			if n := countNet(s, storage.OpForward, shB.ID()); n != 0 {
				t.Fatalf("b's shard forwarded %d entries before a sync covered the ACK that made them", n)
			}
			if wanted, urgent := shB.SyncWanted(); !wanted || urgent {
				t.Fatalf("after the ACK, b's shard wants a sync: %v, at once: %v; want one that may wait", wanted, urgent)
			}

			if crash {
				// Nothing unsynced survives: the ACK, the cursor it moved
				// and the receipt it made are lost together.
				s.fs = s.fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 0})
				s.closeShards()
				s.dropConnections()
				s.open()
				shA, shB = s.shards[s.ShardOf(a.id)], s.shards[s.ShardOf(b.id)]
				ea, eb = simLogin(s, da, 0), simLogin(s, db, m.Seq-1)
				s.settle()
				again := eb.take(t, protocol.KindMessage).(codec.Message)
				if again.Seq != m.Seq || again.ID != m.ID || string(again.Body) != "hello" {
					t.Fatalf("after the crash b got message %d at seq %d (%q), want %d at %d", again.ID, again.Seq, again.Body, m.ID, m.Seq)
				}
				if got := receiptsOf(ea); len(got) != 0 {
					t.Fatalf("a got receipts of a lost ACK: %+v", got)
				}
				s.submit(storage.Op{Kind: storage.OpAck, User: b.id, Device: db.id, Seq: m.Seq, Conn: eb.ref})
				shB.Step()
				if n := countNet(s, storage.OpForward, shB.ID()); n != 0 {
					t.Fatalf("b's shard forwarded %d entries before a sync covered the ACK that made them", n)
				}
			}

			s.sync(shB)
			if n := countNet(s, storage.OpForward, shB.ID()); n != 1 {
				t.Fatalf("after b's shard synced, %d forwards from it; want the receipt's", n)
			}
			for len(s.net) > 0 {
				op := s.net[0]
				s.net = s.net[1:]
				s.deliverOp(op)
			}
			shA.Step()
			if wanted, urgent := shA.SyncWanted(); !wanted || urgent {
				t.Fatalf("after applying the receipt, a's shard wants a sync: %v, at once: %v; want one that may wait", wanted, urgent)
			}
			if n := countNet(s, storage.OpForwardDone, shA.ID()); n != 0 {
				t.Fatal("a's shard confirmed the receipt's forward before a sync covered it")
			}
			if got := receiptsOf(ea); len(got) != 0 {
				t.Fatalf("a got the receipt before a sync covered it: %+v", got)
			}
			s.sync(shA)
			s.settle()
			got := receiptsOf(ea)
			if len(got) != 1 || got[0].Type != pb.ReceiptType_RECEIPT_DELIVERED || got[0].Peer != b.id || got[0].UpTo != m.ID {
				t.Fatalf("a got receipts %+v; want one DELIVERED from %d up to %d", got, b.id, m.ID)
			}
			if s.failure != "" {
				t.Fatal(s.failure)
			}
		})
	}
}

// simLogin connects d of a stepped sim with cursor, leaving the sim's
// model of d alone.
func simLogin(s *sim, d *simDevice, cursor uint64) *endpoint {
	ep := newEndpoint(s.t)
	s.submit(storage.Op{Kind: storage.OpLogin, User: d.user.id, Device: d.id, Credential: d.cred, Seq: cursor, Conn: ep.ref})
	return ep
}

// countNet counts the ops of kind k from shard source waiting in the
// sim's network.
func countNet(s *sim, k storage.OpKind, source uint16) int {
	n := 0
	for _, op := range s.net {
		if op.Kind == k && op.Source == source {
			n++
		}
	}
	return n
}

// receiptsOf returns the receipt entries ep received so far.
func receiptsOf(ep *endpoint) []codec.Receipt {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	var out []codec.Receipt
	for _, f := range ep.frames {
		if r, ok := f.msg.(codec.Receipt); ok {
			out = append(out, r)
		}
	}
	return out
}

// TestReceiptRidesOnSends: on started shards whose promises that may wait
// wait an hour (Config.LazySync), a delivered receipt costs no sync of its
// own: it rides on the syncs SENDs ask for. The ACK's cycle on the
// recipient's shard commits the receipt and neither shard syncs; a SEND
// to the recipient makes its shard sync, which carries the receipt to the
// sender's shard, and that applies it and still syncs nothing, so it
// waits there (once that SEND's own sync on the sender's shard is done);
// a SEND to the sender makes the sender's shard sync, and the
// receipt arrives. It runs in a synctest bubble, so each step ends when
// every goroutine is idle and the sync counts between steps are exact (a
// receipt that asked for its own sync shows as one). And with the default
// wait, a receipt with no traffic behind it still arrives (the shard asks
// for its sync itself).
func TestReceiptRidesOnSends(t *testing.T) {
	t.Run("rides on sends", func(t *testing.T) { synctest.Test(t, receiptRidesOnSends) })
	t.Run("default wait", func(t *testing.T) {
		n := newNode(t, 2, nil)
		a, b := n.twoShardUsers(t)
		ea, eb := n.login(t, a, 0), n.login(t, b, 0)
		id := n.send(t, a, ea, b.user, 1, "hello")
		m := eb.messages(t, 1)[0]
		n.ack(b, eb, m.Seq)
		r := ea.take(t, protocol.KindReceipt).(codec.Receipt)
		if r.Type != pb.ReceiptType_RECEIPT_DELIVERED || r.Peer != b.user || r.UpTo != id {
			t.Fatalf("a got %+v; want DELIVERED from %d up to %d", r, b.user, id)
		}
	})
}

func receiptRidesOnSends(t *testing.T) {
	n := newNode(t, 2, func(c *storage.Config) { c.LazySync = time.Hour })
	a, b := n.twoShardUsers(t)
	shA, shB := n.shards[n.router.ShardOf(a.user)], n.shards[n.router.ShardOf(b.user)]
	ea, eb := n.login(t, a, 0), n.login(t, b, 0)
	id := n.send(t, a, ea, b.user, 1, "hello")
	m := eb.messages(t, 1)[0]
	synctest.Wait()
	syncsA, syncsB := shA.Stats().Syncs, shB.Stats().Syncs
	noSyncs := func(when string) {
		t.Helper()
		if dA, dB := shA.Stats().Syncs-syncsA, shB.Stats().Syncs-syncsB; dA != 0 || dB != 0 {
			t.Fatalf("%s: a's shard synced %d times, b's %d; want no sync for the receipt", when, dA, dB)
		}
		if got := receiptsOf(ea); len(got) != 0 {
			t.Fatalf("%s: a got receipts %+v before a sync of a's shard covered them", when, got)
		}
	}

	n.ack(b, eb, m.Seq)
	synctest.Wait()
	noSyncs("after the ACK")

	entriesA := shA.Stats().Entries
	n.send(t, a, ea, b.user, 2, "to b")
	syncsA = shA.Stats().Syncs // a's shard synced the SEND before it answered SENT
	eb.messages(t, 1)
	synctest.Wait()
	if shB.Stats().Syncs == syncsB {
		t.Fatal("b's shard applied a SEND to b without a sync")
	}
	if got := shA.Stats().Entries - entriesA; got != 1 {
		t.Fatalf("a's shard appended %d entries; want the receipt", got)
	}
	syncsB = shB.Stats().Syncs
	noSyncs("after the receipt reached a's shard")

	n.send(t, b, eb, a.user, 1, "to a")
	r := ea.take(t, protocol.KindReceipt).(codec.Receipt)
	if r.Type != pb.ReceiptType_RECEIPT_DELIVERED || r.Peer != b.user || r.UpTo != id {
		t.Fatalf("a got %+v; want DELIVERED from %d up to %d", r, b.user, id)
	}
}

// twoShardUsers registers two users on different shards of n.
func (n *node) twoShardUsers(t *testing.T) (account, account) {
	t.Helper()
	var accts []account
	for i := 0; len(accts) < 2 && i < 20; i++ {
		acc := n.register(t, fmt.Sprintf("+1555010%04d", i))
		if len(accts) == 0 || n.router.ShardOf(acc.user) != n.router.ShardOf(accts[0].user) {
			accts = append(accts, acc)
		}
	}
	if len(accts) < 2 {
		t.Fatal("no two users on different shards")
	}
	return accts[0], accts[1]
}
