package storage_test

import (
	"testing"
	"time"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
	"github.com/parley-im/parley/storage"
)

// createGroup creates a group as a and returns its info.
func (n *node) createGroup(t *testing.T, a account, ep *endpoint, name string, members ...uint64) *pb.GroupInfo {
	t.Helper()
	n.submit(storage.Op{Kind: storage.OpGroupCreate, User: a.user, Name: name, Users: members, RID: 1, Conn: ep.ref})
	return ep.take(t, protocol.KindGroupInfo).(*pb.GroupInfo)
}

func (n *node) groupUpdate(t *testing.T, a account, ep *endpoint, g uint64, gop pb.GroupOp, users ...uint64) {
	t.Helper()
	n.submit(storage.Op{Kind: storage.OpGroupUpdate, User: a.user, Group: g, GroupOp: gop, Users: users, RID: 2, Conn: ep.ref})
}

func (n *node) groupSend(t *testing.T, a account, ep *endpoint, g, cmid uint64, body string) uint64 {
	t.Helper()
	n.submit(storage.Op{Kind: storage.OpSend, From: a.user, FromDevice: a.device, Group: g, CMID: cmid, Body: []byte(body), Conn: ep.ref})
	f := ep.takeAny(t, protocol.KindSent, protocol.KindError)
	if e, ok := f.(*pb.Error); ok {
		t.Fatalf("group send: %v", e.Code)
	}
	return f.(*pb.Sent).Id
}

// TestGroupLifecycle: create, fan out, receipts, remove, leave with
// succession, and the refusals, across three shards.
func TestGroupLifecycle(t *testing.T) {
	n := newNode(t, 3, nil)
	alice, bob, carol, dave := n.register(t, "+15550002001"), n.register(t, "+15550002002"), n.register(t, "+15550002003"), n.register(t, "+15550002004")
	aep, bep, cep, dep := n.login(t, alice, 0), n.login(t, bob, 0), n.login(t, carol, 0), n.login(t, dave, 0)

	info := n.createGroup(t, alice, aep, "trip", bob.user, carol.user, 1<<40)
	if len(info.Members) != 3 || info.Members[0].User != alice.user || info.Members[0].Role != pb.GroupRole_ROLE_ADMIN {
		t.Fatalf("created %v", info)
	}
	if len(info.Refused) != 1 || info.Refused[0].User != 1<<40 || info.Refused[0].Code != protocol.CodeNotFound {
		t.Fatalf("refused %v, want the unknown user NOT_FOUND", info.Refused)
	}
	g := info.Group
	for _, ep := range []*endpoint{bep, cep} {
		ev := ep.take(t, protocol.KindGroupEvent).(*pb.GroupEvent)
		if ev.Op != pb.GroupOp_GROUP_OP_ADD || ev.Group != g || ev.Gseq != 2 {
			t.Fatalf("member got %v, want the ADD event (gseq 2)", ev)
		}
	}

	id := n.groupSend(t, alice, aep, g, 1, "hello all")
	for _, ep := range []*endpoint{bep, cep} {
		m := ep.take(t, protocol.KindMessage).(codec.Message)
		if m.ID != id || m.Group != g || m.GSeq != 3 || m.From != alice.user || string(m.Body) != "hello all" {
			t.Fatalf("member got %+v", m)
		}
	}
	n.ack(bob, bep, 2) // the ADD event and the message
	r := aep.take(t, protocol.KindReceipts).(*pb.Receipts)
	if r.Group != g || r.Type != pb.ReceiptType_RECEIPT_DELIVERED || len(r.Items) != 1 || r.Items[0].Peer != bob.user || r.Items[0].UpTo != id {
		t.Fatalf("alice got %v, want bob's delivered receipt", r)
	}

	// Not a member, not an admin.
	n.submit(storage.Op{Kind: storage.OpSend, From: dave.user, FromDevice: 1, Group: g, CMID: 1, Body: []byte("x"), Conn: dep.ref})
	if e := dep.take(t, protocol.KindError).(*pb.Error); e.Code != protocol.CodeNotMember {
		t.Fatalf("non-member send: %v", e.Code)
	}
	n.submit(storage.Op{Kind: storage.OpGroupGet, User: dave.user, Group: g, RID: 3, Conn: dep.ref})
	if e := dep.take(t, protocol.KindError).(*pb.Error); e.Code != protocol.CodeNotMember {
		t.Fatalf("non-member get: %v", e.Code)
	}
	n.groupUpdate(t, bob, bep, g, pb.GroupOp_GROUP_OP_ADD, dave.user)
	if e := bep.take(t, protocol.KindError).(*pb.Error); e.Code != protocol.CodeNotAdmin {
		t.Fatalf("member add: %v", e.Code)
	}

	// Removal: carol gets the event and nothing after it.
	n.groupUpdate(t, alice, aep, g, pb.GroupOp_GROUP_OP_REMOVE, carol.user)
	aep.take(t, protocol.KindOK)
	if ev := cep.take(t, protocol.KindGroupEvent).(*pb.GroupEvent); ev.Op != pb.GroupOp_GROUP_OP_REMOVE || ev.Members[0] != carol.user {
		t.Fatalf("carol got %v", ev)
	}
	n.groupSend(t, alice, aep, g, 2, "without carol")
	bep.take(t, protocol.KindGroupEvent)
	if m := bep.take(t, protocol.KindMessage).(codec.Message); string(m.Body) != "without carol" {
		t.Fatalf("bob got %q", m.Body)
	}
	// Its Sent meant every member's shard had stored it: carol's shard would
	// have pushed it to her before the markers.
	n.nothingMore(t, carol, cep)

	// The last admin leaves: the longest-standing member is promoted.
	n.groupUpdate(t, alice, aep, g, pb.GroupOp_GROUP_OP_LEAVE)
	aep.take(t, protocol.KindOK)
	bep.take(t, protocol.KindGroupEvent) // LEAVE
	if ev := bep.take(t, protocol.KindGroupEvent).(*pb.GroupEvent); ev.Op != pb.GroupOp_GROUP_OP_PROMOTE || ev.Members[0] != bob.user || ev.Actor != 0 {
		t.Fatalf("after the last admin left, bob got %v", ev)
	}
	n.submit(storage.Op{Kind: storage.OpGroupList, User: bob.user, RID: 4, Conn: bep.ref})
	if l := bep.take(t, protocol.KindGroupListResult).(*pb.GroupListResult); len(l.Groups) != 1 || l.Groups[0] != g {
		t.Fatalf("bob's groups %v", l.Groups)
	}
	n.submit(storage.Op{Kind: storage.OpGroupList, User: carol.user, RID: 4, Conn: cep.ref})
	if l := cep.take(t, protocol.KindGroupListResult).(*pb.GroupListResult); len(l.Groups) != 0 {
		t.Fatalf("carol's groups %v, want none", l.Groups)
	}
}

