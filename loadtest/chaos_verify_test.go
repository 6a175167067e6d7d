package loadtest

import (
	"slices"
	"strings"
	"testing"

	"github.com/parley-im/parley/client"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// A small world for the verifier: users A, B and C with two devices
// each, a 1:1 message from A to B, group G created by A with B and C, a
// message of A's to it, C removed, a message of B's to it, and B's read
// mark on A's message, with every entry and receipt that owes.
const (
	userA, userB, userC = 4097, 8193, 12289
	groupG              = 4097 << 12
)

var (
	sendAB  = chaosSendKey{userA, 1, 1} // A → B, id 1001
	sendAG  = chaosSendKey{userA, 1, 2} // A → G, id 2001, gseq 3
	sendBG  = chaosSendKey{userB, 2, 1} // B → G, id 2003, gseq 5
	sendCG  = chaosSendKey{userC, 1, 1} // C → G after its removal: NOT_MEMBER
	sendAB2 = chaosSendKey{userA, 1, 3} // A → B again, in some cases
	readBA  = chaosReadKey{Reader: userB, Peer: userA}
	allDevs = []uint32{1, 2}
)

// world is the inbox of each user, in seq order (seqs are set by feed).
type world map[uint64][]client.Event

func msg(k chaosSendKey, id uint64, to, group, gseq uint64) client.Message {
	return client.Message{ID: id, From: k.User, FromDevice: k.Device, Body: appendChaosBody(nil, k), To: to, Group: group, GSeq: gseq}
}

func gev(id, gseq uint64, op pb.GroupOp, members ...uint64) client.GroupEvent {
	return client.GroupEvent{ID: id, Group: groupG, GSeq: gseq, Actor: userA, Op: op, Members: members}
}

func baseWorld() world {
	create := gev(3001, 1, pb.GroupOp_GROUP_OP_CREATE, userA)
	add := gev(3002, 2, pb.GroupOp_GROUP_OP_ADD, userB, userC)
	remove := gev(3004, 4, pb.GroupOp_GROUP_OP_REMOVE, userC)
	return world{
		userA: {create, add, msg(sendAB, 1001, userB, 0, 0), msg(sendAG, 2001, 0, groupG, 3), remove, msg(sendBG, 2003, 0, groupG, 5),
			client.Receipt{Peer: userB, Type: pb.ReceiptType_RECEIPT_DELIVERED, UpTo: 1001},
			client.Receipts{Group: groupG, Type: pb.ReceiptType_RECEIPT_DELIVERED, Items: []client.ReceiptItem{{Peer: userB, UpTo: 2001}, {Peer: userC, UpTo: 2001}}},
			client.Receipt{Peer: userB, Type: pb.ReceiptType_RECEIPT_READ, UpTo: 1001}},
		userB: {add, msg(sendAB, 1001, 0, 0, 0), msg(sendAG, 2001, 0, groupG, 3), remove, msg(sendBG, 2003, 0, groupG, 5),
			client.Receipts{Group: groupG, Type: pb.ReceiptType_RECEIPT_DELIVERED, Items: []client.ReceiptItem{{Peer: userA, UpTo: 2003}}},
			client.Receipt{Peer: userA, Type: pb.ReceiptType_RECEIPT_SELF_READ, UpTo: 1001}},
		userC: {add, msg(sendAG, 2001, 0, groupG, 3), remove},
	}
}

// withSeq returns ev with its seq set.
func withSeq(ev client.Event, seq uint64) client.Event {
	switch e := ev.(type) {
	case client.Message:
		e.Seq = seq
		return e
	case client.Receipt:
		e.Seq = seq
		return e
	case client.Receipts:
		e.Seq = seq
		return e
	case client.GroupEvent:
		e.Seq = seq
		return e
	}
	return ev
}

// feed builds a verifier of the world: its sends with their outcomes,
// B's read mark, and every device's events. mutate, if set, may change
// what one device gets (after seqs are set).
func feed(w world, mutate func(user uint64, dev uint32, evs []client.Event) []client.Event) *chaosVerifier {
	v := newChaosVerifier()
	v.addGroup(groupG)
	for _, s := range []struct {
		k         chaosSendKey
		to, group uint64
		cmid, id  uint64
	}{{sendAB, userB, 0, 1, 1001}, {sendAG, 0, groupG, 2, 2001}, {sendBG, 0, groupG, 1, 2003}} {
		v.sendStarted(s.k, s.to, s.group)
		v.sendCMID(s.k, s.cmid)
		v.sendDone(s.k, client.Sent{CMID: s.cmid, ID: s.id}, nil)
	}
	v.sendStarted(sendCG, 0, groupG)
	v.sendDone(sendCG, client.Sent{CMID: 1}, &client.ServerError{Code: protocol.CodeNotMember})
	v.readStarted(readBA, 1001)
	v.readDone(readBA, 1001, nil)
	for _, u := range []uint64{userA, userB, userC} {
		var evs []client.Event
		for i, ev := range w[u] {
			evs = append(evs, withSeq(ev, uint64(i+1)))
		}
		for _, d := range allDevs {
			v.addDevice(u, d)
			got := slices.Clone(evs)
			if mutate != nil {
				got = mutate(u, d, got)
			}
			k := chaosDevKey{u, d}
			v.record(k, client.Connected{Cursor: 0})
			for _, ev := range got {
				v.record(k, ev)
			}
			v.record(k, client.Synced{Seq: uint64(len(got))})
		}
	}
	v.groupFinal(client.GroupInfo{ID: groupG, GSeq: 5, Members: []client.GroupMember{{User: userA}, {User: userB}}})
	return v
}

// TestChaosVerifierPasses: the world as it should be has no violation,
// and every delivery and receipt it owes is counted.
func TestChaosVerifierPasses(t *testing.T) {
	r := feed(baseWorld(), nil).check(true)
	if r.total() != 0 || r.outstanding != 0 {
		t.Fatalf("%d violations, %d outstanding: %v", r.total(), r.outstanding, r.examples)
	}
	// A→B: 2 devices of B + 2 of A; A→G at gseq 3: A, B, C; B→G at gseq
	// 5: A, B; events: CREATE to A, ADD and REMOVE to all three.
	if want := 4 + 6 + 4 + 2 + 6 + 6; r.expected != want || r.delivered != want {
		t.Errorf("%d deliveries owed, %d made; want %d", r.expected, r.delivered, want)
	}
	if r.acked != 3 || r.failed != 1 || r.unanswered != 0 || r.reads != 1 || r.events != 3 {
		t.Errorf("acked %d failed %d unanswered %d reads %d events %d", r.acked, r.failed, r.unanswered, r.reads, r.events)
	}
	// DELIVERED at A from B (1:1 and G) and C (G), READ at A: 4 × 2
	// devices; DELIVERED at B from A in G, SELF_READ at B: 2 × 2.
	if r.receipts != 12 {
		t.Errorf("%d receipts owed, want 12", r.receipts)
	}
}

// TestChaosVerifierFinds: each broken promise is found, with its kind.
func TestChaosVerifierFinds(t *testing.T) {
	drop := func(user uint64, dev uint32, match func(client.Event) bool) func(uint64, uint32, []client.Event) []client.Event {
		return func(u uint64, d uint32, evs []client.Event) []client.Event {
			if u == user && d == dev {
				return slices.DeleteFunc(evs, match)
			}
			return evs
		}
	}
	isMsg := func(k chaosSendKey) func(client.Event) bool {
		return func(ev client.Event) bool {
			m, ok := ev.(client.Message)
			got, _ := parseChaosBody(m.Body)
			return ok && got == k
		}
	}
	appendTo := func(user uint64, evs ...client.Event) func(world) {
		return func(w world) { w[user] = append(w[user], evs...) }
	}
	for _, tc := range []struct {
		name   string
		change func(world)
		mutate func(uint64, uint32, []client.Event) []client.Event
		kind   string
		text   string
		// after changes the verifier after feeding it.
		after func(*chaosVerifier)
	}{
		{name: "a group message never reaches a member's device", kind: vLost, text: "never reached user 4097 devices [2]",
			mutate: func(u uint64, d uint32, evs []client.Event) []client.Event {
				if u == userA && d == 2 { // keep the seqs: the entry at seq 6 is a receipt instead
					evs[5] = withSeq(client.Receipt{Peer: userB, Type: pb.ReceiptType_RECEIPT_DELIVERED, UpTo: 1001}, 6)
				}
				return evs
			}},
		{name: "a group message reaches nobody", kind: vLost, text: "reached no member",
			change: func(w world) {
				for u := range w {
					w[u] = slices.DeleteFunc(w[u], isMsg(sendBG))
				}
			}},
		{name: "a copy never reaches the sender's device", kind: vSkipped, mutate: drop(userA, 1, isMsg(sendAB))},
		{name: "a message arrives twice", kind: vDuplicated, text: "arrived twice", change: appendTo(userB, msg(sendAB, 1001, 0, 0, 0))},
		{name: "devices of a user disagree on the order", kind: vReordered, text: "on device",
			mutate: func(u uint64, d uint32, evs []client.Event) []client.Event {
				if u == userB && d == 2 {
					evs[1], evs[2] = withSeq(evs[2], 2), withSeq(evs[1], 3)
				}
				return evs
			}},
		{name: "ids go backwards", kind: vReordered, text: "below the one before",
			change: func(w world) {
				w[userA] = append(w[userA], msg(sendAB2, 900, userB, 0, 0))
				w[userB] = append(w[userB], msg(sendAB2, 900, 0, 0, 0))
			},
			after: func(v *chaosVerifier) {
				v.sendStarted(sendAB2, userB, 0)
				v.sendDone(sendAB2, client.Sent{CMID: 3, ID: 900}, nil)
			}},
		{name: "two members see different entries at one gseq", kind: vGroupOrder, text: "gseq 3",
			change: func(w world) { w[userC][1] = msg(sendBG, 2003, 0, groupG, 3) }},
		{name: "a removed member gets a later message", kind: vUnexpected, text: "not a member then",
			change: appendTo(userC, msg(sendBG, 2003, 0, groupG, 5))},
		{name: "a send that failed arrives", kind: vUnexpected, text: "though it failed",
			change: appendTo(userB, msg(sendCG, 2005, 0, groupG, 6))},
		{name: "a message that is none of the run's", kind: vUnexpected, text: "none of the run's",
			change: appendTo(userB, client.Message{ID: 5, From: userC, FromDevice: 1, Body: []byte("hello")})},
		{name: "a read receipt never reaches the sender", kind: vReceipt, text: "READ from user 8193",
			change: func(w world) { w[userA] = w[userA][:len(w[userA])-1] }},
		{name: "a delivered receipt names more than was delivered", kind: vUnexpected, text: "a receipt names id",
			change: appendTo(userA, client.Receipt{Peer: userB, Type: pb.ReceiptType_RECEIPT_DELIVERED, UpTo: 1002})},
		{name: "a receipt nothing caused", kind: vUnexpected, text: "nothing caused",
			change: appendTo(userC, client.Receipt{Peer: userA, Type: pb.ReceiptType_RECEIPT_READ, UpTo: 1})},
		{name: "a send is never answered", kind: vUnanswered, text: "never answered",
			after: func(v *chaosVerifier) { v.sendStarted(chaosSendKey{userB, 1, 7}, userA, 0) }},
		{name: "the group's members differ from its events", kind: vGroupOrder, text: "GROUP_GET says",
			change: func(w world) {
				for u := range w {
					w[u] = slices.DeleteFunc(w[u], func(ev client.Event) bool {
						e, ok := ev.(client.GroupEvent)
						return ok && e.Op == pb.GroupOp_GROUP_OP_REMOVE
					})
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := baseWorld()
			if tc.change != nil {
				tc.change(w)
			}
			v := feed(w, tc.mutate)
			if tc.after != nil {
				tc.after(v)
			}
			r := v.check(true)
			if r.counts[tc.kind] == 0 {
				t.Fatalf("no %q violation; found %v", tc.kind, r.examples)
			}
			if tc.text != "" && !strings.Contains(strings.Join(r.examples[tc.kind], "\n"), tc.text) {
				t.Errorf("%q examples lack %q: %v", tc.kind, tc.text, r.examples[tc.kind])
			}
			if p := v.check(false); tc.kind == vLost && p.outstanding == 0 {
				t.Error("a progress check counts nothing outstanding")
			}
		})
	}
}

// TestChaosVerifierRedelivery: a new client getting again, at the same
// seq, an entry its ack had not covered is allowed; other content at a
// seq already seen is a violation.
func TestChaosVerifierRedelivery(t *testing.T) {
	v := feed(baseWorld(), nil)
	k := chaosDevKey{userB, 1}
	v.record(k, client.Connected{Cursor: 3})
	v.record(k, withSeq(baseWorld()[userB][3], 4))
	if r := v.check(true); r.total() != 0 || v.redelivered() != 1 {
		t.Fatalf("%d violations (%v), %d redelivered; want 0 and 1", r.total(), r.examples, v.redelivered())
	}
	v.record(k, withSeq(client.Receipt{Peer: userA, UpTo: 1}, 4))
	if r := v.check(true); r.counts[vDuplicated] != 1 {
		t.Fatalf("other content at a seq seen: %v", r.examples)
	}
}

// TestChaosVerifierReadMarks: a read mark with no answer before its
// client closed is unanswered; a refusal is unexpected; an OK owes
// receipts.
func TestChaosVerifierReadMarks(t *testing.T) {
	v := feed(baseWorld(), nil)
	k := chaosReadKey{Reader: userC, Peer: userA, Group: groupG}
	v.readStarted(k, 2001)
	if r := v.check(false); r.outstanding != 1 {
		t.Fatalf("outstanding %d with a mark unanswered, want 1", r.outstanding)
	}
	v.readDone(k, 2001, client.ErrClosed)
	v.readStarted(k, 2001)
	v.readDone(k, 2001, &client.ServerError{Code: protocol.CodeNotFound})
	r := v.check(true)
	if r.counts[vUnanswered] != 1 || r.counts[vUnexpected] != 1 {
		t.Fatalf("unanswered %d, unexpected %d: %v", r.counts[vUnanswered], r.counts[vUnexpected], r.examples)
	}
	v.readStarted(k, 2001)
	v.readDone(k, 2001, nil)
	if r := v.check(true); r.counts[vReceipt] != 4 {
		t.Errorf("receipts missing %d, want 4 (READ at A's two devices, SELF_READ at C's): %v", r.counts[vReceipt], r.examples)
	}
}

// TestChaosBody: bodies name their send and nothing else parses.
func TestChaosBody(t *testing.T) {
	k := chaosSendKey{User: 1 << 40, Device: 3, N: 77}
	if got, ok := parseChaosBody(appendChaosBody(nil, k)); !ok || got != k {
		t.Errorf("round trip: %v %v", got, ok)
	}
	for _, b := range []string{"", "chaos", "chaos 1.2", "chaos 1.2.0", "hello 1.2.3"} {
		if _, ok := parseChaosBody([]byte(b)); ok {
			t.Errorf("%q parsed", b)
		}
	}
}
