package storage_test

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
	"github.com/parley-im/parley/storage"
)

// phoneOn returns a phone number, distinct for each tag, whose slot is
// served by shard.
func (n *node) phoneOn(t *testing.T, shard int, tag int) string {
	t.Helper()
	return phoneOnShard(t, n.router, "+1555", uint16(shard), tag)
}

// phoneOnShard returns a phone number prefix + tag (3 digits) + 4 digits
// that r places on shard.
func phoneOnShard(t testing.TB, r interface{ ShardOfPhone(string) uint16 }, prefix string, shard uint16, tag int) string {
	t.Helper()
	for i := range 100_000 {
		if p := fmt.Sprintf("%s%03d%04d", prefix, tag, i); r.ShardOfPhone(p) == shard {
			return p
		}
	}
	t.Fatalf("no phone number on shard %d", shard)
	return ""
}

// sendOnly submits op and waits for its Sent (or Error), taking only that
// frame from ep: the entries ep receives meanwhile stay for the test.
func (n *node) sendOnly(t *testing.T, ep *endpoint, op storage.Op) uint64 {
	t.Helper()
	n.submit(op)
	var id uint64
	ep.wait(t, fmt.Sprintf("Sent for cmid %d", op.CMID), func(e *endpoint) bool {
		for i, f := range e.frames {
			switch m := f.msg.(type) {
			case *pb.Sent:
				if m.Cmid == op.CMID {
					id = m.Id
					e.frames = append(e.frames[:i:i], e.frames[i+1:]...)
					return true
				}
			case *pb.Error:
				if m.Cmid == op.CMID {
					t.Fatalf("send %d: %v", op.CMID, m.Code)
				}
			}
		}
		return false
	})
	return id
}

// onShard fails the test unless a's user lives on shard.
func (n *node) onShard(t *testing.T, a account, shard int) {
	t.Helper()
	if got := int(n.router.ShardOf(a.user)); got != shard {
		t.Fatalf("user %d is on shard %d, want %d", a.user, got, shard)
	}
}

// TestCrossShardForwardsSurviveRestart is issue 9's first finding: after a
// restart, every path through the inter-shard outbox delivers what it
// acknowledged. Alice (shard 0, a primary and a companion) and Bob (shard
// 1) share a group on Alice's shard; the outbox is used and emptied before
// each restart, which is its normal state. After each restart: group
// messages from Alice reach Bob (0→1), Bob's delivered receipts reach both
// of Alice's devices (1→0), and Alice's 1:1 messages to Bob reach her
// companion as copies (1→0). Format 1 reused outbox sequences after a
// restart and the destination skipped them as applied: all of these were
// answered and lost.
func TestCrossShardForwardsSurviveRestart(t *testing.T) {
	n := newNode(t, 2, nil)
	alice := n.register(t, n.phoneOn(t, 0, 1))
	bob := n.register(t, n.phoneOn(t, 1, 2))
	n.onShard(t, alice, 0)
	n.onShard(t, bob, 1)
	aep := n.login(t, alice, 0)
	laptop := n.link(t, alice, aep, "laptop")
	info := n.createGroup(t, alice, aep, "across", bob.user)
	g := info.Group

	cursors := map[string]uint64{}
	streams := map[string]*endpoint{}
	login := func() {
		streams["alice"] = n.login(t, alice, cursors["alice"])
		streams["laptop"] = n.login(t, laptop, cursors["laptop"])
		streams["bob"] = n.login(t, bob, cursors["bob"])
	}
	// next takes the next entry of a device's stream, skipping Synced, and
	// acknowledges it.
	next := func(who string, a account) any {
		t.Helper()
		ep := streams[who]
		for {
			f := ep.takeAny(t, protocol.KindMessage, protocol.KindReceipt, protocol.KindReceipts, protocol.KindGroupEvent)
			var seq uint64
			switch m := f.(type) {
			case codec.Message:
				seq = m.Seq
			case codec.Receipt:
				seq = m.Seq
			case *pb.Receipts:
				seq = m.Seq
			case *pb.GroupEvent:
				seq = m.Seq
			}
			if seq <= cursors[who] {
				t.Fatalf("%s: seq %d again (cursor %d)", who, seq, cursors[who])
			}
			cursors[who] = seq
			n.ack(a, ep, seq)
			return f
		}
	}
	login()
	// Drain what the setup delivered: the group's creation and add.
	for range 2 {
		next("alice", alice)
		next("laptop", laptop)
	}
	next("bob", bob)

	cmid := uint64(0)
	for round := range 3 {
		// Use the outbox in both directions and let it empty: the state a
		// node is normally in when it restarts.
		n.restart()
		login()
		const count = 20
		var ids []uint64
		for i := range count {
			cmid++
			ids = append(ids, n.sendOnly(t, streams["alice"], storage.Op{
				Kind: storage.OpSend, From: alice.user, FromDevice: alice.device, Group: g, CMID: cmid,
				Body: []byte(fmt.Sprintf("group %d.%d", round, i)), Conn: streams["alice"].ref,
			}))
		}
		for i, id := range ids {
			m, ok := next("bob", bob).(codec.Message)
			if !ok || m.ID != id || m.Group != g {
				t.Fatalf("round %d: bob's entry %d is %+v, want group message %d", round, i, m, id)
			}
		}
		// Alice has two devices: both get her messages (her group's shard is
		// hers), then Bob's delivered receipts, coalesced per cycle, up to
		// the last message.
		for _, dev := range []struct {
			name string
			a    account
		}{{"alice", alice}, {"laptop", laptop}} {
			for i, id := range ids {
				f := next(dev.name, dev.a)
				if c, ok := f.(codec.Message); !ok || c.ID != id {
					t.Fatalf("round %d: %s's copy %d is %T %+v, want %d", round, dev.name, i, f, f, id)
				}
			}
			for upTo := uint64(0); upTo != ids[len(ids)-1]; {
				r, ok := next(dev.name, dev.a).(*pb.Receipts)
				// [S-16-8] one item per peer, with the highest up_to.
				if !ok || r.Group != g || r.Type != pb.ReceiptType_RECEIPT_DELIVERED || len(r.Items) != 1 {
					t.Fatalf("round %d: %s got %+v, want one item of bob's delivered receipts", round, dev.name, r)
				}
				for _, it := range r.Items {
					if it.Peer != bob.user || it.UpTo <= upTo {
						t.Fatalf("round %d: %s got %+v, want bob's delivered receipts after %d", round, dev.name, r, upTo)
					}
					upTo = it.UpTo
				}
			}
		}

		n.restart()
		login()
		// 1:1 from Alice to Bob: the send runs on Bob's shard, the copy
		// for Alice's laptop crosses back to shard 0.
		for i := range count {
			cmid++
			id := n.sendOnly(t, streams["alice"], storage.Op{
				Kind: storage.OpSend, From: alice.user, FromDevice: alice.device, User: bob.user, CMID: cmid,
				Body: []byte(fmt.Sprintf("direct %d.%d", round, i)), Conn: streams["alice"].ref,
			})
			if m, ok := next("bob", bob).(codec.Message); !ok || m.ID != id {
				t.Fatalf("round %d: bob got %+v, want direct message %d", round, m, id)
			}
			for _, dev := range []struct {
				name string
				a    account
			}{{"alice", alice}, {"laptop", laptop}} {
				if c, ok := next(dev.name, dev.a).(codec.Message); !ok || c.ID != id || c.To != bob.user {
					t.Fatalf("round %d: %s's copy is %+v, want %d to bob", round, dev.name, c, id)
				}
				if r, ok := next(dev.name, dev.a).(codec.Receipt); !ok || r.Type != pb.ReceiptType_RECEIPT_DELIVERED || r.UpTo != id {
					t.Fatalf("round %d: %s got %+v, want bob's delivered receipt for %d", round, dev.name, r, id)
				}
			}
		}
	}
	for _, s := range n.shards {
		if st := s.Stats(); st.Aborts != 0 {
			t.Errorf("shard %d aborted %d cycles", s.ID(), st.Aborts)
		}
	}
}

