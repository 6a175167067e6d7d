package storage_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
	"github.com/parley-im/parley/storage"
)

// answer submits the request op (its RID set) and waits for its answer on
// ep: nil for Ok, the Error otherwise. Other frames stay for the test.
func (n *node) answer(t *testing.T, ep *endpoint, op storage.Op) *pb.Error {
	t.Helper()
	n.submit(op)
	var got *pb.Error
	ep.wait(t, fmt.Sprintf("answer to rid %d", op.RID), func(e *endpoint) bool {
		for i, f := range e.frames {
			switch m := f.msg.(type) {
			case *pb.Ok:
				if m.Rid != op.RID {
					continue
				}
			case *pb.Error:
				if m.Rid != op.RID {
					continue
				}
				got = m
			default:
				continue
			}
			e.frames = append(e.frames[:i:i], e.frames[i+1:]...)
			return true
		}
		return false
	})
	return got
}

// revoke asks, as from's device on ep, to delete message id sent to user
// to (or to group) and returns the error code, 0 for Ok.
func (n *node) revoke(t *testing.T, from account, ep *endpoint, to, group, id uint64) protocol.Code {
	t.Helper()
	n.rid++
	e := n.answer(t, ep, storage.Op{Kind: storage.OpRevoke, User: to, Group: group, From: from.user, FromDevice: from.device, UpTo: id, RID: n.rid, Conn: ep.ref})
	if e == nil {
		return 0
	}
	return e.Code
}

// entries takes a's stream up to Synced, acknowledging as it goes, and
// returns the messages and Revoked entries as short texts: "M <body>",
// "R <id>", or "R <id> g<gseq>" for a group's.
func (n *node) entries(t *testing.T, a account, ep *endpoint) []string {
	t.Helper()
	var out []string
	for {
		f := ep.next(t, "entry or Synced")
		switch m := f.msg.(type) {
		case codec.Message:
			out = append(out, "M "+string(m.Body))
			n.ack(a, ep, m.Seq)
		case *pb.Revoked:
			e := fmt.Sprintf("R %d", m.Id)
			if m.Group != 0 {
				e += fmt.Sprintf(" g%d", m.Gseq)
			}
			out = append(out, e)
			n.ack(a, ep, m.Seq)
		case *pb.GroupEvent:
			n.ack(a, ep, m.Seq)
		case codec.Receipt:
			n.ack(a, ep, m.Seq)
		case *pb.Synced:
			return out
		}
	}
}

// entry waits for the next entry of ep and acknowledges it.
func (n *node) entry(t *testing.T, a account, ep *endpoint) any {
	t.Helper()
	for {
		f := ep.next(t, "an entry")
		switch m := f.msg.(type) {
		case codec.Message:
			n.ack(a, ep, m.Seq)
			return m
		case *pb.Revoked:
			n.ack(a, ep, m.Seq)
			return m
		case codec.Receipt:
			n.ack(a, ep, m.Seq)
			return m
		}
	}
}