// TestLinkedDevices: linking a companion, self copies, read sync, the
// device list, revocation and the limits.
func TestLinkedDevices(t *testing.T) {
	n := newNode(t, 2, nil)
	alice, bob := n.register(t, "+15550003001"), n.register(t, "+15550003002")
	primary := n.login(t, alice, 0)
	companion := n.link(t, alice, primary, "laptop")
	cep := n.login(t, companion, 0)
	bep := n.login(t, bob, 0)

	id := n.send(t, alice, primary, bob.user, 1, "from my phone")
	if m := cep.take(t, protocol.KindMessage).(codec.Message); m.ID != id || m.To != bob.user || m.From != alice.user || m.FromDevice != alice.device {
		t.Fatalf("companion got %+v, want the copy of the phone's message", m)
	}
	if m := primary.take(t, protocol.KindMessage).(codec.Message); m.ID != id {
		t.Fatalf("primary got %+v, want its own message in the shared order", m)
	}
	reply := n.send(t, bob, bep, alice.user, 1, "hi both")
	for _, ep := range []*endpoint{primary, cep} {
		if m := ep.take(t, protocol.KindMessage).(codec.Message); m.ID != reply {
			t.Fatalf("device got %+v, want bob's reply", m)
		}
	}
	// Reading on the companion tells the phone.
	n.submit(storage.Op{Kind: storage.OpRead, User: bob.user, From: alice.user, UpTo: reply, RID: 5, Conn: cep.ref})
	cep.take(t, protocol.KindOK)
	if r := primary.take(t, protocol.KindReceipt).(codec.Receipt); r.Type != pb.ReceiptType_RECEIPT_SELF_READ || r.Peer != bob.user || r.UpTo != reply {
		t.Fatalf("primary got %+v, want the read sync", r)
	}

	n.submit(storage.Op{Kind: storage.OpDevices, User: alice.user, Device: alice.device, RID: 6, Conn: primary.ref})
	if l := primary.take(t, protocol.KindDeviceList).(*pb.DeviceList); len(l.Devices) != 2 || !l.Devices[0].Primary || !l.Devices[1].Online {
		t.Fatalf("devices %v", l.Devices)
	}
	// A companion cannot link or revoke others.
	n.submit(storage.Op{Kind: storage.OpRevokeDevice, User: alice.user, Device: companion.device, Target: alice.device, RID: 7, Conn: cep.ref})
	if e := cep.take(t, protocol.KindError).(*pb.Error); e.Code != protocol.CodeInvalidArgument {
		t.Fatalf("companion revoking the primary: %v", e.Code)
	}
	for i := 0; i < 3; i++ {
		n.link(t, alice, primary, "extra")
	}
	code := n.linkCode(t, newEndpoint(t))
	n.submit(storage.Op{Kind: storage.OpLinkApprove, Code: code, User: alice.user, Device: alice.device, RID: 8, Conn: primary.ref})
	if e := primary.take(t, protocol.KindError).(*pb.Error); e.Code != protocol.CodeTooManyDevices {
		t.Fatalf("fifth companion: %v", e.Code)
	}
	// Revocation disconnects at once and ends the credential.
	n.submit(storage.Op{Kind: storage.OpRevokeDevice, User: alice.user, Device: alice.device, Target: companion.device, RID: 9, Conn: primary.ref})
	primary.take(t, protocol.KindOK)
	cep.wait(t, "revocation", func(e *endpoint) bool { return e.isClosed })
	if cep.closed != protocol.CodeDeviceRevoked {
		t.Fatalf("companion closed with %v", cep.closed)
	}
	again := newEndpoint(t)
	n.submit(storage.Op{Kind: storage.OpLogin, User: companion.user, Device: companion.device, Credential: companion.cred, Conn: again.ref})
	again.wait(t, "refusal", func(e *endpoint) bool { return e.isClosed })
	if again.closed != protocol.CodeDeviceRevoked {
		t.Fatalf("revoked login: %v", again.closed)
	}
	// A code nobody asked for, or used twice.
	n.submit(storage.Op{Kind: storage.OpLinkApprove, Code: code, User: alice.user, Device: alice.device, RID: 10, Conn: primary.ref})
	if e := primary.take(t, protocol.KindError).(*pb.Error); e.Code != protocol.CodeLinkExpired {
		t.Fatalf("used code: %v", e.Code)
	}
}

