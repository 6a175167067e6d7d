package storage_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
	"github.com/parley-im/parley/storage"
)

// sendErr submits a 1:1 send and returns the code it was refused with, or
// 0 and the message id if it was stored.
func (n *node) sendResult(t *testing.T, from account, ep *endpoint, op storage.Op) (protocol.Code, uint64) {
	t.Helper()
	op.Kind, op.From, op.FromDevice, op.Conn = storage.OpSend, from.user, from.device, ep.ref
	n.submit(op)
	switch m := ep.takeAny(t, protocol.KindSent, protocol.KindError).(type) {
	case *pb.Sent:
		if m.Cmid != op.CMID {
			t.Fatalf("Sent for cmid %d, want %d", m.Cmid, op.CMID)
		}
		return 0, m.Id
	case *pb.Error:
		if m.Cmid != op.CMID {
			t.Fatalf("Error for cmid %d, want %d", m.Cmid, op.CMID)
		}
		return m.Code, 0
	}
	return 0, 0
}

// TestCMIDReuseRefused is issue 9's first "smaller hole": a device that
// lost its cmid counter reused a cmid for another message to the same
// recipient, was answered SENT with the old message's id, and the new
// message was never delivered. The dedupe record now keeps a hash of the
// content: a true retry is answered SENT with the original id, another
// message CMID_REUSED ([S-8-20]), 1:1 and in groups, across a restart.
func TestCMIDReuseRefused(t *testing.T) {
	n := newNode(t, 2, nil)
	alice := n.register(t, n.phoneOn(t, 0, 11))
	bob := n.register(t, n.phoneOn(t, 1, 12))
	aep := n.login(t, alice, 0)
	g := n.createGroup(t, alice, aep, "reuse", bob.user).Group

	code, id := n.sendResult(t, alice, aep, storage.Op{User: bob.user, CMID: 7, Body: []byte("first")})
	if code != 0 {
		t.Fatalf("first send: %v", code)
	}
	code, gid := n.sendResult(t, alice, aep, storage.Op{Group: g, CMID: 8, Body: []byte("group first")})
	if code != 0 {
		t.Fatalf("first group send: %v", code)
	}
	for round := range 2 {
		if c, again := n.sendResult(t, alice, aep, storage.Op{User: bob.user, CMID: 7, Body: []byte("first")}); c != 0 || again != id {
			t.Fatalf("round %d: retry answered %v, id %d; want SENT %d", round, c, again, id)
		}
		if c, _ := n.sendResult(t, alice, aep, storage.Op{User: bob.user, CMID: 7, Body: []byte("second")}); c != protocol.CodeCMIDReused {
			t.Fatalf("round %d: another body under cmid 7 answered %v, want CMID_REUSED", round, c)
		}
		if c, _ := n.sendResult(t, alice, aep, storage.Op{User: bob.user, CMID: 7, Body: []byte("first"), Type: pb.ContentType_CONTENT_IMAGE}); c != protocol.CodeCMIDReused {
			t.Fatalf("round %d: another type under cmid 7 answered %v, want CMID_REUSED", round, c)
		}
		if c, again := n.sendResult(t, alice, aep, storage.Op{Group: g, CMID: 8, Body: []byte("group first")}); c != 0 || again != gid {
			t.Fatalf("round %d: group retry answered %v, id %d; want SENT %d", round, c, again, gid)
		}
		if c, _ := n.sendResult(t, alice, aep, storage.Op{Group: g, CMID: 8, Body: []byte("group second")}); c != protocol.CodeCMIDReused {
			t.Fatalf("round %d: another group body under cmid 8 answered %v, want CMID_REUSED", round, c)
		}
		n.restart()
		aep = n.login(t, alice, 0)
	}
	// A retry is answered as it was first, even after the sender left.
	n.groupUpdate(t, alice, aep, g, pb.GroupOp_GROUP_OP_LEAVE)
	aep.take(t, protocol.KindOK)
	if c, again := n.sendResult(t, alice, aep, storage.Op{Group: g, CMID: 8, Body: []byte("group first")}); c != 0 || again != gid {
		t.Fatalf("group retry after leaving answered %v, id %d; want SENT %d", c, again, gid)
	}
}