// TestRevoke1to1 is delete for everyone on a 1:1 message ([S-18-2]) for a
// recipient with two devices on another shard than the sender: the device
// that had the message gets the notice after it, once; the device that
// had not never gets the message, across a restart, and gets the notice
// in its place. The sender's other device gets its copy and then the
// notice with to set.
func TestRevoke1to1(t *testing.T) {
	n := newNode(t, 2, nil)
	alice := n.register(t, n.phoneOn(t, 0, 1))
	bob := n.register(t, n.phoneOn(t, 1, 2))
	n.onShard(t, alice, 0)
	n.onShard(t, bob, 1)
	aep := n.login(t, alice, 0)
	alice2 := n.link(t, alice, aep, "alice laptop")
	bep := n.login(t, bob, 0)
	bob2 := n.link(t, bob, bep, "bob tablet")

	id := n.send(t, alice, aep, bob.user, 1, "oops")
	if m := n.entry(t, bob, bep).(codec.Message); m.ID != id {
		t.Fatalf("bob's phone got %d, want %d", m.ID, id)
	}
	kept := n.send(t, alice, aep, bob.user, 2, "kept")
	if m := n.entry(t, bob, bep).(codec.Message); m.ID != kept {
		t.Fatalf("bob's phone got %d, want %d", m.ID, kept)
	}

	if code := n.revoke(t, alice, aep, bob.user, 0, id); code != 0 {
		t.Fatalf("revoke: %v", code)
	}
	// The phone had it: the notice follows, once.
	if r, ok := n.entry(t, bob, bep).(*pb.Revoked); !ok || r.Id != id || r.From != alice.user || r.To != 0 || r.Group != 0 {
		t.Fatalf("bob's phone got %+v, want the notice for %d", r, id)
	}
	// A repeated revoke changes nothing.
	if code := n.revoke(t, alice, aep, bob.user, 0, id); code != 0 {
		t.Fatalf("second revoke: %v", code)
	}
	n.nothingMore(t, bob, bep)

	n.restart()
	// The tablet never got it: the notice sits in its place, then the one
	// appended for the phone; never the message.
	b2ep := n.login(t, bob2, 0)
	got := n.entries(t, bob2, b2ep)
	want := []string{fmt.Sprintf("R %d", id), "M kept", fmt.Sprintf("R %d", id)}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("bob's tablet got %v, want %v", got, want)
	}
	// The sender's laptop: its copies, then the notice naming bob.
	a2ep := n.login(t, alice2, 0)
	ownWant := []string{"M oops", "M kept", fmt.Sprintf("R %d", id)}
	if got := n.entries(t, alice2, a2ep); fmt.Sprint(got) != fmt.Sprint(ownWant) {
		t.Fatalf("alice's laptop got %v, want %v", got, ownWant)
	}
}

// TestRevokeNeverDelivered: a message no device fetched is replaced by the
// notice, which follows it too ([S-18-2]): the device never gets the
// message.
func TestRevokeNeverDelivered(t *testing.T) {
	n := newNode(t, 1, nil)
	alice, bob := n.register(t, "+15550007001"), n.register(t, "+15550007002")
	aep := n.login(t, alice, 0)
	id := n.send(t, alice, aep, bob.user, 1, "never seen")
	if code := n.revoke(t, alice, aep, bob.user, 0, id); code != 0 {
		t.Fatalf("revoke: %v", code)
	}
	bep := n.login(t, bob, 0)
	if got, want := n.entries(t, bob, bep), []string{fmt.Sprintf("R %d", id), fmt.Sprintf("R %d", id)}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("bob got %v, want %v", got, want)
	}
}

// TestRevokeRefused: the bad cases of [S-18-1], each with its code.
func TestRevokeRefused(t *testing.T) {
	n := newNode(t, 2, nil)
	alice, bob, carol := n.register(t, "+15550007101"), n.register(t, "+15550007102"), n.register(t, "+15550007103")
	aep, cep := n.login(t, alice, 0), n.login(t, carol, 0)
	id := n.send(t, alice, aep, bob.user, 1, "hello")
	for _, c := range []struct {
		name     string
		by       account
		ep       *endpoint
		to, id   uint64
		group    uint64
		wantCode protocol.Code
	}{
		{"another's message", carol, cep, bob.user, id, 0, protocol.CodeNotSender},
		{"an unknown id", alice, aep, bob.user, id + 1, 0, protocol.CodeMessageNotFound},
		{"to the wrong user", alice, aep, carol.user, id, 0, protocol.CodeMessageNotFound},
		{"to a user that does not exist", alice, aep, bob.user + 1<<20, id, 0, protocol.CodeMessageNotFound},
		{"in a group that does not exist", alice, aep, 0, id, 1 << 20, protocol.CodeNotMember},
	} {
		if got := n.revoke(t, c.by, c.ep, c.to, c.group, c.id); got != c.wantCode {
			t.Errorf("revoking %s: %v, want %v", c.name, got, c.wantCode)
		}
	}
	n.clock.Advance(48*time.Hour + time.Minute)
	if got := n.revoke(t, alice, aep, bob.user, 0, id); got != protocol.CodeRevokeExpired {
		t.Errorf("revoking after the limit: %v, want REVOKE_EXPIRED", got)
	}
	// Nothing reached bob but the message.
	bep := n.login(t, bob, 0)
	if got := n.entries(t, bob, bep); fmt.Sprint(got) != "[M hello]" {
		t.Fatalf("bob got %v", got)
	}
}

