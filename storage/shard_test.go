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

// TestOnlineDeliveryAndReceipts: a message to an online device arrives,
// its ack produces a delivered receipt, a read produces a read receipt.
func TestOnlineDeliveryAndReceipts(t *testing.T) {
	for _, shards := range []int{1, 3} {
		t.Run(fmt.Sprintf("%d shards", shards), func(t *testing.T) {
			n := newNode(t, shards, nil)
			alice, bob := n.register(t, "+15550000001"), n.register(t, "+15550000002")
			aep, bep := n.login(t, alice, 0), n.login(t, bob, 0)
			aep.take(t, protocol.KindSynced)
			bep.take(t, protocol.KindSynced)

			id := n.send(t, alice, aep, bob.user, 1, "hello bob")
			m := bep.messages(t, 1)[0]
			if m.ID != id || m.From != alice.user || string(m.Body) != "hello bob" || m.Seq != 1 || m.FromDevice != alice.device {
				t.Fatalf("bob got %+v, want id %d from %d", m, id, alice.user)
			}
			n.ack(bob, bep, m.Seq)
			r := aep.take(t, protocol.KindReceipt).(codec.Receipt)
			if r.Peer != bob.user || r.Type != pb.ReceiptType_RECEIPT_DELIVERED || r.UpTo != id {
				t.Fatalf("alice got receipt %+v, want delivered up to %d", r, id)
			}
			n.ack(alice, aep, r.Seq)

			n.submit(storage.Op{Kind: storage.OpRead, User: alice.user, From: bob.user, UpTo: id, RID: 9, Conn: bep.ref})
			if ok := bep.take(t, protocol.KindOK).(*pb.Ok); ok.Rid != 9 {
				t.Fatalf("Ok rid = %d, want 9", ok.Rid)
			}
			r = aep.take(t, protocol.KindReceipt).(codec.Receipt)
			if r.Peer != bob.user || r.Type != pb.ReceiptType_RECEIPT_READ || r.UpTo != id {
				t.Fatalf("alice got receipt %+v, want read up to %d", r, id)
			}
			// A read that moves nothing is answered and adds nothing.
			n.submit(storage.Op{Kind: storage.OpRead, User: alice.user, From: bob.user, UpTo: id, RID: 10, Conn: bep.ref})
			bep.take(t, protocol.KindOK)
			n.ack(alice, aep, r.Seq)
			n.nothingMore(t, alice, aep)
		})
	}
}

// TestOfflineBacklogInOrder: messages for an offline user wait and arrive
// in order, in batches, then Synced.
func TestOfflineBacklogInOrder(t *testing.T) {
	n := newNode(t, 2, nil)
	alice, bob := n.register(t, "+15550000011"), n.register(t, "+15550000012")
	aep := n.login(t, alice, 0)
	var ids []uint64
	for i := range 50 {
		ids = append(ids, n.send(t, alice, aep, bob.user, uint64(i+1), fmt.Sprintf("m%d", i)))
	}
	bep := n.login(t, bob, 0)
	got := bep.messages(t, 50)
	for i, m := range got {
		if m.Seq != uint64(i+1) || m.ID != ids[i] || string(m.Body) != fmt.Sprintf("m%d", i) {
			t.Fatalf("entry %d = %+v, want seq %d id %d", i, m, i+1, ids[i])
		}
	}
	if s := bep.take(t, protocol.KindSynced).(*pb.Synced); s.Seq != 50 {
		t.Fatalf("Synced seq = %d, want 50", s.Seq)
	}
}

// TestSendDeduplicated: a retried send (same device, cmid, recipient) is
// stored once and answered with the same id.
func TestSendDeduplicated(t *testing.T) {
	n := newNode(t, 1, nil)
	alice, bob := n.register(t, "+15550000021"), n.register(t, "+15550000022")
	aep := n.login(t, alice, 0)
	id1 := n.send(t, alice, aep, bob.user, 7, "once")
	id2 := n.send(t, alice, aep, bob.user, 7, "once")
	n.restart()
	aep = n.login(t, alice, 0)
	id3 := n.send(t, alice, aep, bob.user, 7, "once")
	if id1 != id2 || id1 != id3 {
		t.Fatalf("ids %d %d %d, want one id", id1, id2, id3)
	}
	bep := n.login(t, bob, 0)
	bep.messages(t, 1)
	if s := bep.take(t, protocol.KindSynced).(*pb.Synced); s.Seq != 1 {
		t.Fatalf("inbox head %d after a retried send, want 1", s.Seq)
	}
}

