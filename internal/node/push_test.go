package node_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/internal/node"
	"github.com/parley-im/parley/internal/nodetest"
	"github.com/parley-im/parley/internal/pushtest"
	"github.com/parley-im/parley/internal/wiretest"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
	"github.com/parley-im/parley/push"
	"github.com/parley-im/parley/storage"
)

// pushRig is a node whose pushes go to a fake push service, on a clock
// the test moves.
type pushRig struct {
	*nodetest.Node
	fake    *pushtest.Server
	clock   *pushtest.Clock
	reports chan storage.Op // every push report, once queued on its shard
}

const pushInterval = time.Minute

func startPushRig(t *testing.T) *pushRig {
	fake := pushtest.Start(t)
	r := &pushRig{fake: fake, clock: pushtest.NewClock(), reports: make(chan storage.Op, 64)}
	apns, err := push.NewAPNs(push.APNsConfig{Key: pushtest.APNsKey(t), KeyID: "KEY1234567", TeamID: "TEAM123456",
		Topic: "im.parley.app", Host: fake.URL(), TLS: fake.TLS()})
	if err != nil {
		t.Fatal(err)
	}
	hook, err := push.NewWebhook(push.WebhookConfig{Secret: pushtest.WebhookSecret, AllowPrivate: true, TLS: fake.TLS()})
	if err != nil {
		t.Fatal(err)
	}
	r.Node = nodetest.Start(t, func(c *node.Config) {
		c.Push = push.Config{APNs: apns, Webhook: hook, Interval: pushInterval, Clock: r.clock}
		c.AdminAddr = "127.0.0.1:0"
		c.OnPushReport = func(op storage.Op) { r.reports <- op }
	})
	return r
}

// report waits for the next push report.
func (r *pushRig) report(t *testing.T) storage.Op {
	t.Helper()
	select {
	case op := <-r.reports:
		return op
	case <-time.After(nodetest.Timeout):
		t.Fatal("no push report")
		return storage.Op{}
	}
}

// barrier returns once every effect of what c sent to user's shard before
// has been carried out, pushes handed to the dispatcher included: a READ
// runs on user's shard, in a later cycle, and its OK comes after the
// effects of every earlier cycle.
func barrier(t *testing.T, c *wiretest.Client, user uint64) {
	t.Helper()
	rid := c.NextRID()
	c.Send(protocol.KindRead, &pb.Read{Rid: rid, Peer: user, UpTo: 1})
	if ok := c.Expect(protocol.KindOK, protocol.KindMessage, protocol.KindReceipt, protocol.KindSynced, protocol.KindPresence); len(ok.Body) == 0 {
		t.Fatal("empty OK")
	}
}

// offlineWithToken registers token for alice's device, then ends its
// session, and returns bob's connection, subscribed to alice's presence,
// once alice's shard has ended the session.
func offlineWithToken(t *testing.T, r *pushRig, alice, bob wiretest.User, p pb.PushProvider, token string, show bool) *wiretest.Client {
	t.Helper()
	b, _ := r.Login(t, bob, 0)
	b.Expect(protocol.KindSynced)
	a, _ := r.Login(t, alice, 0)
	a.Expect(protocol.KindSynced)
	registerPush(t, a, p, token, show)
	b.Send(protocol.KindPresenceSubscribe, &pb.PresenceSubscribe{Rid: b.NextRID(), Users: []uint64{alice.ID}})
	a.Conn.Close()
	b.ExpectOffline(alice.ID, true)
	return b
}

// registerPush registers token for c's device and expects OK.
func registerPush(t *testing.T, c *wiretest.Client, p pb.PushProvider, token string, show bool) {
	t.Helper()
	c.Send(protocol.KindPushRegister, &pb.PushRegister{Rid: c.NextRID(), Provider: p, Token: token, ShowSender: show})
	c.Expect(protocol.KindOK, protocol.KindSynced)
}

