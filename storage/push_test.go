package storage_test

import (
	"sync"
	"testing"
	"time"

	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
	"github.com/parley-im/parley/storage"
)

// pushBox is a storage.Pusher that records what the shards hand it.
type pushBox struct {
	mu      sync.Mutex
	offers  map[pb.PushProvider]bool
	jobs    []storage.PushJob
	cancels int
}

func newPushBox() *pushBox {
	return &pushBox{offers: map[pb.PushProvider]bool{pb.PushProvider_PUSH_APNS: true, pb.PushProvider_PUSH_FCM: true}}
}

func (b *pushBox) Offers(p pb.PushProvider) bool { return b.offers[p] }

func (b *pushBox) PushDue(j storage.PushJob) {
	b.mu.Lock()
	b.jobs = append(b.jobs, j)
	b.mu.Unlock()
}

func (b *pushBox) PushCancel(user uint64, device uint32) {
	b.mu.Lock()
	b.cancels++
	b.mu.Unlock()
}

// take returns the jobs handed over since the last take.
func (b *pushBox) take() []storage.PushJob {
	b.mu.Lock()
	defer b.mu.Unlock()
	j := b.jobs
	b.jobs = nil
	return j
}

// pushNode is a one-shard node whose shard pushes through a pushBox.
func pushNode(t *testing.T) (*node, *pushBox) {
	box := newPushBox()
	return newNode(t, 1, func(c *storage.Config) { c.Pusher = box }), box
}

// settle waits until every effect of what was submitted before has been
// carried out: two answers from later cycles of a's shard (as nothingMore).
func (n *node) settle(t *testing.T, a account) {
	t.Helper()
	ep := newEndpoint(t)
	for rid := uint32(1); rid <= 2; rid++ {
		n.submit(storage.Op{Kind: storage.OpGroupList, User: a.user, RID: rid, Conn: ep.ref})
		ep.take(t, protocol.KindGroupListResult)
	}
}

// registerPush registers token for a's device through its session ep.
func (n *node) registerPush(t *testing.T, a account, ep *endpoint, p pb.PushProvider, token string, show bool) any {
	t.Helper()
	n.rid++
	n.submit(storage.Op{Kind: storage.OpPushRegister, User: a.user, Device: a.device, RID: n.rid, Conn: ep.ref,
		Push: &storage.PushOp{Provider: p, Token: token, ShowSender: show}})
	return ep.takeAny(t, protocol.KindOK, protocol.KindError)
}

// offlineWithToken registers a user with a push token and ends its
// session.
func offlineWithToken(t *testing.T, n *node, phone, token string, show bool) account {
	t.Helper()
	a := n.register(t, phone)
	ep := n.login(t, a, 0)
	if r, ok := n.registerPush(t, a, ep, pb.PushProvider_PUSH_APNS, token, show).(*pb.Ok); !ok {
		t.Fatalf("PUSH_REGISTER answered %+v", r)
	}
	n.submit(storage.Op{Kind: storage.OpLogout, User: a.user, Device: a.device, Conn: ep.ref})
	return a
}

