package storage_test

import (
	"fmt"
	"testing"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
)

// records returns the records the node's shards committed (their summed
// Stats.Records).
func (n *node) records() uint64 {
	var r uint64
	for _, s := range n.shards {
		r += s.Stats().Records
	}
	return r
}

// TestRecordsPerMessage counts the records a 1:1 text and a group
// message's fan-out write, with every device online and acknowledging
// (the load tester's pairs and groups scenarios at light load: each op
// its own cycle here), after a first message has written what is written
// once per user and day. It fails when the write set grows past what it
// is now; run it with -v for the figures.
func TestRecordsPerMessage(t *testing.T) {
	const maxPerText, maxPerMember, maxPerMemberBatched = 9, 5.25, 3.38
	n := newNode(t, 1, nil)
	alice, bob := n.register(t, "+15550009201"), n.register(t, "+15550009202")
	aep, bep := n.login(t, alice, 0), n.login(t, bob, 0)
	aep.take(t, protocol.KindSynced)
	bep.take(t, protocol.KindSynced)
	text := func(cmid uint64) {
		n.send(t, alice, aep, bob.user, cmid, "hello")
		n.ack(bob, bep, bep.messages(t, 1)[0].Seq)
		n.ack(alice, aep, aep.take(t, protocol.KindReceipt).(codec.Receipt).Seq)
		n.nothingMore(t, alice, aep)
	}
	text(1)
	const texts = 20
	before := n.records()
	for i := range texts {
		text(uint64(2 + i))
	}
	perText := float64(n.records()-before) / texts
	t.Logf("1:1 text, its delivered receipt and both acks: %.2f records (3 cycles)", perText)
	if perText > maxPerText {
		t.Errorf("a 1:1 text writes %.2f records, want at most %v", perText, maxPerText)
	}

	const members = 32
	var ms []account
	var eps []*endpoint
	var ids []uint64
	for i := range members {
		a := n.register(t, fmt.Sprintf("+1555000930%02d", i))
		ep := n.login(t, a, 0)
		ep.take(t, protocol.KindSynced)
		ms, eps, ids = append(ms, a), append(eps, ep), append(ids, a.user)
	}
	g := n.createGroup(t, alice, aep, "fan", ids...).Group
	fanOut := func(cmid uint64) {
		n.groupSend(t, alice, aep, g, cmid, "to all")
		for i, ep := range eps {
			for {
				if m, ok := ep.next(t, "the group message").msg.(codec.Message); ok {
					n.ack(ms[i], ep, m.Seq)
					break
				}
			}
			n.nothingMore(t, ms[i], ep) // each ack its own cycle: a light load
		}
	}
	fanOut(100)
	before = n.records()
	const sends = 5
	for i := range sends {
		fanOut(uint64(101 + i))
	}
	perMember := float64(n.records()-before) / (sends * members)
	t.Logf("group of %d, per member and message (its ack and delivered receipt included): %.2f records", members, perMember)
	if perMember > maxPerMember {
		t.Errorf("a group message writes %.2f records per member, want at most %v", perMember, maxPerMember)
	}

	// The members' acks in two cycles, half in each, as under load: the
	// body's reference count is rewritten once per cycle, and the body goes
	// with the last reference.
	before = n.records()
	for i := range sends {
		n.groupSend(t, alice, aep, g, uint64(200+i), "to all")
		seqs := make([]uint64, members)
		var gseq uint64
		for j, ep := range eps {
			for {
				if m, ok := ep.next(t, "the group message").msg.(codec.Message); ok {
					seqs[j], gseq = m.Seq, m.GSeq
					break
				}
			}
		}
		for _, half := range [][]int{{0, members / 2}, {members / 2, members}} {
			resume := n.shards[0].Pause()
			for j := half[0]; j < half[1]; j++ {
				n.ack(ms[j], eps[j], seqs[j])
			}
			resume()
			n.nothingMore(t, ms[half[1]-1], eps[half[1]-1])
		}
		if has, err := n.shards[0].HasBody(g, gseq); err != nil || has {
			t.Fatalf("group message %d: body kept (%v, %v) after every member acknowledged it", gseq, has, err)
		}
	}
	perMember = float64(n.records()-before) / (sends * members)
	t.Logf("group of %d, the acks in two cycles, per member and message: %.2f records", members, perMember)
	if perMember > maxPerMemberBatched {
		t.Errorf("a group message acknowledged in two cycles writes %.2f records per member, want at most %v", perMember, maxPerMemberBatched)
	}
}

// TestCursorAtDeletedReadsBack: a device's ack that deletion reaches
// writes no cursor record (the user record's Deleted stands for it:
// TestRecordsPerMessage counts the record that is no longer written), yet
// the device's cursor reads back as acknowledged, through Inspect and
// after a restart: a single device, and the last of two devices to ack.
// It checks the read-back only; it stays green with the record written.
func TestCursorAtDeletedReadsBack(t *testing.T) {
	n := newNode(t, 1, nil)
	alice, bob := n.register(t, "+15550009401"), n.register(t, "+15550009402")
	aep, bep := n.login(t, alice, 0), n.login(t, bob, 0)
	bep.take(t, protocol.KindSynced)
	for i := range 3 {
		n.send(t, alice, aep, bob.user, uint64(i+1), "x")
	}
	n.ack(bob, bep, bep.messages(t, 3)[2].Seq)
	n.nothingMore(t, bob, bep)
	bob2 := n.link(t, bob, bep, "second")
	b2ep := n.login(t, bob2, 0)
	b2ep.take(t, protocol.KindSynced)
	n.send(t, alice, aep, bob.user, 4, "y")
	n.ack(bob, bep, bep.messages(t, 1)[0].Seq)
	n.nothingMore(t, bob, bep)
	n.ack(bob2, b2ep, b2ep.messages(t, 1)[0].Seq)
	n.nothingMore(t, bob2, b2ep)
	check := func(when string) {
		t.Helper()
		info, err := n.shards[0].Inspect(bob.user, "")
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range info.Devices {
			if d.Cursor != 4 || d.Queued != 0 {
				t.Fatalf("%s: device %d cursor %d queued %d, want 4 and 0", when, d.ID, d.Cursor, d.Queued)
			}
		}
	}
	check("before a restart")
	n.restart()
	check("after a restart")
	for _, a := range []account{bob, bob2} {
		ep := n.login(t, a, 0)
		if c := ep.session.Cursor; c != 4 {
			t.Fatalf("device %d resumes at %d, want 4", a.device, c)
		}
		ep.take(t, protocol.KindSynced)
	}
}