// linkCode asks for a link code on a companion endpoint.
func (n *node) linkCode(t *testing.T, ep *endpoint) string {
	t.Helper()
	var random [10]byte
	n.clock.mu.Lock()
	random[0], random[1] = byte(n.clock.now.UnixNano()), byte(len(ep.frames)+int(n.clock.now.UnixNano()>>8))
	n.clock.now = n.clock.now.Add(time.Nanosecond * 257)
	n.clock.mu.Unlock()
	n.submit(storage.Op{Kind: storage.OpLinkRequest, Code: storage.NewLinkCode(random), Name: "companion", RID: 1, Conn: ep.ref})
	return ep.take(t, protocol.KindLinkCode).(*pb.LinkCode).Code
}

// link links a companion device to a (whose primary is logged in on ep).
func (n *node) link(t *testing.T, a account, ep *endpoint, name string) account {
	t.Helper()
	cep := newEndpoint(t)
	code := n.linkCode(t, cep)
	n.submit(storage.Op{Kind: storage.OpLinkApprove, Code: code, User: a.user, Device: a.device, RID: 2, Conn: ep.ref})
	ep.take(t, protocol.KindOK)
	l := cep.take(t, protocol.KindLinked).(*pb.Linked)
	return account{user: l.User, device: l.Device, cred: l.Credential}
}

