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

// setTimer sets, as a, the timer of the conversation with user to (or of
// group) and returns the error code, 0 for Ok.
func (n *node) setTimer(t *testing.T, a account, ep *endpoint, to, group uint64, ttl uint32) protocol.Code {
	t.Helper()
	n.rid++
	if e := n.answer(t, ep, storage.Op{Kind: storage.OpSetTimer, User: to, Group: group, From: a.user, TTL: ttl, RID: n.rid, Conn: ep.ref}); e != nil {
		return e.Code
	}
	return 0
}

// stream takes a's stream up to Synced, acknowledging, and returns each
// entry as a short text: "M <body> ttl" for a message, "T <peer> <ttl>"
// for a 1:1 timer change, "T g<gseq> <ttl>" for a group's, "E" for a
// group event.
func (n *node) stream(t *testing.T, a account, ep *endpoint) []string {
	t.Helper()
	return n.streamN(t, a, ep, -1)
}

// streamN is stream for the next count entries (not counting receipts);
// count -1 takes them up to Synced.
func (n *node) streamN(t *testing.T, a account, ep *endpoint, count int) []string {
	t.Helper()
	var out []string
	for len(out) != count {
		f := ep.next(t, "entry or Synced")
		var seq uint64
		switch m := f.msg.(type) {
		case codec.Message:
			out, seq = append(out, fmt.Sprintf("M %s %d", m.Body, m.TTL)), m.Seq
		case *pb.Timer:
			if m.Group != 0 {
				out = append(out, fmt.Sprintf("T g%d %d", m.Gseq, m.TtlS))
			} else {
				out = append(out, fmt.Sprintf("T %d %d", m.Peer, m.TtlS))
			}
			seq = m.Seq
		case *pb.GroupEvent:
			out, seq = append(out, "E"), m.Seq
		case codec.Receipt:
			seq = m.Seq
		case *pb.Receipts:
			seq = m.Seq
		case *pb.Synced:
			if count < 0 {
				return out
			}
		}
		if seq != 0 {
			n.ack(a, ep, seq)
		}
	}
	return out
}

// TestDisappearing1to1: a timer either user of a conversation sets reaches
// both sides' devices ([S-18-9]); the messages both send afterwards carry
// it, copies too ([S-18-10]); once they expire the server deletes the
// copies no device fetched, on both shards, across a restart, and a
// device that fetches later sees a gap. Turned off, messages carry none.
func TestDisappearing1to1(t *testing.T) {
	n := newNode(t, 2, nil)
	alice := n.register(t, n.phoneOn(t, 0, 41))
	bob := n.register(t, n.phoneOn(t, 1, 42))
	aep := n.login(t, alice, 0)
	laptop := n.link(t, alice, aep, "alice laptop")
	bep := n.login(t, bob, 0)
	tablet := n.link(t, bob, bep, "bob tablet")

	if code := n.setTimer(t, alice, aep, bob.user, 0, 3600); code != 0 {
		t.Fatalf("set timer: %v", code)
	}
	if code := n.setTimer(t, bob, bep, alice.user, 0, 3600); code != 0 {
		t.Fatalf("set the same timer: %v", code)
	}
	if got, want := n.streamN(t, bob, bep, 1), []string{fmt.Sprintf("T %d 3600", alice.user)}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("bob's phone got %v, want %v", got, want)
	}
	n.send(t, alice, aep, bob.user, 1, "burn after reading")
	n.send(t, bob, bep, alice.user, 1, "noted")
	if m := n.nextMessage(t, bob, bep); m.TTL != 3600 {
		t.Fatalf("bob's phone got %+v, want ttl 3600", m)
	}
	if m := n.nextMessage(t, alice, aep); string(m.Body) != "burn after reading" || m.TTL != 3600 {
		t.Fatalf("alice's phone got %+v, want her copy with ttl 3600", m)
	}
	if m := n.nextMessage(t, alice, aep); string(m.Body) != "noted" || m.TTL != 3600 {
		t.Fatalf("alice's phone got %+v, want bob's with ttl 3600", m)
	}

	n.clock.Advance(time.Hour + 2*time.Second)
	n.restart() // the maintenance walk runs at start
	// The tablet and the laptop never fetched the messages: gone.
	tep := n.login(t, tablet, 0)
	if got, want := n.stream(t, tablet, tep), []string{fmt.Sprintf("T %d 3600", alice.user)}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("bob's tablet got %v, want %v", got, want)
	}
	lep := n.login(t, laptop, 0)
	if got, want := n.stream(t, laptop, lep), []string{fmt.Sprintf("T %d 3600", bob.user)}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("alice's laptop got %v, want %v", got, want)
	}

	aep = n.login(t, alice, 0)
	n.stream(t, alice, aep)
	if code := n.setTimer(t, alice, aep, bob.user, 0, 0); code != 0 {
		t.Fatalf("timer off: %v", code)
	}
	n.send(t, alice, aep, bob.user, 2, "for the record")
	if got, want := n.streamN(t, tablet, tep, 2), []string{fmt.Sprintf("T %d 0", alice.user), "M for the record 0"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("bob's tablet got %v, want %v", got, want)
	}

	if code := n.setTimer(t, alice, aep, 1<<40, 0, 60); code != protocol.CodeNotFound {
		t.Fatalf("timer with nobody: %v, want NOT_FOUND", code)
	}
}