// TestPushDecidedWithEntry: an entry for an offline device with a token
// hands the Pusher one job per cycle, counting; the report of a push
// advances the record, and a later entry is owed at the interval's end
// ([S-19-4]); the sender is named only when allowed ([S-19-5]).
func TestPushDecidedWithEntry(t *testing.T) {
	n, box := pushNode(t)
	alice := offlineWithToken(t, n, "+15550000001", "aa01", true)
	carol := offlineWithToken(t, n, "+15550000003", "cc03", false)
	bob := n.register(t, "+15550000002")
	bobEP := n.login(t, bob, 0)

	n.send(t, bob, bobEP, alice.user, 1, "one")
	n.send(t, bob, bobEP, carol.user, 2, "one")
	n.settle(t, alice)
	jobs := box.take()
	if len(jobs) != 2 {
		t.Fatalf("jobs after one message each: %+v, want 2", jobs)
	}
	for _, j := range jobs {
		switch j.User {
		case alice.user:
			if j.Count != 1 || j.Token != "aa01" || j.Sender != bob.user || !j.NotBefore.IsZero() {
				t.Errorf("alice's job %+v, want count 1, token aa01, sender bob, at once", j)
			}
		case carol.user:
			if j.Count != 1 || j.Sender != 0 || j.Group != 0 {
				t.Errorf("carol's job %+v, want count 1 and no sender (not allowed)", j)
			}
		}
	}

	n.send(t, bob, bobEP, alice.user, 3, "two")
	n.send(t, bob, bobEP, alice.user, 4, "three")
	n.settle(t, alice)
	jobs = box.take()
	if len(jobs) == 0 || jobs[len(jobs)-1].Count != 3 {
		t.Fatalf("jobs after three messages: %+v, want the last with count 3", jobs)
	}
	if got := n.shards[0].PushStats().Coalesced; got != 2 {
		t.Errorf("coalesced %d, want 2", got)
	}

	next := n.clock.Now().Add(30 * time.Second)
	n.submit(storage.Op{Kind: storage.OpPushDone, User: alice.user, Device: alice.device,
		Push: &storage.PushOp{Token: "aa01", Sent: 3, NextMS: uint64(next.UnixMilli()), Outcome: storage.PushSent}})
	n.settle(t, alice)
	if jobs := box.take(); len(jobs) != 0 {
		t.Fatalf("jobs after the push of everything: %+v, want none", jobs)
	}
	n.send(t, bob, bobEP, alice.user, 5, "four")
	n.settle(t, alice)
	jobs = box.take()
	if len(jobs) != 1 || jobs[0].Count != 4 || !jobs[0].NotBefore.Equal(time.UnixMilli(next.UnixMilli())) {
		t.Fatalf("jobs after a message within the interval: %+v, want count 4 not before %v", jobs, next)
	}

	// A failed push stays owed, from its new time.
	later := next.Add(30 * time.Second)
	n.submit(storage.Op{Kind: storage.OpPushDone, User: alice.user, Device: alice.device,
		Push: &storage.PushOp{Token: "aa01", Sent: 4, NextMS: uint64(later.UnixMilli()), Outcome: storage.PushFailed}})
	n.settle(t, alice)
	if jobs := box.take(); len(jobs) != 1 || jobs[0].Count != 4 || !jobs[0].NotBefore.Equal(time.UnixMilli(later.UnixMilli())) {
		t.Fatalf("jobs after a failed push: %+v, want count 4 again, not before %v", jobs, later)
	}
}

// TestPushNotWaking: nothing is owed to an online device, nor for entries
// that do not wake ([S-19-3]): receipts, reactions, edits, one's own
// copies.
func TestPushNotWaking(t *testing.T) {
	n, box := pushNode(t)
	alice := offlineWithToken(t, n, "+15550000011", "aa11", true)
	bob := n.register(t, "+15550000012")
	bobEP := n.login(t, bob, 0)

	for i, typ := range []pb.ContentType{pb.ContentType_CONTENT_REACTION, pb.ContentType_CONTENT_EDIT} {
		n.submit(storage.Op{Kind: storage.OpSend, From: bob.user, FromDevice: bob.device, User: alice.user,
			CMID: uint64(10 + i), Type: typ, Ref: 1, Body: []byte("x"), Conn: bobEP.ref})
		bobEP.take(t, protocol.KindSent)
	}
	n.rid++
	n.submit(storage.Op{Kind: storage.OpRead, User: alice.user, From: bob.user, UpTo: 1, RID: n.rid, Conn: bobEP.ref})
	bobEP.take(t, protocol.KindOK)
	// alice's own message to bob: its copy is for alice's other devices.
	n.submit(storage.Op{Kind: storage.OpSend, From: alice.user, FromDevice: alice.device, User: bob.user, CMID: 1, Body: []byte("mine"), Conn: bobEP.ref})
	bobEP.take(t, protocol.KindSent)
	n.settle(t, alice)
	if jobs := box.take(); len(jobs) != 0 {
		t.Fatalf("jobs for entries that do not wake: %+v", jobs)
	}

	aliceEP := n.login(t, alice, 0)
	n.send(t, bob, bobEP, alice.user, 20, "online")
	n.settle(t, alice)
	if jobs := box.take(); len(jobs) != 0 {
		t.Fatalf("jobs for an online device: %+v", jobs)
	}
	_ = aliceEP
}