// TestOutboxAnswerFromUnknownSource: an answer for a pair that never sent
// anything is ignored.
func TestOutboxAnswerFromUnknownSource(t *testing.T) {
	n := newNode(t, 2, nil)
	n.submit(storage.Op{Kind: storage.OpForwardDone, Source: 1, Dest: 0, OutSeq: 7})
	alice := n.register(t, n.phoneOn(t, 0, 3))
	bob := n.register(t, n.phoneOn(t, 1, 4))
	aep, bep := n.login(t, alice, 0), n.login(t, bob, 0)
	id := n.send(t, alice, aep, bob.user, 1, "hi")
	if m := bep.take(t, protocol.KindMessage).(codec.Message); m.ID != id {
		t.Fatalf("bob got %+v", m)
	}
}

// TestFormat1OutboxUpgraded: a shard that stopped with an entry in its
// format 1 outbox (one sequence for all destinations, under ffff 'q')
// delivers it after the upgrade to per-destination pairs, and the pair
// keeps working after it.
func TestFormat1OutboxUpgraded(t *testing.T) {
	fs := vfs.NewMem()
	n := newNodeOn(t, fs, 2, nil)
	alice := n.register(t, n.phoneOn(t, 0, 5))
	bob := n.register(t, n.phoneOn(t, 1, 6))
	n.onShard(t, alice, 0)
	n.onShard(t, bob, 1)
	n.close()

	// Rewrite shard 0 as format 1 left it: no version key, an outbox entry
	// at format 1 sequence 5 for bob, and a format 1 watermark.
	db, err := pebble.Open("shard-0", &pebble.Options{FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	entry := append([]byte{byte(protocol.KindMessage)}, codec.AppendMessageEntry(nil, codec.Message{
		ID: 77, From: alice.user, FromDevice: alice.device, Body: []byte("queued before the upgrade"),
	})...)
	value := []byte{0, 1} // flags, one user
	value = binary.BigEndian.AppendUint64(value, bob.user)
	value = append(value, make([]byte, 16)...) // group, gseq
	value = append(value, entry...)
	b := db.NewBatch()
	must(b.Delete([]byte{0xff, 0xff, 'V'}, nil))
	must(b.Set([]byte{0xff, 0xff, 'q', 0, 0, 0, 0, 0, 0, 0, 5}, value, nil))
	must(b.Set([]byte{0xff, 0xff, 'w', 0, 1}, binary.BigEndian.AppendUint64(nil, 9), nil))
	must(b.Commit(pebble.Sync))
	must(db.Close())

	n.open(2)
	aep, bep := n.login(t, alice, 0), n.login(t, bob, 0)
	if m := bep.take(t, protocol.KindMessage).(codec.Message); m.ID != 77 || string(m.Body) != "queued before the upgrade" {
		t.Fatalf("bob got %+v, want the format 1 entry", m)
	}
	n.ack(bob, bep, 1)
	aep.take(t, protocol.KindReceipt)
	id := n.send(t, alice, aep, bob.user, 1, "after")
	if m := bep.take(t, protocol.KindMessage).(codec.Message); m.ID != id {
		t.Fatalf("bob got %+v, want %d", m, id)
	}
	n.restart()
	aep, bep = n.login(t, alice, 0), n.login(t, bob, 2)
	id = n.send(t, bob, bep, alice.user, 1, "and after a restart")
	if m := aep.take(t, protocol.KindMessage).(codec.Message); m.ID != id {
		t.Fatalf("alice got %+v, want %d", m, id)
	}
}

// rawUpdate opens a closed shard's database directly and runs fn on it.
func rawUpdate(t *testing.T, fs vfs.FS, dir string, fn func(db *pebble.DB)) {
	t.Helper()
	db, err := pebble.Open(dir, &pebble.Options{FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	fn(db)
	must(db.Close())
}

func userRecordKey(u uint64) []byte {
	k := binary.BigEndian.AppendUint16(nil, uint16(u&4095))
	return binary.BigEndian.AppendUint64(append(k, 'u'), u)
}

// TestStorageErrorAbortsTheCycle: a group message forwarded to a shard
// where one member's record cannot be read must not be applied in part.
// Format 1 committed the references of the members before the failure
// (without the body they point to) and went on; now the whole cycle is
// aborted, the shard closes the connections it served and restarts in
// place, and once the record is readable again every member gets the
// message once, at the next seq.
func TestStorageErrorAbortsTheCycle(t *testing.T) {
	fs := vfs.NewMem()
	n := newNodeOn(t, fs, 2, nil)
	alice := n.register(t, n.phoneOn(t, 0, 7))
	bob := n.register(t, n.phoneOn(t, 1, 8))
	carol := n.register(t, n.phoneOn(t, 1, 9))
	aep, bep := n.login(t, alice, 0), n.login(t, bob, 0)
	g := n.createGroup(t, alice, aep, "abort", bob.user, carol.user).Group
	ev := bep.take(t, protocol.KindGroupEvent).(*pb.GroupEvent)
	n.ack(bob, bep, ev.Seq)
	n.close()

	var saved []byte
	rawUpdate(t, fs, "shard-1", func(db *pebble.DB) {
		v, closer, err := db.Get(userRecordKey(carol.user))
		must(err)
		saved = append([]byte(nil), v...)
		must(closer.Close())
		must(db.Set(userRecordKey(carol.user), []byte{0xff, 0xff, 0xff}, pebble.Sync))
	})

	n.open(2)
	aep, bep = n.login(t, alice, 0), n.login(t, bob, ev.Seq)
	n.submit(storage.Op{Kind: storage.OpSend, From: alice.user, FromDevice: alice.device, Group: g, CMID: 1, Body: []byte("all or nothing"), Conn: aep.ref})
	bep.wait(t, "bob's connection closed by the restart in place", func(e *endpoint) bool { return e.isClosed })
	if bep.closed != protocol.CodeShuttingDown {
		t.Fatalf("bob's connection closed with %v, want SHUTTING_DOWN", bep.closed)
	}
	for _, f := range bep.frames {
		if f.kind == protocol.KindMessage {
			t.Fatalf("bob got %+v from an aborted cycle", f.msg)
		}
	}
	if st := n.shards[1].Stats(); st.Aborts == 0 {
		t.Fatalf("shard 1 aborted no cycle: %+v", st)
	}
	n.close()

	rawUpdate(t, fs, "shard-1", func(db *pebble.DB) {
		must(db.Set(userRecordKey(carol.user), saved, pebble.Sync))
	})
	n.open(2)
	bep = n.login(t, bob, ev.Seq)
	cep := n.login(t, carol, 0)
	m := bep.take(t, protocol.KindMessage).(codec.Message)
	if m.Seq != ev.Seq+1 || string(m.Body) != "all or nothing" {
		t.Fatalf("bob got %+v at seq %d, want the message at seq %d", m, m.Seq, ev.Seq+1)
	}
	n.ack(bob, bep, m.Seq)
	cep.take(t, protocol.KindGroupEvent)
	if c := cep.take(t, protocol.KindMessage).(codec.Message); c.ID != m.ID {
		t.Fatalf("carol got %+v, want message %d", c, m.ID)
	}
}