// TestPresenceAndPrivacy: watchers see online and last seen as the
// privacy setting allows.
func TestPresenceAndPrivacy(t *testing.T) {
	n := newNode(t, 2, nil)
	alice, bob, carol := n.register(t, "+15550004001"), n.register(t, "+15550004002"), n.register(t, "+15550004003")
	bep, cep := n.login(t, bob, 0), n.login(t, carol, 0)
	n.submit(storage.Op{Kind: storage.OpWatch, User: alice.user, From: bob.user, Conn: bep.ref})
	if p := bep.take(t, protocol.KindPresence).(*pb.Presence); p.User != alice.user || p.Online {
		t.Fatalf("initial presence %v, want offline", p)
	}
	aep := n.login(t, alice, 0)
	if p := bep.take(t, protocol.KindPresence).(*pb.Presence); !p.Online {
		t.Fatalf("after login %v, want online", p)
	}
	// Contacts only: bob is alice's contact, carol is not.
	n.submit(storage.Op{Kind: storage.OpSubscribe, User: alice.user, Device: alice.device, Users: []uint64{bob.user}, RID: 1, Conn: aep.ref})
	aep.take(t, protocol.KindOK)
	n.submit(storage.Op{Kind: storage.OpSetPrivacy, User: alice.user, Visibility: pb.Visibility_VISIBILITY_CONTACTS, RID: 2, Conn: aep.ref})
	aep.take(t, protocol.KindOK)
	n.submit(storage.Op{Kind: storage.OpWatch, User: alice.user, From: carol.user, Conn: cep.ref})
	if p := cep.take(t, protocol.KindPresence).(*pb.Presence); p.Online || p.LastSeenMs != 0 {
		t.Fatalf("carol sees %v, want nothing", p)
	}
	n.clock.Advance(2 * time.Second) // past the throttle
	n.submit(storage.Op{Kind: storage.OpLogout, User: alice.user, Device: alice.device, Conn: aep.ref})
	p := bep.take(t, protocol.KindPresence).(*pb.Presence)
	for p.Online { // the privacy change's own notice may come first
		p = bep.take(t, protocol.KindPresence).(*pb.Presence)
	}
	if p.LastSeenMs != uint64(n.clock.Now().UnixMilli()) {
		t.Fatalf("bob sees %v, want offline, last seen now", p)
	}
	if p := cep.take(t, protocol.KindPresence).(*pb.Presence); p.Online || p.LastSeenMs != 0 {
		t.Fatalf("carol sees %v after the logout, want nothing", p)
	}
}

// TestTypingIsNeverStored: typing reaches a live device and writes nothing.
func TestTypingIsNeverStored(t *testing.T) {
	n := newNode(t, 1, nil)
	alice, bob := n.register(t, "+15550005001"), n.register(t, "+15550005002")
	n.login(t, alice, 0)
	bep := n.login(t, bob, 0)
	bep.take(t, protocol.KindSynced)
	before := n.shards[0].Stats()
	n.submit(storage.Op{Kind: storage.OpTyping, User: bob.user, From: alice.user, TypingState: pb.TypingState_TYPING_STARTED})
	if it := bep.take(t, protocol.KindIsTyping).(*pb.IsTyping); it.From != alice.user {
		t.Fatalf("bob got %v", it)
	}
	after := n.shards[0].Stats()
	if after.Commits != before.Commits || after.Entries != before.Entries {
		t.Fatalf("typing wrote: commits %d→%d entries %d→%d", before.Commits, after.Commits, before.Entries, after.Entries)
	}
}

// TestContactsAreEveryDevices: with contacts-only presence, a user's
// contacts are those of all its devices; one device's subscription does
// not replace another's.
func TestContactsAreEveryDevices(t *testing.T) {
	n := newNode(t, 2, nil)
	alice, bob, carol := n.register(t, "+15550006001"), n.register(t, "+15550006002"), n.register(t, "+15550006003")
	phone := n.login(t, alice, 0)
	laptop := n.link(t, alice, phone, "laptop")
	lep := n.login(t, laptop, 0)
	n.submit(storage.Op{Kind: storage.OpSubscribe, User: alice.user, Device: alice.device, Users: []uint64{bob.user}, RID: 1, Conn: phone.ref})
	phone.take(t, protocol.KindOK)
	n.submit(storage.Op{Kind: storage.OpSubscribe, User: alice.user, Device: laptop.device, Users: []uint64{carol.user}, RID: 1, Conn: lep.ref})
	lep.take(t, protocol.KindOK)
	n.submit(storage.Op{Kind: storage.OpSetPrivacy, User: alice.user, Visibility: pb.Visibility_VISIBILITY_CONTACTS, RID: 2, Conn: phone.ref})
	phone.take(t, protocol.KindOK)
	for _, watcher := range []account{bob, carol} {
		ep := n.login(t, watcher, 0)
		n.submit(storage.Op{Kind: storage.OpWatch, User: alice.user, From: watcher.user, Conn: ep.ref})
		if p := ep.take(t, protocol.KindPresence).(*pb.Presence); !p.Online {
			t.Fatalf("contact %d sees %v, want alice online", watcher.user, p)
		}
	}
}