// TestMaxCMIDAtLogin: the highest cmid a connection read, reported when
// it closes, comes back in the next Session ([S-8-19]), across a restart,
// and never goes down.
func TestMaxCMIDAtLogin(t *testing.T) {
	n := newNode(t, 1, nil)
	alice := n.register(t, "+15550007001")
	ep := n.login(t, alice, 0)
	if ep.session.MaxCMID != 0 {
		t.Fatalf("a new device starts with max cmid %d", ep.session.MaxCMID)
	}
	n.submit(storage.Op{Kind: storage.OpLogout, User: alice.user, Device: alice.device, CMID: 42, Conn: ep.ref})
	if ep = n.login(t, alice, 0); ep.session.MaxCMID != 42 {
		t.Fatalf("max cmid %d after a logout reporting 42", ep.session.MaxCMID)
	}
	n.submit(storage.Op{Kind: storage.OpLogout, User: alice.user, Device: alice.device, CMID: 9, Conn: ep.ref})
	n.restart()
	if ep = n.login(t, alice, 0); ep.session.MaxCMID != 42 {
		t.Fatalf("max cmid %d after a restart, want 42 (never lower)", ep.session.MaxCMID)
	}
}

// TestInboxQuota: a 1:1 send that would take a recipient's queue beyond
// its quota (entries or bytes) is refused INBOX_FULL; group messages still
// arrive; once the recipient drains its queue, sends are taken again. The
// byte count survives a restart (it is counted again from the inbox).
func TestInboxQuota(t *testing.T) {
	n := newNode(t, 2, func(c *storage.Config) { c.InboxEntries, c.InboxBytes = 4, 150<<10 })
	alice := n.register(t, n.phoneOn(t, 0, 13))
	bob := n.register(t, n.phoneOn(t, 1, 14))
	aep := n.login(t, alice, 0)
	g := n.createGroup(t, alice, aep, "quota", bob.user).Group // bob's entry 1: the ADD event

	for i := range 3 {
		if c, _ := n.sendResult(t, alice, aep, storage.Op{User: bob.user, CMID: uint64(1 + i), Body: []byte("small")}); c != 0 {
			t.Fatalf("send %d: %v", i, c)
		}
	}
	if c, _ := n.sendResult(t, alice, aep, storage.Op{User: bob.user, CMID: 4, Body: []byte("one too many")}); c != protocol.CodeInboxFull {
		t.Fatalf("the fifth entry answered %v, want INBOX_FULL", c)
	}
	if c, _ := n.sendResult(t, alice, aep, storage.Op{Group: g, CMID: 5, Body: []byte("groups are not refused")}); c != 0 {
		t.Fatalf("group send to a full inbox: %v", c)
	}
	bep := n.login(t, bob, 0)
	msgs := n.drain(t, bob, bep)
	if len(msgs) != 4 {
		t.Fatalf("bob drained %d messages, want 4", len(msgs))
	}
	// Bytes: two 64 KiB bodies fit in 150 KiB, a third does not, also
	// counted afresh after a restart.
	big := bytes.Repeat([]byte("x"), protocol.MaxMessageBody)
	n.submit(storage.Op{Kind: storage.OpLogout, User: bob.user, Device: bob.device, Conn: bep.ref})
	// Another connection of alice's: on aep the refused cmid 4 holds her
	// later sends to bob back until she retries it ([S-8-13]).
	aep = newEndpoint(t)
	for i := range 2 {
		if c, _ := n.sendResult(t, alice, aep, storage.Op{User: bob.user, CMID: uint64(10 + i), Body: big}); c != 0 {
			t.Fatalf("big send %d: %v", i, c)
		}
	}
	n.restart()
	aep = n.login(t, alice, 0)
	if c, _ := n.sendResult(t, alice, aep, storage.Op{User: bob.user, CMID: 12, Body: big}); c != protocol.CodeInboxFull {
		t.Fatalf("a third 64 KiB body answered %v, want INBOX_FULL", c)
	}
	if c, _ := n.sendResult(t, alice, newEndpoint(t), storage.Op{User: bob.user, CMID: 13, Body: []byte("small still fits")}); c != 0 {
		t.Fatalf("a small body: %v", c)
	}
	if st := n.shards[1].Stats(); st.QuotaRefusals != 1 {
		t.Fatalf("shard 1 counted %d quota refusals since the restart, want 1", st.QuotaRefusals)
	}
}