// TestPushLoginDropsOwed: a login drops what the device was owed and
// starts its count again ([S-19-4]).
func TestPushLoginDropsOwed(t *testing.T) {
	n, box := pushNode(t)
	alice := offlineWithToken(t, n, "+15550000021", "aa21", false)
	bob := n.register(t, "+15550000022")
	bobEP := n.login(t, bob, 0)
	n.send(t, bob, bobEP, alice.user, 1, "one")
	n.send(t, bob, bobEP, alice.user, 2, "two")
	ep := n.login(t, alice, 0)
	n.submit(storage.Op{Kind: storage.OpLogout, User: alice.user, Device: alice.device, Conn: ep.ref})
	n.settle(t, alice)
	box.take()
	n.send(t, bob, bobEP, alice.user, 3, "three")
	n.settle(t, alice)
	if jobs := box.take(); len(jobs) != 1 || jobs[0].Count != 1 {
		t.Fatalf("jobs after a login and a new message: %+v, want one with count 1", jobs)
	}
	n.restart()
	n.settle(t, alice)
	if jobs := box.take(); len(jobs) != 1 || jobs[0].Count != 1 {
		t.Fatalf("jobs replayed at open: %+v, want the one owed, count 1", jobs)
	}
}

// TestPushReplayedAfterCrash: what was owed when the shard stopped is
// handed over again at open, and nothing once the push was reported
// ([S-19-6]).
func TestPushReplayedAfterCrash(t *testing.T) {
	n, box := pushNode(t)
	alice := offlineWithToken(t, n, "+15550000031", "aa31", true)
	bob := n.register(t, "+15550000032")
	bobEP := n.login(t, bob, 0)
	n.send(t, bob, bobEP, alice.user, 1, "one")
	n.send(t, bob, bobEP, alice.user, 2, "two")
	n.settle(t, alice)
	box.take()

	n.restart()
	n.settle(t, alice)
	jobs := box.take()
	if len(jobs) != 1 || jobs[0].Count != 2 || jobs[0].Sender != bob.user || jobs[0].Token != "aa31" {
		t.Fatalf("jobs replayed at open: %+v, want one with count 2 from bob", jobs)
	}
	n.submit(storage.Op{Kind: storage.OpPushDone, User: alice.user, Device: alice.device,
		Push: &storage.PushOp{Token: "aa31", Sent: 2, Outcome: storage.PushSent}})
	n.settle(t, alice)
	n.restart()
	n.settle(t, alice)
	if jobs := box.take(); len(jobs) != 0 {
		t.Fatalf("jobs replayed after the push was reported: %+v, want none", jobs)
	}
}

