package storage_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol/pb"
	"github.com/parley-im/parley/storage"
)

// bodiesLeft logs a in on a fresh connection from cursor 0 and returns
// the bodies of the messages its inbox still holds, acknowledging none.
func (n *node) bodiesLeft(t *testing.T, a account) []string {
	t.Helper()
	ep := n.login(t, a, 0)
	var out []string
	for {
		switch m := ep.next(t, "entry or Synced").msg.(type) {
		case codec.Message:
			out = append(out, string(m.Body))
		case *pb.Synced:
			return out
		}
	}
}

// expectLeft restarts the node at the clock's time (a restart runs a
// maintenance sweep before any op) and checks what each of users still
// holds.
func (n *node) expectLeft(t *testing.T, when string, want []string, users ...account) {
	t.Helper()
	n.restart()
	for _, a := range users {
		if got := n.bodiesLeft(t, a); !slices.Equal(got, want) {
			t.Fatalf("%s: user %d/%d holds %q, want %q", when, a.user, a.device, got, want)
		}
	}
}

// dayStart returns the start (UTC) of the day t falls in.
func dayStart(t time.Time) time.Time { return t.Truncate(24 * time.Hour) }

// TestExpiryByDay: an inbox entry expires once the day it was appended on
// is past Config.Retention, never earlier, whichever cycle of that day
// appended it and whichever shard holds the user. The expiry index is
// written once per user and day, not in every cycle that appends, so the
// sweep must still end a day's entries exactly at its last one: here
// three cycles append on one day (the last a second before midnight) and
// two on the next. Bob (shard 0) has two devices, one acknowledging
// everything and one never, so only expiry deletes his entries; Carol
// (shard 1) never logs in.
func TestExpiryByDay(t *testing.T) {
	const retention = 48 * time.Hour
	n := newNode(t, 2, func(c *storage.Config) { c.Retention = retention })
	alice := n.register(t, n.phoneOn(t, 0, 1))
	bob := n.register(t, n.phoneOn(t, 0, 2))
	carol := n.register(t, n.phoneOn(t, 1, 3))
	n.onShard(t, bob, 0)
	n.onShard(t, carol, 1)
	aep, bep := n.login(t, alice, 0), n.login(t, bob, 0)
	bob2 := n.link(t, bob, bep, "second")

	day0 := dayStart(n.clock.Now())
	day1 := day0.Add(24 * time.Hour)
	at := []time.Time{
		day0.Add(12 * time.Hour), day0.Add(18 * time.Hour), day1.Add(-time.Second), // day 0, three cycles
		day1.Add(time.Second), day1.Add(time.Hour), // day 1
	}
	for i, when := range at {
		n.clock.Advance(when.Sub(n.clock.Now()))
		body := fmt.Sprintf("m%d", i+1)
		n.send(t, alice, aep, bob.user, uint64(2*i+1), body)
		n.send(t, alice, aep, carol.user, uint64(2*i+2), body)
		for {
			if m, ok := bep.next(t, "bob's copy of "+body).msg.(codec.Message); ok {
				n.ack(bob, bep, m.Seq)
				break
			}
		}
	}
	n.nothingMore(t, bob, bep) // bob's acks are applied

	all := []string{"m1", "m2", "m3", "m4", "m5"}
	n.expectLeft(t, "the day after", all, bob2, carol)
	// Day 0 reaches the retention period a second from now: nothing of
	// it may go yet.
	n.clock.Advance(day0.Add(retention - time.Second).Sub(n.clock.Now()))
	n.expectLeft(t, "a second before day 0 is past retention", all, bob2, carol)
	n.clock.Advance(time.Second)
	n.expectLeft(t, "day 0 past retention", all[3:], bob2, carol)
	n.clock.Advance(day1.Add(retention - time.Second).Sub(n.clock.Now()))
	n.expectLeft(t, "a second before day 1 is past retention", all[3:], bob2, carol)
	n.clock.Advance(time.Second)
	n.expectLeft(t, "day 1 past retention", nil, bob2, carol)

	// A user whose index was swept opens a new one on the next append.
	aep = n.login(t, alice, 0)
	n.send(t, alice, aep, carol.user, 100, "later")
	n.expectLeft(t, "after a later append", []string{"later"}, carol)
	n.clock.Advance(retention + 24*time.Hour)
	n.expectLeft(t, "the later day past retention", nil, carol)
}

// TestExpiryClockJump: a clock that jumps a year ahead for one append and
// comes back must not keep a user's entries past retention (the day's
// index record must not wait for the future day).
func TestExpiryClockJump(t *testing.T) {
	const retention = 48 * time.Hour
	const year = 365 * 24 * time.Hour
	n := newNode(t, 2, func(c *storage.Config) { c.Retention = retention })
	alice := n.register(t, n.phoneOn(t, 0, 1))
	bob := n.register(t, n.phoneOn(t, 1, 2))
	n.onShard(t, bob, 1)
	aep := n.login(t, alice, 0)
	n.send(t, alice, aep, bob.user, 1, "m1")
	n.clock.Advance(year)
	n.send(t, alice, aep, bob.user, 2, "glitch")
	n.clock.Advance(-year + 24*time.Hour)
	n.send(t, alice, aep, bob.user, 3, "m3")
	n.expectLeft(t, "the day after", []string{"m1", "glitch", "m3"}, bob)
	n.clock.Advance(10 * 24 * time.Hour)
	n.expectLeft(t, "ten days later, retention 48 h", nil, bob)
}