// TestStorageFull: while the node is short of disk space, what stores new
// data is refused STORAGE_FULL with a delay, and what frees space or costs
// little goes on: logins, deliveries of queued entries, acknowledgements,
// retries of stored sends. Afterwards everything works again.
func TestStorageFull(t *testing.T) {
	n := newNode(t, 2, nil)
	alice := n.register(t, n.phoneOn(t, 0, 15))
	bob := n.register(t, n.phoneOn(t, 1, 16))
	aep := n.login(t, alice, 0)
	_, id := n.sendResult(t, alice, aep, storage.Op{User: bob.user, CMID: 1, Body: []byte("before")})
	for _, s := range n.shards {
		s.SetFull(true)
	}
	refused := func(what string, ep *endpoint) {
		t.Helper()
		e := ep.take(t, protocol.KindError).(*pb.Error)
		if e.Code != protocol.CodeStorageFull || e.RetryAfterMs == 0 {
			t.Fatalf("%s while full: %v (retry after %d ms), want STORAGE_FULL with a delay", what, e.Code, e.RetryAfterMs)
		}
	}
	if c, _ := n.sendResult(t, alice, aep, storage.Op{User: bob.user, CMID: 2, Body: []byte("during")}); c != protocol.CodeStorageFull {
		t.Fatalf("send while full: %v", c)
	}
	if c, again := n.sendResult(t, alice, aep, storage.Op{User: bob.user, CMID: 1, Body: []byte("before")}); c != 0 || again != id {
		t.Fatalf("retry of a stored send while full: %v %d", c, again)
	}
	ep := newEndpoint(t)
	n.submit(storage.Op{Kind: storage.OpRequestCode, Phone: "+15550007999", RID: 1, Conn: ep.ref})
	refused("request code", ep)
	n.submit(storage.Op{Kind: storage.OpGroupCreate, User: alice.user, Name: "full", RID: 3, Conn: aep.ref})
	refused("group create", aep)

	bep := n.login(t, bob, 0)
	if msgs := n.drain(t, bob, bep); len(msgs) != 1 || msgs[0].ID != id {
		t.Fatalf("bob drained %+v while full, want the queued message", msgs)
	}
	aep.take(t, protocol.KindReceipt) // the ack went through, and its receipt

	for _, s := range n.shards {
		s.SetFull(false)
	}
	if c, _ := n.sendResult(t, alice, aep, storage.Op{User: bob.user, CMID: 2, Body: []byte("during")}); c != 0 {
		t.Fatalf("send after space returned: %v", c)
	}
	if m := bep.take(t, protocol.KindMessage).(codec.Message); string(m.Body) != "during" {
		t.Fatalf("bob got %q", m.Body)
	}
}