// TestPushThroughNode runs pushes through a real node and a fake APNs: an
// offline device gets one push for its first message and one coalesced
// push per interval for the next ones, with the sender only when allowed;
// none while online; none once the provider refused its token ([S-19-2],
// [S-19-4], [S-19-5]).
func TestPushThroughNode(t *testing.T) {
	r := startPushRig(t)
	alice, bob := r.RegisterOn(t, 0), r.RegisterOn(t, 1)
	token := strings.Repeat("a1", 32)

	b := offlineWithToken(t, r, alice, bob, pb.PushProvider_PUSH_APNS, token, true)

	b.SendText(alice.ID, 1, "one")
	r.fake.WaitFor(t, nodetest.Timeout, "the first push", func(s *pushtest.Server) bool { return len(s.PushesTo(token)) == 1 })
	if p := r.fake.PushesTo(token)[0]; p.Count != 1 || p.Sender != bob.ID || strings.Contains(string(p.Body), "one") {
		t.Fatalf("first push %+v %s, want count 1 from bob and no content", p, p.Body)
	}
	if op := r.report(t); op.Push.Outcome != storage.PushSent {
		t.Fatalf("report %+v", op.Push)
	}

	// Within the interval: coalesced into one push at its end.
	for cmid := uint64(2); cmid <= 4; cmid++ {
		b.SendText(alice.ID, cmid, "more")
	}
	barrier(t, b, alice.ID)
	if n := r.fake.Attempts(token); n != 1 {
		t.Fatalf("%d pushes within the interval, want 1", n)
	}
	r.clock.Advance(pushInterval)
	r.fake.WaitFor(t, nodetest.Timeout, "the coalesced push", func(s *pushtest.Server) bool { return len(s.PushesTo(token)) == 2 })
	if p := r.fake.PushesTo(token)[1]; p.Count != 4 {
		t.Fatalf("coalesced push %+v, want count 4", p)
	}
	r.report(t)
	r.clock.Advance(pushInterval)
	barrier(t, b, alice.ID)
	if n := r.fake.Attempts(token); n != 2 {
		t.Fatalf("%d pushes after an interval with nothing new, want 2", n)
	}

	// Online: nothing. (bob's connection may now get alice's presence.)
	r.Login(t, alice, 0)
	for cmid := uint64(5); cmid <= 6; cmid++ {
		b.Write(codec.AppendSend(nil, codec.Send{To: alice.ID, CMID: cmid, Body: []byte("online")}))
		b.Expect(protocol.KindSent, protocol.KindPresence)
	}
	barrier(t, b, alice.ID)
	r.clock.Advance(pushInterval)
	if n := r.fake.Attempts(token); n != 2 || r.Push().Stats().Pending != 0 {
		t.Fatalf("%d pushes, %d pending, with the device online; want 2 and none", n, r.Push().Stats().Pending)
	}

	// The provider refuses carol's token: one attempt, the registration
	// goes, and nothing more is sent to it.
	carol := r.RegisterOn(t, 0)
	gone := strings.Repeat("c3", 32)
	r.fake.SetMode(gone, pushtest.BadToken)
	b = offlineWithToken(t, r, carol, bob, pb.PushProvider_PUSH_APNS, gone, false)
	b.SendText(carol.ID, 7, "gone")
	if op := r.report(t); op.Push.Outcome != storage.PushTokenInvalid {
		t.Fatalf("report %+v, want token invalid", op.Push)
	}
	b.SendText(carol.ID, 8, "after")
	barrier(t, b, carol.ID)
	r.clock.Advance(pushInterval)
	if n := r.fake.Attempts(gone); n != 1 || r.Push().Stats().Pending != 0 {
		t.Fatalf("%d attempts, %d pending, after the token was refused; want 1 and none", n, r.Push().Stats().Pending)
	}
	resp, err := http.Get("http://" + r.AdminAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`parley_push_sent_total{provider="apns"} 2` + "\n",
		`parley_push_tokens_invalid_total{provider="apns"} 1` + "\n",
		`parley_push_failed_total{provider="apns"} 0` + "\n",
		`parley_push_coalesced_total{shard="0"} 2` + "\n",
		`parley_push_tokens_removed_total{shard="0"} 1` + "\n",
		"parley_push_pending 0\n",
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// TestPushSurvivesRestart stops the node after a push was decided and
// handed to the provider but before the provider answered: after the
// restart the push is sent, once, with the same count ([S-19-6]).
func TestPushSurvivesRestart(t *testing.T) {
	r := startPushRig(t)
	alice, bob := r.RegisterOn(t, 1), r.RegisterOn(t, 0)
	hook := r.fake.WebhookURL("alice")

	b := offlineWithToken(t, r, alice, bob, pb.PushProvider_PUSH_WEBHOOK, hook, false)

	r.fake.SetMode(hook, pushtest.Hang)
	b.SendText(alice.ID, 1, "one")
	b.SendText(alice.ID, 2, "two")
	r.fake.WaitFor(t, nodetest.Timeout, "the push reaching the provider", func(s *pushtest.Server) bool { return s.Attempts(hook) >= 1 })
	b.Conn.Close()

	r.fake.SetMode(hook, pushtest.OK)
	r.Restart(t)
	r.fake.WaitFor(t, nodetest.Timeout, "the push after the restart", func(s *pushtest.Server) bool { return len(s.PushesTo(hook)) == 1 })
	op := r.report(t)
	if op.Push.Outcome != storage.PushSent {
		t.Fatalf("report %+v", op.Push)
	}
	p := r.fake.PushesTo(hook)[0]
	if p.Count != 2 || p.Sender != 0 {
		t.Fatalf("push after the restart %+v %s, want count 2 (both messages) and no sender", p, p.Body)
	}
	var body push.WebhookBody
	if err := json.Unmarshal(p.Body, &body); err != nil || body.ID == "" || body.Timestamp == 0 {
		t.Fatalf("webhook body %s: %v", p.Body, err)
	}

	// Reported: nothing more, even after another restart.
	b, _ = r.Login(t, bob, 0)
	barrier(t, b, alice.ID)
	b.Conn.Close()
	r.Restart(t)
	b, _ = r.Login(t, bob, 0)
	barrier(t, b, alice.ID) // after the shard's replay at start
	if pending := r.Push().Stats().Pending; pending != 0 {
		t.Fatalf("%d pushes handed to the dispatcher again after a second restart, want none", pending)
	}
	r.clock.Advance(pushInterval)
	if n := len(r.fake.PushesTo(hook)); n != 1 {
		t.Fatalf("%d pushes after a second restart, want 1", n)
	}
}

// TestPushOnlyToOfflineDevices: of one user's two devices, both with a
// token, only the one without a live connection is pushed; the one online
// is owed nothing ([S-19-4]).
func TestPushOnlyToOfflineDevices(t *testing.T) {
	r := startPushRig(t)
	alice, bob := r.RegisterOn(t, 0), r.RegisterOn(t, 1)
	phone, tablet := strings.Repeat("a1", 32), strings.Repeat("b2", 32)

	b, _ := r.Login(t, bob, 0)
	b.Expect(protocol.KindSynced)
	a, _ := r.Login(t, alice, 0)
	a.Expect(protocol.KindSynced)
	registerPush(t, a, pb.PushProvider_PUSH_APNS, phone, false)
	companion := r.Link(t, a, "tablet")
	c, _ := r.Login(t, companion, 0)
	c.Expect(protocol.KindSynced)
	registerPush(t, c, pb.PushProvider_PUSH_APNS, tablet, false)

	// Both go offline (bob sees alice offline: her shard ended both
	// sessions), then the phone comes back (bob sees her online).
	b.Send(protocol.KindPresenceSubscribe, &pb.PresenceSubscribe{Rid: b.NextRID(), Users: []uint64{alice.ID}})
	a.Conn.Close()
	c.Conn.Close()
	b.ExpectOffline(alice.ID, true)
	r.Login(t, alice, 0)
	for online := false; !online; {
		var p pb.Presence
		b.ExpectProto(protocol.KindPresence, &p)
		online = p.User == alice.ID && p.Online
	}

	b.SendText(alice.ID, 1, "one")
	r.fake.WaitFor(t, nodetest.Timeout, "the tablet's push", func(s *pushtest.Server) bool { return len(s.PushesTo(tablet)) == 1 })
	if op := r.report(t); op.Push.Outcome != storage.PushSent || op.Device != companion.Device {
		t.Fatalf("report %+v for device %d, want sent to the tablet (%d)", op.Push, op.Device, companion.Device)
	}
	barrier(t, b, alice.ID)
	r.clock.Advance(pushInterval)
	barrier(t, b, alice.ID)
	if n, pending := r.fake.Attempts(phone), r.Push().Stats().Pending; n != 0 || pending != 0 {
		t.Fatalf("%d pushes to the phone online, %d pending; want none", n, pending)
	}
}