// TestWindow: no more than Window entries are unacknowledged at a time.
func TestWindow(t *testing.T) {
	n := newNode(t, 1, func(c *storage.Config) { c.Window = 4 })
	alice, bob := n.register(t, "+15550000031"), n.register(t, "+15550000032")
	aep := n.login(t, alice, 0)
	for i := range 10 {
		n.send(t, alice, aep, bob.user, uint64(i+1), "x")
	}
	bep := n.login(t, bob, 0)
	if s := bep.session; s.Window != 4 {
		t.Fatalf("session window = %d, want 4", s.Window)
	}
	first := bep.messages(t, 4)
	n.nothingMore(t, bob, bep) // nothing beyond the window
	n.ack(bob, bep, first[1].Seq)
	more := bep.messages(t, 2)
	if more[0].Seq != 5 || more[1].Seq != 6 {
		t.Fatalf("after ack got seqs %d %d, want 5 6", more[0].Seq, more[1].Seq)
	}
}

// TestAckBeyondSent is [S-8-5]: an ack for an entry never sent closes the
// connection with PROTOCOL_VIOLATION.
func TestAckBeyondSent(t *testing.T) {
	n := newNode(t, 1, nil)
	alice := n.register(t, "+15550000041")
	ep := n.login(t, alice, 0)
	n.ack(alice, ep, 5)
	ep.wait(t, "close", func(e *endpoint) bool { return e.isClosed })
	if ep.closed != protocol.CodeProtocolViolation {
		t.Fatalf("closed with %v, want PROTOCOL_VIOLATION", ep.closed)
	}
}

// TestSessionReplaced: a second login of the same device closes the first.
func TestSessionReplaced(t *testing.T) {
	n := newNode(t, 1, nil)
	alice := n.register(t, "+15550000051")
	first := n.login(t, alice, 0)
	n.login(t, alice, 0)
	first.wait(t, "close", func(e *endpoint) bool { return e.isClosed })
	if first.closed != protocol.CodeSessionReplaced {
		t.Fatalf("closed with %v, want SESSION_REPLACED", first.closed)
	}
}

// TestStaleLogoutKeepsSession: the replaced connection's logout, which
// arrives after the second login, names the old connection's ref: the
// shard ends a session only for the ref it belongs to, so the new one
// still gets entries.
func TestStaleLogoutKeepsSession(t *testing.T) {
	n := newNode(t, 1, nil)
	alice := n.register(t, "+15550000052")
	bob := n.register(t, "+15550000053")
	first := n.login(t, alice, 0)
	second := n.login(t, alice, 0)
	first.wait(t, "close", func(e *endpoint) bool { return e.isClosed })
	n.submit(storage.Op{Kind: storage.OpLogout, User: alice.user, Device: alice.device, Conn: first.ref})
	bobEP := n.login(t, bob, 0)
	n.send(t, bob, bobEP, alice.user, 1, "still there?")
	if m := second.messages(t, 1)[0]; string(m.Body) != "still there?" {
		t.Fatalf("got %q", m.Body)
	}
}