// TestCodesKeyedAndSwept: issue 9's verification code findings. A code is
// stored under a keyed hash, so a copy of the database without the key
// gives it away no more than a guess (the old SHA-256(phone, code) over a
// space of 10^6 did); it verifies across a restart with the same key and
// not with another. Code states are deleted once done with (they were
// kept for ever).
func TestCodesKeyedAndSwept(t *testing.T) {
	key := bytes.Repeat([]byte{1}, 32)
	fs := vfs.NewMem()
	n := newNodeOn(t, fs, 1, func(c *storage.Config) { c.CodeKey = key })
	const phone = "+15550008001"
	ep := newEndpoint(t)
	n.submit(storage.Op{Kind: storage.OpRequestCode, Phone: phone, RID: 1, Conn: ep.ref})
	ep.take(t, protocol.KindCodeSent)
	code := n.codes.code(phone)
	n.close()

	plain := sha256.Sum256([]byte(phone + "\x00" + code))
	var stored []byte
	rawUpdate(t, fs, "shard-0", func(db *pebble.DB) {
		it, err := db.NewIter(nil)
		must(err)
		for ok := it.First(); ok; ok = it.Next() {
			if bytes.Contains(it.Value(), plain[:]) {
				t.Errorf("key %x holds SHA-256(phone, code)", it.Key())
			}
			if k := it.Key(); len(k) > 3 && k[2] == 'o' && string(k[3:]) == phone {
				stored = append([]byte(nil), it.Value()...)
			}
		}
		must(it.Close())
	})
	if stored == nil {
		t.Fatal("no code state stored")
	}

	// Another key does not verify the code; the same key does, after a
	// restart.
	n.tweak = func(c *storage.Config) { c.CodeKey = bytes.Repeat([]byte{2}, 32) }
	n.open(1)
	n.submit(storage.Op{Kind: storage.OpVerify, Phone: phone, Code: code, Name: "x", RID: 2, Conn: ep.ref})
	if e := ep.take(t, protocol.KindError).(*pb.Error); e.Code != protocol.CodeCodeInvalid {
		t.Fatalf("verify under another key: %v, want CODE_INVALID", e.Code)
	}
	n.close()
	n.tweak = func(c *storage.Config) { c.CodeKey = key }
	n.open(1)
	n.submit(storage.Op{Kind: storage.OpVerify, Phone: phone, Code: code, Name: "x", RID: 3, Conn: ep.ref})
	ep.take(t, protocol.KindRegistered)

	// Three days on, the start-up sweep deletes the state.
	n.clock.Advance(72 * time.Hour)
	n.restart()
	// The actor sweeps before it takes any op: once one is answered, the
	// sweep is done.
	n.submit(storage.Op{Kind: storage.OpRequestCode, Phone: "+15550008002", RID: 5, Conn: ep.ref})
	ep.take(t, protocol.KindCodeSent)
	if st := n.shards[0].Stats(); st.CodesSwept != 1 {
		t.Fatalf("%d code states swept, want 1", st.CodesSwept)
	}
	n.close()
	rawUpdate(t, fs, "shard-0", func(db *pebble.DB) {
		it, err := db.NewIter(nil)
		must(err)
		for ok := it.First(); ok; ok = it.Next() {
			if k := it.Key(); len(k) > 3 && (k[2] == 'o' || k[2] == 'E') && bytes.HasSuffix(k, []byte(phone)) {
				t.Errorf("code key %q left after the sweep", k)
			}
		}
		must(it.Close())
	})
	n.open(1)
	n.submit(storage.Op{Kind: storage.OpRequestCode, Phone: phone, RID: 4, Conn: ep.ref})
	ep.take(t, protocol.KindCodeSent)
}

// TestPendingLinksBounded: issue 9 found 6.7 million pending link codes
// made by four unauthenticated connections in a minute. A shard holds at
// most MaxPendingLinks; beyond, LINK_REQUEST is refused RATE_LIMITED with
// the time until the oldest expires, and expired codes free their places
// (found in expiry order, not by scanning).
func TestPendingLinksBounded(t *testing.T) {
	n := newNode(t, 1, func(c *storage.Config) { c.MaxPendingLinks = 3 })
	ep := newEndpoint(t)
	for range 3 {
		n.linkCode(t, ep)
	}
	var random [10]byte
	random[0] = 0xee
	n.submit(storage.Op{Kind: storage.OpLinkRequest, Code: storage.NewLinkCode(random), Name: "one too many", RID: 9, Conn: ep.ref})
	e := ep.take(t, protocol.KindError).(*pb.Error)
	if e.Code != protocol.CodeRateLimited || e.Rid != 9 || e.RetryAfterMs < 100_000 {
		t.Fatalf("the fourth pending link: %v rid %d retry %d ms, want RATE_LIMITED after about 120 s", e.Code, e.Rid, e.RetryAfterMs)
	}
	if st := n.shards[0].Stats(); st.PendingLinks != 3 || st.LinkRefusals != 1 {
		t.Fatalf("stats %+v, want 3 pending and 1 refusal", st)
	}
	n.clock.Advance(121 * time.Second)
	n.linkCode(t, ep)
	if st := n.shards[0].Stats(); st.PendingLinks != 1 {
		t.Fatalf("%d pending links after the first three expired, want 1", st.PendingLinks)
	}
}