// TestExpiryFormat2Records: a database a format 2 parleyd wrote (an
// expiry record rewritten every cycle with the day's head, the user
// record naming no open day) still expires by day once opened as format 3,
// including for a user that then gets entries on a later day.
func TestExpiryFormat2Records(t *testing.T) {
	const retention = 48 * time.Hour
	n := newNode(t, 1, func(c *storage.Config) { c.Retention = retention })
	alice, bob := n.register(t, "+15550009101"), n.register(t, "+15550009102")
	aep := n.login(t, alice, 0)
	day0 := dayStart(n.clock.Now())
	day1 := day0.Add(24 * time.Hour)
	n.send(t, alice, aep, bob.user, 1, "m1")
	n.clock.Advance(time.Hour)
	n.send(t, alice, aep, bob.user, 2, "m2") // committed: the shard is idle
	if err := n.shards[0].AsFormat2(bob.user); err != nil {
		t.Fatal(err)
	}
	n.restart() // upgrades to format 3
	aep = n.login(t, alice, 0)
	n.clock.Advance(day1.Add(time.Hour).Sub(n.clock.Now()))
	n.send(t, alice, aep, bob.user, 3, "m3")

	n.clock.Advance(day0.Add(retention - time.Second).Sub(n.clock.Now()))
	n.expectLeft(t, "a second before day 0 is past retention", []string{"m1", "m2", "m3"}, bob)
	n.clock.Advance(time.Second)
	n.expectLeft(t, "day 0 past retention", []string{"m3"}, bob)
	n.clock.Advance(24 * time.Hour)
	n.expectLeft(t, "day 1 past retention", nil, bob)
}

// TestExpirySweepWritesOnlyChanges: the sweep that expires a user's open
// index record writes the user record only when entries go with it.
// Alice's only entry of day 1 is bob's read receipt, which she
// acknowledges at once, so when day 1 passes retention the sweep finds
// her open record with nothing left to delete: it deletes that record
// and writes nothing else. Her next entry, after a restart that forgot
// what the sweep saw, still opens a record and expires by its day.
func TestExpirySweepWritesOnlyChanges(t *testing.T) {
	const retention = 48 * time.Hour
	n := newNode(t, 1, func(c *storage.Config) { c.Retention = retention })
	alice, bob := n.register(t, "+15550009401"), n.register(t, "+15550009402")
	aep, bep := n.login(t, alice, 0), n.login(t, bob, 0)
	day1 := dayStart(n.clock.Now()).Add(24 * time.Hour)
	id := n.send(t, alice, aep, bob.user, 1, "m1")
	n.ack(bob, bep, bep.messages(t, 1)[0].Seq)
	ackReceipt := func(want pb.ReceiptType) {
		t.Helper()
		for {
			if r, ok := aep.next(t, "a receipt").msg.(codec.Receipt); ok {
				n.ack(alice, aep, r.Seq)
				if r.Type != want {
					t.Fatalf("alice got a %v receipt, want %v", r.Type, want)
				}
				break
			}
		}
	}
	ackReceipt(pb.ReceiptType_RECEIPT_DELIVERED)
	n.clock.Advance(day1.Add(time.Hour).Sub(n.clock.Now()))
	n.submit(storage.Op{Kind: storage.OpRead, User: alice.user, From: bob.user, UpTo: id, RID: 9, Conn: bep.ref})
	ackReceipt(pb.ReceiptType_RECEIPT_READ)
	n.nothingMore(t, alice, aep) // her ack is applied

	// Day 0 past retention: its records go (the message's, bob's index).
	// A restarted shard sweeps before any op: wait for each sweep to be
	// done before the clock moves on.
	n.clock.Advance(day1.Add(retention - 24*time.Hour).Sub(n.clock.Now()))
	n.restart()
	n.nothingMore(t, alice, newEndpoint(t))
	n.clock.Advance(24 * time.Hour) // day 1 past retention
	n.restart()
	n.nothingMore(t, alice, newEndpoint(t))
	if got := n.records(); got != 1 {
		t.Errorf("the sweep wrote %d records, want 1 (alice's index record deleted)", got)
	}

	n.restart()
	aep = n.login(t, alice, 0)
	bep = n.login(t, bob, 0)
	n.send(t, bob, bep, alice.user, 2, "later")
	n.expectLeft(t, "the day after", []string{"later"}, alice)
	n.clock.Advance(retention + 24*time.Hour)
	n.expectLeft(t, "the later day past retention", nil, alice)
}