// TestLoginFailures: wrong credential, unknown device, revoked device.
func TestLoginFailures(t *testing.T) {
	n := newNode(t, 1, nil)
	alice := n.register(t, "+15550000061")
	tests := []struct {
		name string
		a    account
		want protocol.Code
	}{
		{"wrong credential", account{alice.user, alice.device, make([]byte, 32)}, protocol.CodeAuthFailed},
		{"short credential", account{alice.user, alice.device, alice.cred[:5]}, protocol.CodeAuthFailed},
		{"unknown device", account{alice.user, 99, alice.cred}, protocol.CodeAuthFailed},
		{"unknown user", account{alice.user + 4096, 1, alice.cred}, protocol.CodeAuthFailed},
	}
	for _, tt := range tests {
		ep := newEndpoint(t)
		n.submit(storage.Op{Kind: storage.OpLogin, User: tt.a.user, Device: tt.a.device, Credential: tt.a.cred, Conn: ep.ref})
		ep.wait(t, "close", func(e *endpoint) bool { return e.isClosed })
		if ep.closed != tt.want || ep.session != nil {
			t.Errorf("%s: closed with %v, want %v", tt.name, ep.closed, tt.want)
		}
	}
	// Re-registering the number revokes the old device, live or not.
	live := n.login(t, alice, 0)
	n.clock.Advance(time.Minute)
	again := n.register(t, "+15550000061")
	if again.user != alice.user || again.device == alice.device {
		t.Fatalf("re-registration gave %d/%d, want user %d and a new device", again.user, again.device, alice.user)
	}
	live.wait(t, "revocation", func(e *endpoint) bool { return e.isClosed })
	if live.closed != protocol.CodeDeviceRevoked {
		t.Fatalf("live session closed with %v, want DEVICE_REVOKED", live.closed)
	}
	ep := newEndpoint(t)
	n.submit(storage.Op{Kind: storage.OpLogin, User: alice.user, Device: alice.device, Credential: alice.cred, Conn: ep.ref})
	ep.wait(t, "close", func(e *endpoint) bool { return e.isClosed })
	if ep.closed != protocol.CodeDeviceRevoked {
		t.Fatalf("revoked device login: %v, want DEVICE_REVOKED", ep.closed)
	}
}

// TestReregistrationKeepsWaitingMessages: the new install gets what the old
// one never fetched.
func TestReregistrationKeepsWaitingMessages(t *testing.T) {
	n := newNode(t, 1, nil)
	alice, bob := n.register(t, "+15550000071"), n.register(t, "+15550000072")
	aep := n.login(t, alice, 0)
	n.send(t, alice, aep, bob.user, 1, "waiting")
	n.clock.Advance(time.Minute)
	bob2 := n.register(t, "+15550000072")
	bep := n.login(t, bob2, 0)
	if m := bep.messages(t, 1)[0]; string(m.Body) != "waiting" {
		t.Fatalf("new install got %q", m.Body)
	}
}

// TestDeletedOnlyWhenEveryDeviceAcked is invariant 3 with two devices, and
// [S-8-7]: a login resumes after the cursor.
func TestDeletedOnlyWhenEveryDeviceAcked(t *testing.T) {
	n := newNode(t, 1, nil)
	alice, bob := n.register(t, "+15550000081"), n.register(t, "+15550000082")
	aep := n.login(t, alice, 0)
	for i := range 3 {
		n.send(t, alice, aep, bob.user, uint64(i+1), fmt.Sprint(i))
	}
	bep := n.login(t, bob, 0)
	msgs := bep.messages(t, 3)
	n.ack(bob, bep, msgs[2].Seq)
	bep.take(t, protocol.KindSynced)
	// A client cursor ahead of the stored one wins; behind it is ignored.
	n.restart()
	bep = n.login(t, bob, 1)
	if c := bep.session.Cursor; c != 3 {
		t.Fatalf("resumed at %d, want 3", c)
	}
	if s := bep.take(t, protocol.KindSynced).(*pb.Synced); s.Seq != 3 {
		t.Fatalf("Synced %d, want 3", s.Seq)
	}
}

// TestExpiry: entries never acknowledged expire after the retention
// period; the device then resumes past them.
func TestExpiry(t *testing.T) {
	n := newNode(t, 1, func(c *storage.Config) { c.Retention = 48 * time.Hour })
	alice, bob := n.register(t, "+15550000091"), n.register(t, "+15550000092")
	aep := n.login(t, alice, 0)
	n.send(t, alice, aep, bob.user, 1, "old")
	n.clock.Advance(72 * time.Hour)
	n.send(t, alice, aep, bob.user, 2, "new")
	n.restart() // runs a maintenance sweep at start
	bep := n.login(t, bob, 0)
	if m := bep.messages(t, 1)[0]; string(m.Body) != "new" || m.Seq != 2 {
		t.Fatalf("after expiry got %+v, want only seq 2 \"new\"", m)
	}
}