// TestDisappearingGroup: a group's timer is its admins' to set
// (NOT_ADMIN, NOT_MEMBER), reaches every member in the group's order and
// stamps its messages; the bodies no device fetched go when they expire,
// on every member's shard.
func TestDisappearingGroup(t *testing.T) {
	n := newNode(t, 2, nil)
	alice := n.register(t, n.phoneOn(t, 0, 51))
	bob := n.register(t, n.phoneOn(t, 0, 52))
	carol := n.register(t, n.phoneOn(t, 1, 53))
	dave := n.register(t, n.phoneOn(t, 1, 54))
	aep := n.login(t, alice, 0)
	g := n.createGroup(t, alice, aep, "g", bob.user, carol.user).Group
	bep := n.login(t, bob, 0)
	n.stream(t, bob, bep)
	dep := n.login(t, dave, 0)

	if code := n.setTimer(t, bob, bep, 0, g, 60); code != protocol.CodeNotAdmin {
		t.Fatalf("a member setting the timer: %v, want NOT_ADMIN", code)
	}
	if code := n.setTimer(t, dave, dep, 0, g, 60); code != protocol.CodeNotMember {
		t.Fatalf("a non-member setting the timer: %v, want NOT_MEMBER", code)
	}
	if code := n.setTimer(t, alice, aep, 0, g, 60); code != 0 {
		t.Fatalf("set: %v", code)
	}
	n.rid++
	n.submit(storage.Op{Kind: storage.OpGroupGet, Group: g, User: alice.user, RID: n.rid, Conn: aep.ref})
	if info := aep.take(t, protocol.KindGroupInfo).(*pb.GroupInfo); info.TimerS != 60 {
		t.Fatalf("GroupInfo timer %d, want 60", info.TimerS)
	}
	n.sendOnly(t, aep, storage.Op{Kind: storage.OpSend, From: alice.user, FromDevice: alice.device, Group: g, CMID: 1, Body: []byte("soon gone"), Conn: aep.ref})
	got := n.streamN(t, bob, bep, 2)
	if len(got) != 2 || got[0][:3] != "T g" || got[1] != "M soon gone 60" {
		t.Fatalf("bob got %v, want the timer then the message with ttl 60", got)
	}

	n.clock.Advance(time.Minute + 2*time.Second)
	n.restart()
	cep := n.login(t, carol, 0)
	for _, e := range n.stream(t, carol, cep) {
		if e[0] == 'M' {
			t.Fatalf("carol got an expired message: %s", e)
		}
	}
}
