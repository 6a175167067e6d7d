package storage_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
	"github.com/parley-im/parley/storage"
)

// block blocks (or, with unblock, unblocks) peer for a, whose device is
// on ep, and returns the error code, 0 for Ok.
func (n *node) block(t *testing.T, a account, ep *endpoint, peer uint64, unblock bool) protocol.Code {
	t.Helper()
	kind := storage.OpBlock
	if unblock {
		kind = storage.OpUnblock
	}
	n.rid++
	if e := n.answer(t, ep, storage.Op{Kind: kind, User: a.user, Peer: peer, RID: n.rid, Conn: ep.ref}); e != nil {
		return e.Code
	}
	return 0
}

// blockList asks for a's block list on ep.
func (n *node) blockList(t *testing.T, a account, ep *endpoint) []uint64 {
	t.Helper()
	n.rid++
	n.submit(storage.Op{Kind: storage.OpBlockList, User: a.user, RID: n.rid, Conn: ep.ref})
	return ep.take(t, protocol.KindBlockListResult).(*pb.BlockListResult).Users
}

// TestBlock: while alice blocks bob ([S-18-6]), bob's 1:1 messages to her
// are answered SENT and never stored in her inbox (his other device gets
// its copy), her presence is hidden from him, typing is dropped both ways,
// and group messages go on; her other device learns the block ([S-18-7]);
// the block survives a restart; after the unblock bob's messages arrive.
func TestBlock(t *testing.T) {
	n := newNode(t, 2, nil)
	alice := n.register(t, n.phoneOn(t, 0, 21))
	bob := n.register(t, n.phoneOn(t, 1, 22))
	carol := n.register(t, n.phoneOn(t, 1, 23))
	aep := n.login(t, alice, 0)
	alice2 := n.link(t, alice, aep, "alice laptop")
	bep := n.login(t, bob, 0)
	bob2 := n.link(t, bob, bep, "bob laptop")
	cep := n.login(t, carol, 0)
	g := n.createGroup(t, alice, aep, "g", bob.user).Group

	if code := n.block(t, alice, aep, bob.user, false); code != 0 {
		t.Fatalf("block: %v", code)
	}
	if code := n.block(t, alice, aep, bob.user, false); code != 0 {
		t.Fatalf("block again: %v", code)
	}
	if got := n.blockList(t, alice, aep); !slices.Equal(got, []uint64{bob.user}) {
		t.Fatalf("block list %v, want [%d]", got, bob.user)
	}
	blockedID := n.send(t, bob, bep, alice.user, 1, "you there?")
	if again := n.send(t, bob, bep, alice.user, 1, "you there?"); again != blockedID {
		t.Fatalf("retry answered %d, want %d", again, blockedID)
	}
	// Bob can delete it like any other message: nothing tells him.
	if code := n.revoke(t, bob, bep, alice.user, 0, blockedID); code != 0 {
		t.Fatalf("revoke of a blocked send: %v", code)
	}
	// Typing, both ways, is dropped; carol's reaches alice.
	n.submit(storage.Op{Kind: storage.OpTyping, User: bob.user, From: alice.user})
	n.submit(storage.Op{Kind: storage.OpTyping, User: alice.user, From: bob.user})
	n.submit(storage.Op{Kind: storage.OpTyping, User: alice.user, From: carol.user})
	if it := aep.take(t, protocol.KindIsTyping).(*pb.IsTyping); it.From != carol.user {
		t.Fatalf("alice got typing from %d", it.From)
	}
	// Presence: bob sees alice as never seen while she is online; carol
	// sees her online.
	n.submit(storage.Op{Kind: storage.OpWatch, User: alice.user, From: bob.user, Conn: bep.ref})
	if p := bep.take(t, protocol.KindPresence).(*pb.Presence); p.Online || p.LastSeenMs != 0 {
		t.Fatalf("bob sees %v", p)
	}
	n.submit(storage.Op{Kind: storage.OpWatch, User: alice.user, From: carol.user, Conn: cep.ref})
	if p := cep.take(t, protocol.KindPresence).(*pb.Presence); !p.Online {
		t.Fatalf("carol sees %v", p)
	}
	// Groups are not affected.
	gid := n.sendOnly(t, bep, storage.Op{Kind: storage.OpSend, From: bob.user, FromDevice: bob.device, Group: g, CMID: 2, Body: []byte("group hi"), Conn: bep.ref})
	if m := n.nextMessage(t, alice, aep); m.ID != gid {
		t.Fatalf("alice got %+v, want the group message %d", m, gid)
	}
	n.nothingMore(t, alice, aep)

	n.restart()
	// The block holds; the laptop learnt it; bob's laptop has its copy.
	a2ep := n.login(t, alice2, 0)
	if b := n.takeBlocked(t, alice2, a2ep); b.User != bob.user || !b.Blocked {
		t.Fatalf("alice's laptop got %+v", b)
	}
	b2ep := n.login(t, bob2, 0)
	if got := n.entries(t, bob2, b2ep); len(got) < 1 || got[0] != "M you there?" {
		t.Fatalf("bob's laptop got %v", got)
	}
	aep = n.login(t, alice, 0)
	n.entries(t, alice, aep)
	bep = n.login(t, bob, 0)
	n.entries(t, bob, bep)
	n.send(t, bob, bep, alice.user, 3, "hello?")
	n.nothingMore(t, alice, aep)

	if code := n.block(t, alice, aep, bob.user, true); code != 0 {
		t.Fatalf("unblock: %v", code)
	}
	if b := n.takeBlocked(t, alice2, a2ep); b.User != bob.user || b.Blocked {
		t.Fatalf("alice's laptop got %+v, want the unblock", b)
	}
	if got := n.blockList(t, alice, aep); len(got) != 0 {
		t.Fatalf("block list after unblock %v", got)
	}
	id := n.send(t, bob, bep, alice.user, 4, "finally")
	if m := n.nextMessage(t, alice, aep); m.ID != id {
		t.Fatalf("alice got %+v, want %d", m, id)
	}
}