// TestCodeLimits: [S-9-2] rate limits and [S-9-5] attempts.
func TestCodeLimits(t *testing.T) {
	n := newNode(t, 1, nil)
	ep := newEndpoint(t)
	const phone = "+15550000101"
	n.submit(storage.Op{Kind: storage.OpRequestCode, Phone: phone, RID: 1, Conn: ep.ref})
	ep.take(t, protocol.KindCodeSent)
	n.submit(storage.Op{Kind: storage.OpRequestCode, Phone: phone, RID: 2, Conn: ep.ref})
	if e := ep.take(t, protocol.KindError).(*pb.Error); e.Code != protocol.CodeRateLimited || e.RetryAfterMs == 0 || e.Rid != 2 {
		t.Fatalf("second code at once: %v, want RATE_LIMITED with a delay", e)
	}
	for i := range 5 {
		n.submit(storage.Op{Kind: storage.OpVerify, Phone: phone, Code: "000000x", RID: uint32(10 + i), Conn: ep.ref})
		want := protocol.CodeCodeInvalid
		if i == 4 {
			want = protocol.CodeTooManyAttempts
		}
		if e := ep.take(t, protocol.KindError).(*pb.Error); e.Code != want {
			t.Fatalf("attempt %d: %v, want %v", i+1, e.Code, want)
		}
	}
	n.submit(storage.Op{Kind: storage.OpVerify, Phone: phone, Code: n.codes.code(phone), RID: 20, Conn: ep.ref})
	if e := ep.take(t, protocol.KindError).(*pb.Error); e.Code != protocol.CodeCodeExpired {
		t.Fatalf("right code after too many attempts: %v, want CODE_EXPIRED", e.Code)
	}
	for range 4 {
		n.clock.Advance(31 * time.Second)
		n.submit(storage.Op{Kind: storage.OpRequestCode, Phone: phone, RID: 3, Conn: ep.ref})
		ep.take(t, protocol.KindCodeSent)
	}
	n.clock.Advance(31 * time.Second)
	n.submit(storage.Op{Kind: storage.OpRequestCode, Phone: phone, RID: 4, Conn: ep.ref})
	if e := ep.take(t, protocol.KindError).(*pb.Error); e.Code != protocol.CodeRateLimited {
		t.Fatalf("sixth code in an hour: %v, want RATE_LIMITED", e.Code)
	}
	n.clock.Advance(11 * time.Minute)
	n.submit(storage.Op{Kind: storage.OpVerify, Phone: phone, Code: n.codes.code(phone), RID: 5, Conn: ep.ref})
	if e := ep.take(t, protocol.KindError).(*pb.Error); e.Code != protocol.CodeCodeExpired {
		t.Fatalf("expired code: %v, want CODE_EXPIRED", e.Code)
	}
}

// TestLookup finds registered numbers across shards: each shard answers
// its part to the connection, under the lookup's number.
func TestLookup(t *testing.T) {
	n := newNode(t, 3, nil)
	var phones []string
	want := map[string]uint64{}
	for i := range 6 {
		p := fmt.Sprintf("+1555000020%d", i)
		phones = append(phones, p)
		if i%2 == 0 {
			want[p] = n.register(t, p).user
		}
	}
	ep := newEndpoint(t)
	byShard := map[uint16][]string{}
	for _, p := range phones {
		byShard[n.router.ShardOfPhone(p)] = append(byShard[n.router.ShardOfPhone(p)], p)
	}
	if len(byShard) < 2 {
		t.Fatalf("phones on %d shards, want several", len(byShard))
	}
	for _, ps := range byShard {
		n.submit(storage.Op{Kind: storage.OpLookup, Phones: ps, Seq: 4, Conn: ep.ref})
	}
	var found []*pb.Contact
	for range byShard {
		r := ep.take(t, protocol.KindLookupResult).(*pb.LookupResult)
		if r.Rid != 4 {
			t.Fatalf("lookup part %v, want lookup 4", r)
		}
		found = append(found, r.Contacts...)
	}
	if len(found) != len(want) {
		t.Fatalf("lookup found %v, want %v", found, want)
	}
	for _, c := range found {
		if want[c.Phone] != c.User {
			t.Fatalf("lookup %s = %d, want %d", c.Phone, c.User, want[c.Phone])
		}
	}
}