// TestGroupAbuseBounded: issue 9's group findings. 120 pipelined ADDs of
// one user to each of six groups held 720 of the user's group places for a
// minute (TOO_MANY_GROUPS while in six groups); now a user waited for by
// an add is not asked again, and a place held for a group is renewed, not
// doubled. Creating groups is rate limited, and a group whose last member
// left is deleted.
func TestGroupAbuseBounded(t *testing.T) {
	fs := vfs.NewMem()
	n := newNodeOn(t, fs, 2, func(c *storage.Config) { c.GroupsPerHour = 8 })
	attacker := n.register(t, n.phoneOn(t, 0, 21))
	victim := n.register(t, n.phoneOn(t, 1, 22))
	aep, vep := n.login(t, attacker, 0), n.login(t, victim, 0)
	for gi := range 6 {
		g := n.createGroup(t, attacker, aep, "spam", 0).Group
		for range 120 {
			n.submit(storage.Op{Kind: storage.OpGroupUpdate, User: attacker.user, Group: g, GroupOp: pb.GroupOp_GROUP_OP_ADD, Users: []uint64{victim.user}, RID: uint32(100 + gi), Conn: aep.ref})
		}
		for range 120 {
			aep.take(t, protocol.KindGroupInfo)
		}
	}
	// The victim is in six groups and may create or join 506 more: the
	// first of those must not be refused.
	info := n.createGroup(t, victim, vep, "mine")
	if len(info.Members) != 1 {
		t.Fatalf("the victim's own group: %+v", info)
	}
	n.submit(storage.Op{Kind: storage.OpGroupList, User: victim.user, RID: 7, Conn: vep.ref})
	if l := vep.take(t, protocol.KindGroupListResult).(*pb.GroupListResult); len(l.Groups) != 7 {
		t.Fatalf("the victim is in %d groups, want 7", len(l.Groups))
	}

	// Creation is rate limited: the attacker made six, two more are allowed.
	n.createGroup(t, attacker, aep, "seventh")
	empty := n.createGroup(t, attacker, aep, "eighth").Group
	n.submit(storage.Op{Kind: storage.OpGroupCreate, User: attacker.user, Name: "ninth", RID: 9, Conn: aep.ref})
	if e := aep.take(t, protocol.KindError).(*pb.Error); e.Code != protocol.CodeRateLimited || e.RetryAfterMs == 0 {
		t.Fatalf("the ninth group in an hour: %v (retry %d ms), want RATE_LIMITED", e.Code, e.RetryAfterMs)
	}
	n.clock.Advance(time.Hour)
	n.createGroup(t, attacker, aep, "an hour later")

	// The last member leaves: the group record goes.
	n.groupUpdate(t, attacker, aep, empty, pb.GroupOp_GROUP_OP_LEAVE)
	aep.take(t, protocol.KindOK)
	n.close()
	rawUpdate(t, fs, "shard-0", func(db *pebble.DB) {
		k := binary.BigEndian.AppendUint16(nil, uint16(empty&4095))
		k = binary.BigEndian.AppendUint64(append(k, 'G'), empty)
		if _, closer, err := db.Get(k); err == nil {
			closer.Close()
			t.Errorf("group %d is still stored after its last member left", empty)
		}
	})
}