// TestRevokeGroup: a group message deleted for everyone ([S-18-3]): the
// member whose device had it gets the notice after it; the member on
// another shard who had not gets the notice in its place, across a
// restart; the sender's other device too. A non-member cannot delete.
func TestRevokeGroup(t *testing.T) {
	n := newNode(t, 2, nil)
	alice := n.register(t, n.phoneOn(t, 0, 11))
	bob := n.register(t, n.phoneOn(t, 0, 12))
	carol := n.register(t, n.phoneOn(t, 1, 13))
	dave := n.register(t, n.phoneOn(t, 1, 14))
	aep := n.login(t, alice, 0)
	alice2 := n.link(t, alice, aep, "alice laptop")
	n.rid++
	n.submit(storage.Op{Kind: storage.OpGroupCreate, User: alice.user, Name: "g", Users: []uint64{bob.user, carol.user}, RID: n.rid, Conn: aep.ref})
	g := aep.take(t, protocol.KindGroupInfo).(*pb.GroupInfo).Group
	bep := n.login(t, bob, 0)
	n.entries(t, bob, bep) // the group's events

	id := n.sendOnly(t, aep, storage.Op{Kind: storage.OpSend, From: alice.user, FromDevice: alice.device, Group: g, CMID: 1, Body: []byte("oops"), Conn: aep.ref})
	var m codec.Message
	for {
		if e, ok := n.entry(t, bob, bep).(codec.Message); ok {
			m = e
			break
		}
	}
	if m.ID != id {
		t.Fatalf("bob got %d, want %d", m.ID, id)
	}
	dep := n.login(t, dave, 0)
	if got := n.revoke(t, dave, dep, 0, g, id); got != protocol.CodeNotMember {
		t.Fatalf("a non-member deleting: %v, want NOT_MEMBER", got)
	}
	if got := n.revoke(t, alice, aep, 0, g, id); got != 0 {
		t.Fatalf("revoke: %v", got)
	}
	r, ok := n.entry(t, bob, bep).(*pb.Revoked)
	if !ok || r.Id != id || r.Group != g || r.MessageGseq != m.GSeq || r.Gseq <= m.GSeq {
		t.Fatalf("bob got %+v, want the notice for %d (gseq %d)", r, id, m.GSeq)
	}

	n.restart()
	// Carol's device never fetched it: the notice takes its place, with
	// the message's gseq, and the one with the deletion's gseq follows.
	cep := n.login(t, carol, 0)
	inPlace, after := fmt.Sprintf("R %d g%d", id, m.GSeq), fmt.Sprintf("R %d g%d", id, r.Gseq)
	if got := n.entries(t, carol, cep); fmt.Sprint(got) != fmt.Sprint([]string{inPlace, after}) {
		t.Fatalf("carol got %v, want %v", got, []string{inPlace, after})
	}
	// Alice's laptop has the group's whole sequence ([S-16-6]).
	a2ep := n.login(t, alice2, 0)
	if got := n.entries(t, alice2, a2ep); fmt.Sprint(got) != fmt.Sprint([]string{inPlace, after}) {
		t.Fatalf("alice's laptop got %v, want %v", got, []string{inPlace, after})
	}
}