// TestSendToUnknownUser answers NOT_FOUND with the cmid.
func TestSendToUnknownUser(t *testing.T) {
	n := newNode(t, 1, nil)
	alice := n.register(t, "+15550000301")
	ep := n.login(t, alice, 0)
	n.submit(storage.Op{Kind: storage.OpSend, From: alice.user, FromDevice: 1, User: 999999, CMID: 3, Body: []byte("x"), Conn: ep.ref})
	if e := ep.take(t, protocol.KindError).(*pb.Error); e.Code != protocol.CodeNotFound || e.Cmid != 3 {
		t.Fatalf("send to nobody: %v, want NOT_FOUND cmid 3", e)
	}
}

// TestTestNumbers: numbers under the test prefix verify with the test code
// and no code is sent.
func TestTestNumbers(t *testing.T) {
	n := newNode(t, 1, func(c *storage.Config) { c.TestPrefix, c.TestCode = "+1555999", "424242" })
	ep := newEndpoint(t)
	n.submit(storage.Op{Kind: storage.OpRequestCode, Phone: "+15559990001", RID: 1, Conn: ep.ref})
	ep.take(t, protocol.KindCodeSent)
	if got := n.codes.code("+15559990001"); got != "" {
		t.Fatalf("a code was sent to a test number: %q", got)
	}
	n.submit(storage.Op{Kind: storage.OpVerify, Phone: "+15559990001", Code: "424242", RID: 2, Conn: ep.ref})
	ep.take(t, protocol.KindRegistered)
}

// TestDedupeAcrossRestartOutOfOrder: the shard's highest-cmid shortcut
// must not mistake a retry for a new send when a lower cmid comes first
// after a restart.
func TestDedupeAcrossRestartOutOfOrder(t *testing.T) {
	n := newNode(t, 1, nil)
	alice, bob := n.register(t, "+15550000901"), n.register(t, "+15550000902")
	aep := n.login(t, alice, 0)
	id10 := n.send(t, alice, aep, bob.user, 10, "ten")
	n.restart()
	aep = n.login(t, alice, 0)
	n.send(t, alice, aep, bob.user, 8, "eight")
	if again := n.send(t, alice, aep, bob.user, 10, "ten"); again != id10 {
		t.Fatalf("retried cmid 10 got id %d, want %d", again, id10)
	}
	n.send(t, alice, aep, bob.user, 11, "eleven")
	bep := n.login(t, bob, 0)
	var bodies []string
	for _, m := range n.drain(t, bob, bep) {
		bodies = append(bodies, string(m.Body))
	}
	if fmt.Sprint(bodies) != "[ten eight eleven]" {
		t.Fatalf("bob got %v, want [ten eight eleven]", bodies)
	}
}

// TestInboxSeqNeverReused: an inbox key is set once, which the single
// deletes of acknowledged entries rely on; after every entry is deleted
// and the shard restarts, the next entry takes the next seq.
func TestInboxSeqNeverReused(t *testing.T) {
	n := newNode(t, 1, nil)
	alice, bob := n.register(t, "+15550000951"), n.register(t, "+15550000952")
	aep := n.login(t, alice, 0)
	n.send(t, alice, aep, bob.user, 1, "one")
	bep := n.login(t, bob, 0)
	n.drain(t, bob, bep)
	n.restart()
	aep = n.login(t, alice, 0)
	n.send(t, alice, aep, bob.user, 2, "two")
	bep = n.login(t, bob, 0)
	if m := bep.messages(t, 1)[0]; m.Seq != 2 || string(m.Body) != "two" {
		t.Fatalf("after a restart with an empty inbox got %+v, want seq 2", m)
	}
}