// TestBlockBounded: an account blocks at most MaxBlocks users
// (TOO_MANY_BLOCKS); unblocking makes room.
func TestBlockBounded(t *testing.T) {
	n := newNode(t, 1, nil)
	alice := n.register(t, "+15550008001")
	aep := n.login(t, alice, 0)
	for i := range protocol.MaxBlocks {
		if code := n.block(t, alice, aep, uint64(1_000_000+i), false); code != 0 {
			t.Fatalf("block %d: %v", i, code)
		}
	}
	if code := n.block(t, alice, aep, 7, false); code != protocol.CodeTooManyBlocks {
		t.Fatalf("one more: %v, want TOO_MANY_BLOCKS", code)
	}
	if code := n.block(t, alice, aep, 1_000_000, true); code != 0 {
		t.Fatalf("unblock: %v", code)
	}
	if code := n.block(t, alice, aep, 7, false); code != 0 {
		t.Fatalf("block after an unblock: %v", code)
	}
}

// nextMessage takes the next Message on ep, acknowledging it and whatever
// came before it.
func (n *node) nextMessage(t *testing.T, a account, ep *endpoint) codec.Message {
	t.Helper()
	for {
		if m, ok := n.entry(t, a, ep).(codec.Message); ok {
			return m
		}
	}
}

// takeBlocked takes the next Blocked entry on ep and acknowledges it.
func (n *node) takeBlocked(t *testing.T, a account, ep *endpoint) *pb.Blocked {
	t.Helper()
	b := ep.take(t, protocol.KindBlocked).(*pb.Blocked)
	n.ack(a, ep, b.Seq)
	return b
}

// TestBlockEnvelopes: a blocked user's envelope sends ([S-17-8]) are
// answered SENT and stored nowhere in the blocker's inbox either, and a
// deleted envelope message is replaced like any other ([S-18-2]).
func TestBlockEnvelopes(t *testing.T) {
	n := newNode(t, 2, nil)
	alice := n.register(t, n.phoneOn(t, 0, 31))
	bob := n.register(t, n.phoneOn(t, 1, 32))
	aep, bep := n.login(t, alice, 0), n.login(t, bob, 0)
	for i, a := range []struct {
		acc account
		ep  *endpoint
	}{{alice, aep}, {bob, bep}} {
		if code := n.publish(t, a.acc, a.ep, testKeys(i+1, 1, 20)); code != 0 {
			t.Fatal(code)
		}
	}
	if code := n.block(t, alice, aep, bob.user, false); code != 0 {
		t.Fatalf("block: %v", code)
	}
	if _, ok := n.sendEnvelopes(t, bob, bep, alice.user, 1, &storage.Envelopes{To: envelopes("b1", alice.device)}).(*pb.Sent); !ok {
		t.Fatal("a blocked envelope send was not answered SENT")
	}
	n.nothingMore(t, alice, aep)
	if code := n.block(t, alice, aep, bob.user, true); code != 0 {
		t.Fatalf("unblock: %v", code)
	}

	// Alice's envelope message to bob, deleted before bob fetched it.
	n.submit(storage.Op{Kind: storage.OpLogout, User: bob.user, Device: bob.device, Conn: bep.ref})
	sent, ok := n.sendEnvelopes(t, alice, aep, bob.user, 1, &storage.Envelopes{To: envelopes("a1", bob.device)}).(*pb.Sent)
	if !ok {
		t.Fatal("envelope send refused")
	}
	if code := n.revoke(t, alice, aep, bob.user, 0, sent.Id); code != 0 {
		t.Fatalf("revoke: %v", code)
	}
	bep = n.login(t, bob, 0)
	want := fmt.Sprintf("R %d", sent.Id)
	if got := n.entries(t, bob, bep); fmt.Sprint(got) != fmt.Sprint([]string{want, want}) {
		t.Fatalf("bob got %v, want the notice in place and after", got)
	}
}