// TestPushTokenRemoved: a token the provider refuses is deleted, unless
// the device registered another meanwhile; revocation and an empty token
// remove the registration too ([S-19-2]).
func TestPushTokenRemoved(t *testing.T) {
	n, box := pushNode(t)
	alice := offlineWithToken(t, n, "+15550000041", "aa41", false)
	bob := n.register(t, "+15550000042")
	bobEP := n.login(t, bob, 0)
	n.send(t, bob, bobEP, alice.user, 1, "one")
	n.settle(t, alice)
	box.take()

	// A report for a token the device no longer holds changes nothing.
	n.submit(storage.Op{Kind: storage.OpPushDone, User: alice.user, Device: alice.device,
		Push: &storage.PushOp{Token: "old", Outcome: storage.PushTokenInvalid}})
	n.submit(storage.Op{Kind: storage.OpPushDone, User: alice.user, Device: alice.device,
		Push: &storage.PushOp{Token: "aa41", Outcome: storage.PushTokenInvalid}})
	n.settle(t, alice)
	if got := n.shards[0].PushStats().TokensRemoved; got != 1 {
		t.Fatalf("tokens removed %d, want 1", got)
	}
	n.send(t, bob, bobEP, alice.user, 2, "two")
	n.restart()
	n.settle(t, alice)
	if jobs := box.take(); len(jobs) != 0 {
		t.Fatalf("jobs after the token was refused: %+v, want none", jobs)
	}

	// An empty token removes the registration.
	dave := offlineWithToken(t, n, "+15550000043", "dd43", false)
	ep := n.login(t, dave, 0)
	if r, ok := n.registerPush(t, dave, ep, pb.PushProvider_PUSH_NONE, "", false).(*pb.Ok); !ok {
		t.Fatalf("unregister answered %+v", r)
	}
	n.submit(storage.Op{Kind: storage.OpLogout, User: dave.user, Device: dave.device, Conn: ep.ref})
	n.send(t, bob, bobEP, dave.user, 3, "one")
	n.settle(t, dave)
	if jobs := box.take(); len(jobs) != 0 {
		t.Fatalf("jobs after unregistering: %+v, want none", jobs)
	}
}

// TestPushRegisterRefusals: a provider the node does not offer is refused
// PUSH_UNAVAILABLE, and so is every provider without a Pusher.
func TestPushRegisterRefusals(t *testing.T) {
	n, _ := pushNode(t)
	a := n.register(t, "+15550000051")
	ep := n.login(t, a, 0)
	if e, ok := n.registerPush(t, a, ep, pb.PushProvider_PUSH_WEBHOOK, "https://push.example/x", false).(*pb.Error); !ok || e.Code != protocol.CodePushUnavailable {
		t.Fatalf("a provider not offered answered %+v, want PUSH_UNAVAILABLE", e)
	}

	plain := newNode(t, 1, nil)
	b := plain.register(t, "+15550000052")
	bep := plain.login(t, b, 0)
	if e, ok := plain.registerPush(t, b, bep, pb.PushProvider_PUSH_APNS, "aa", false).(*pb.Error); !ok || e.Code != protocol.CodePushUnavailable {
		t.Fatalf("no Pusher answered %+v, want PUSH_UNAVAILABLE", e)
	}
	if _, ok := plain.registerPush(t, b, bep, pb.PushProvider_PUSH_NONE, "", false).(*pb.Ok); !ok {
		t.Fatal("unregistering without a Pusher is not answered OK")
	}
}

// TestPushGroupMessage: a group message wakes an offline member, naming
// the sender and the group when allowed; the group's events do not
// ([S-19-3]). Two shards, so the message may reach the member through the
// outbox.
func TestPushGroupMessage(t *testing.T) {
	box := newPushBox()
	n := newNode(t, 2, func(c *storage.Config) { c.Pusher = box })
	alice := offlineWithToken(t, n, "+15550000061", "aa61", true)
	bob := n.register(t, "+15550000062")
	bobEP := n.login(t, bob, 0)
	g := n.createGroup(t, bob, bobEP, "g", alice.user)
	n.settle(t, alice)
	if jobs := box.take(); len(jobs) != 0 {
		t.Fatalf("jobs for a group event: %+v, want none", jobs)
	}
	n.groupSend(t, bob, bobEP, g.Group, 1, "hello")
	n.settle(t, alice)
	jobs := box.take()
	if len(jobs) != 1 || jobs[0].User != alice.user || jobs[0].Count != 1 || jobs[0].Sender != bob.user || jobs[0].Group != g.Group {
		t.Fatalf("jobs for a group message: %+v, want one for alice, count 1, from bob in group %d", jobs, g.Group)
	}
}
