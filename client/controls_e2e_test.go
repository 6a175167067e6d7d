package client

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parley-im/parley/internal/node"
	"github.com/parley-im/parley/internal/nodetest"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
	"github.com/parley-im/parley/reports"
)

// link links a companion device named name to c's account and returns its
// credentials, without starting it.
func (n *e2eNode) link(t *testing.T, c *testClient, name string) Credentials {
	t.Helper()
	ctx := context.Background()
	pending, err := RequestLink(ctx, n.cfg, name)
	if err != nil {
		t.Fatal(err)
	}
	linked := background(func() (Credentials, error) { return pending.Wait(ctx) })
	if err := c.ApproveLink(ctx, pending.Code); err != nil {
		t.Fatal(err)
	}
	creds, err := wait(t, linked)
	if err != nil {
		t.Fatal(err)
	}
	return creds
}

// TestE2ERevoke deletes messages for everyone through a real node, across
// a restart ([S-18-1] to [S-18-3]): bob has two devices on another shard
// than alice; his phone has the message and gets the notice after it, his
// tablet was offline and never gets it, only the notices; alice's laptop
// gets its copy and the notice naming bob. A group message the same way.
// Then the bad cases, each with its code.
func TestE2ERevoke(t *testing.T) {
	clk := &nodetest.Clock{}
	n := startE2ENodeWith(t, func(c *node.Config) { c.Storage.Now = clk.Now })
	ctx := context.Background()
	alice := n.start(t, n.register(t, n.PhoneOn(0)))
	bob := n.start(t, n.register(t, n.PhoneOn(1)))
	carolCreds := n.register(t, n.PhoneOn(1))
	carol := n.start(t, carolCreds)
	laptop := n.start(t, n.link(t, alice, "laptop"))
	tabletCreds := n.link(t, bob, "tablet") // linked, offline until the end

	oops, err := alice.Send(ctx, bob.User(), []byte("oops"), pb.ContentType_CONTENT_TEXT)
	if err != nil {
		t.Fatal(err)
	}
	if m := next[Message](t, bob, nil); m.ID != oops.ID {
		t.Fatalf("bob's phone got %+v", m)
	}
	if m := next[Message](t, laptop, nil); m.ID != oops.ID || m.To != bob.User() {
		t.Fatalf("alice's laptop got %+v", m)
	}
	if err := alice.Revoke(ctx, bob.User(), oops.ID); err != nil {
		t.Fatal(err)
	}
	if r := next[Revoked](t, bob, nil); r.ID != oops.ID || r.From != alice.User() || r.To != 0 {
		t.Fatalf("bob's phone got %+v", r)
	}
	if r := next[Revoked](t, laptop, nil); r.ID != oops.ID || r.To != bob.User() {
		t.Fatalf("alice's laptop got %+v", r)
	}
	if err := alice.Revoke(ctx, bob.User(), oops.ID); err != nil {
		t.Fatalf("repeated revoke: %v", err)
	}

	g, err := alice.CreateGroup(ctx, "plans", nil, []uint64{bob.User(), carol.User()})
	if err != nil {
		t.Fatal(err)
	}
	carol.Close() // offline from here: its device never fetches the message
	gm, err := alice.SendGroup(ctx, g.ID, []byte("wrong group"), pb.ContentType_CONTENT_TEXT)
	if err != nil {
		t.Fatal(err)
	}
	m := next(t, bob, func(m Message) bool { return m.Group == g.ID })
	if m.ID != gm.ID {
		t.Fatalf("bob got %+v", m)
	}
	if err := alice.RevokeGroup(ctx, g.ID, gm.ID); err != nil {
		t.Fatal(err)
	}
	if r := next[Revoked](t, bob, nil); r.ID != gm.ID || r.Group != g.ID || r.MessageGSeq != m.GSeq || r.GSeq <= m.GSeq {
		t.Fatalf("bob's phone got %+v for message gseq %d", r, m.GSeq)
	}
	still, err := alice.Send(ctx, bob.User(), []byte("still here"), pb.ContentType_CONTENT_TEXT)
	if err != nil {
		t.Fatal(err)
	}

	n.Restart(t)
	tablet := startClientAs(t, n.cfg, tabletCreds, nil)
	var got []Event
	until(t, tablet, func(ev Event) bool {
		switch ev := ev.(type) {
		case Message, Revoked:
			got = append(got, ev)
		}
		_, synced := ev.(Synced)
		return synced
	})
	var revoked, messages int
	for _, ev := range got {
		switch ev := ev.(type) {
		case Message:
			if ev.ID == oops.ID || ev.ID == gm.ID {
				t.Fatalf("bob's tablet got the deleted message %+v", ev)
			}
			messages++
		case Revoked:
			revoked++
		}
	}
	// oops: in its place and after it; the group message: in its place
	// and after it.
	if revoked != 4 || messages != 1 {
		t.Fatalf("bob's tablet got %d notices and %d messages, want 4 and 1: %+v", revoked, messages, got)
	}
	carol = startClientAs(t, n.cfg, carolCreds, nil)
	if r := next[Revoked](t, carol, nil); r.ID != gm.ID || r.GSeq != r.MessageGSeq {
		t.Fatalf("carol got %+v, want the notice in place of the message", r)
	}
	if r := next[Revoked](t, carol, nil); r.ID != gm.ID || r.GSeq <= r.MessageGSeq {
		t.Fatalf("carol got %+v, want the notice after", r)
	}

	// The bad cases.
	if err := carol.Revoke(ctx, bob.User(), still.ID); CodeOf(err) != protocol.CodeNotSender {
		t.Errorf("revoking another's message: %v, want NOT_SENDER", err)
	}
	if err := alice.Revoke(ctx, bob.User(), still.ID+1); CodeOf(err) != protocol.CodeMessageNotFound {
		t.Errorf("revoking an unknown message: %v, want MESSAGE_NOT_FOUND", err)
	}
	if err := alice.Revoke(ctx, 0, still.ID); !errors.Is(err, ErrInvalid) {
		t.Errorf("revoking without a recipient: %v, want ErrInvalid", err)
	}
	clk.Advance(48*time.Hour + time.Minute)
	if err := alice.Revoke(ctx, bob.User(), still.ID); CodeOf(err) != protocol.CodeRevokeExpired {
		t.Errorf("revoking after the limit: %v, want REVOKE_EXPIRED", err)
	}
}

// TestE2EBlock blocks through a real node, across a restart ([S-18-5] to
// [S-18-7]): alice, with two devices, blocks bob on another shard; bob's
// messages are SENT and never reach her (carol's, sent after them, do);
// her presence is hidden from him; both her devices learn the block, and
// a device asks for the list after the restart; after the unblock bob's
// messages arrive.
func TestE2EBlock(t *testing.T) {
	n := startE2ENode(t)
	ctx := context.Background()
	alice := n.start(t, n.register(t, n.PhoneOn(0)))
	laptop := n.start(t, n.link(t, alice, "laptop"))
	bob := n.start(t, n.register(t, n.PhoneOn(1)))
	carol := n.start(t, n.register(t, n.PhoneOn(1)))

	if err := alice.Block(ctx, bob.User()); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*testClient{alice, laptop} {
		if b := next[Blocked](t, c, nil); b.User != bob.User() || !b.Blocked {
			t.Fatalf("device %d got %+v", c.Device(), b)
		}
	}
	// sentToAlice sends from bob, then from carol, and waits for carol's
	// on alice's phone: bob's must not come before it.
	sentToAlice := func(text string) {
		t.Helper()
		sent, err := bob.Send(ctx, alice.User(), []byte(text), pb.ContentType_CONTENT_TEXT)
		if err != nil || sent.ID == 0 {
			t.Fatalf("bob's send to alice: %+v, %v", sent, err)
		}
		marker, err := carol.Send(ctx, alice.User(), []byte("marker "+text), pb.ContentType_CONTENT_TEXT)
		if err != nil {
			t.Fatal(err)
		}
		if m := next[Message](t, alice, func(m Message) bool { return m.To == 0 }); m.ID != marker.ID {
			t.Fatalf("alice got %q from %d before carol's marker", m.Body, m.From)
		}
	}
	sentToAlice("are you there?")
	if err := bob.Subscribe(ctx, []uint64{alice.User()}); err != nil {
		t.Fatal(err)
	}
	if p := next[Presence](t, bob, nil); p.User != alice.User() || p.Online || !p.LastSeen.IsZero() {
		t.Fatalf("bob sees %+v", p)
	}

	n.Restart(t)
	list, err := laptop.BlockList(ctx)
	if err != nil || len(list) != 1 || list[0] != bob.User() {
		t.Fatalf("block list after the restart: %v, %v", list, err)
	}
	sentToAlice("hello?")

	if err := laptop.Unblock(ctx, bob.User()); err != nil {
		t.Fatal(err)
	}
	if b := next[Blocked](t, alice, nil); b.User != bob.User() || b.Blocked {
		t.Fatalf("alice got %+v, want the unblock", b)
	}
	sent, err := bob.Send(ctx, alice.User(), []byte("finally"), pb.ContentType_CONTENT_TEXT)
	if err != nil {
		t.Fatal(err)
	}
	if m := next[Message](t, alice, func(m Message) bool { return m.To == 0 }); m.ID != sent.ID {
		t.Fatalf("alice got %+v, want bob's %d", m, sent.ID)
	}
	if err := alice.Block(ctx, alice.User()); !errors.Is(err, ErrInvalid) {
		t.Fatalf("blocking oneself: %v, want ErrInvalid", err)
	}
}

// TestE2EDisappearing sets disappearing-message timers through a real
// node ([S-18-8] to [S-18-10]): both users' devices learn the change, the
// messages carry their expiry, and after they expire (and a restart,
// whose maintenance walk deletes them) a device that had not fetched
// them never gets them. A group's timer is its admins'.
func TestE2EDisappearing(t *testing.T) {
	clk := &nodetest.Clock{}
	n := startE2ENodeWith(t, func(c *node.Config) { c.Storage.Now = clk.Now })
	ctx := context.Background()
	alice := n.start(t, n.register(t, n.PhoneOn(0)))
	bob := n.start(t, n.register(t, n.PhoneOn(1)))
	tabletCreds := n.link(t, bob, "tablet") // offline until the end

	if err := alice.SetTimer(ctx, bob.User(), time.Hour); err != nil {
		t.Fatal(err)
	}
	if tc := next[TimerChanged](t, bob, nil); tc.From != alice.User() || tc.Peer != alice.User() || tc.TTL != time.Hour {
		t.Fatalf("bob got %+v", tc)
	}
	sent, err := alice.Send(ctx, bob.User(), []byte("burn after reading"), pb.ContentType_CONTENT_TEXT)
	if err != nil {
		t.Fatal(err)
	}
	m := next[Message](t, bob, nil)
	if m.ID != sent.ID || m.TTL != time.Hour || !m.Expires.Equal(sent.Time.Add(time.Hour)) {
		t.Fatalf("bob got %+v, want ttl 1h", m)
	}
	reply, err := bob.Send(ctx, alice.User(), []byte("noted"), pb.ContentType_CONTENT_TEXT)
	if err != nil {
		t.Fatal(err)
	}
	if m := next(t, alice, func(m Message) bool { return m.ID == reply.ID }); m.TTL != time.Hour {
		t.Fatalf("alice got %+v, want ttl 1h on bob's reply", m)
	}

	g, err := alice.CreateGroup(ctx, "ephemeral", nil, []uint64{bob.User()})
	if err != nil {
		t.Fatal(err)
	}
	if err := bob.SetGroupTimer(ctx, g.ID, time.Minute); CodeOf(err) != protocol.CodeNotAdmin {
		t.Fatalf("a member setting the group's timer: %v, want NOT_ADMIN", err)
	}
	if err := alice.SetGroupTimer(ctx, g.ID, time.Minute); err != nil {
		t.Fatal(err)
	}
	if tc := next(t, bob, func(tc TimerChanged) bool { return tc.Group == g.ID }); tc.TTL != time.Minute || tc.GSeq <= g.GSeq {
		t.Fatalf("bob got %+v", tc)
	}
	if info, err := bob.Group(ctx, g.ID); err != nil || info.Timer != time.Minute {
		t.Fatalf("Group = %+v, %v", info, err)
	}
	gm, err := alice.SendGroup(ctx, g.ID, []byte("a minute"), pb.ContentType_CONTENT_TEXT)
	if err != nil {
		t.Fatal(err)
	}
	if m := next(t, bob, func(m Message) bool { return m.ID == gm.ID }); m.TTL != time.Minute {
		t.Fatalf("bob got %+v, want ttl 1m", m)
	}

	clk.Advance(time.Hour + time.Minute)
	n.Restart(t)
	tablet := startClientAs(t, n.cfg, tabletCreds, nil)
	until(t, tablet, func(ev Event) bool {
		switch ev := ev.(type) {
		case Message:
			t.Fatalf("bob's tablet got an expired message: %q", ev.Body)
		case Synced:
			return true
		}
		return false
	})
}

// TestE2EReactionsRepliesEdits sends a reaction, its withdrawal, a reply,
// an edit and a forward through a real node, 1:1 and in a group
// ([S-18-11]): each arrives as a message with its type, ref and forwarded
// count, and the sender's other device gets its copy with them. Bob's
// laptop, offline while alice edits her message and reacts to his reply,
// gets both with their type and ref after a restart.
func TestE2EReactionsRepliesEdits(t *testing.T) {
	n := startE2ENode(t)
	ctx := context.Background()
	alice := n.start(t, n.register(t, n.PhoneOn(0)))
	bob := n.start(t, n.register(t, n.PhoneOn(1)))
	laptopCreds := n.link(t, bob, "laptop")
	laptop := n.start(t, laptopCreds)

	orig, err := alice.Send(ctx, bob.User(), []byte("Lunch at noon?"), pb.ContentType_CONTENT_TEXT)
	if err != nil {
		t.Fatal(err)
	}
	drafts := []Draft{
		{To: alice.User(), Body: []byte("👍"), Type: pb.ContentType_CONTENT_REACTION, Ref: orig.ID},
		{To: alice.User(), Type: pb.ContentType_CONTENT_REACTION, Ref: orig.ID}, // withdrawn
		{To: alice.User(), Body: []byte("Make it one"), Ref: orig.ID},
		{To: alice.User(), Body: []byte("Road closed at the bridge"), Forwarded: 3},
	}
	var reply uint64
	for _, d := range drafts {
		sent, err := bob.SendDraft(ctx, d)
		if err != nil {
			t.Fatalf("%+v: %v", d, err)
		}
		if d.Ref != 0 && d.Type == pb.ContentType_CONTENT_TEXT {
			reply = sent.ID
		}
		for _, c := range []*testClient{alice, laptop} {
			m := next(t, c, func(m Message) bool { return m.From == bob.User() })
			if m.ID != sent.ID || m.Type != d.Type || m.Ref != d.Ref || m.Forwarded != d.Forwarded || string(m.Body) != string(d.Body) {
				t.Fatalf("device %d/%d got %+v, want %+v", c.User(), c.Device(), m, d)
			}
		}
	}
	laptop.Close() // offline until the restart
	edit := Draft{To: bob.User(), Body: []byte("Lunch at one?"), Type: pb.ContentType_CONTENT_EDIT, Ref: orig.ID}
	react := Draft{To: bob.User(), Body: []byte("❤"), Type: pb.ContentType_CONTENT_REACTION, Ref: reply}
	var toLaptop []Draft
	for _, d := range []Draft{edit, react} {
		sent, err := alice.SendDraft(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		if m := next(t, bob, func(m Message) bool { return m.From == alice.User() && m.ID != orig.ID }); m.ID != sent.ID || m.Type != d.Type || m.Ref != d.Ref {
			t.Fatalf("bob got %+v, want %+v", m, d)
		}
		toLaptop = append(toLaptop, d)
	}

	g, err := alice.CreateGroup(ctx, "lunch", nil, []uint64{bob.User()})
	if err != nil {
		t.Fatal(err)
	}
	gm, err := alice.SendGroup(ctx, g.ID, []byte("Who's in?"), pb.ContentType_CONTENT_TEXT)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.SendDraft(ctx, Draft{Group: g.ID, Body: []byte("🙋"), Type: pb.ContentType_CONTENT_REACTION, Ref: gm.ID}); err != nil {
		t.Fatal(err)
	}
	if m := next(t, alice, func(m Message) bool { return m.Group == g.ID && m.From == bob.User() }); m.Type != pb.ContentType_CONTENT_REACTION || m.Ref != gm.ID {
		t.Fatalf("alice got %+v, want bob's reaction", m)
	}

	n.Restart(t)
	laptop = startClientAs(t, n.cfg, laptopCreds, nil)
	for _, d := range toLaptop {
		if m := next(t, laptop, func(m Message) bool { return m.From == alice.User() && m.ID != orig.ID }); m.Type != d.Type || m.Ref != d.Ref || string(m.Body) != string(d.Body) {
			t.Fatalf("bob's laptop got %+v after the restart, want %+v", m, d)
		}
	}

	for _, bad := range []Draft{
		{To: alice.User(), Body: []byte("👍"), Type: pb.ContentType_CONTENT_REACTION},
		{To: alice.User(), Type: pb.ContentType_CONTENT_EDIT, Ref: orig.ID},
		{To: alice.User()},
	} {
		if _, err := bob.SendDraft(ctx, bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: %v, want ErrInvalid", bad, err)
		}
	}
}

// TestE2EReport reports a user through a real node ([S-18-13],
// [S-18-14]): the OK comes once the report is in the operator's file,
// which keeps it across a restart, with what the client revealed; the
// latest are served at the admin endpoint; an account is rate limited.
func TestE2EReport(t *testing.T) {
	n := startE2ENodeWith(t, func(c *node.Config) {
		c.AdminAddr = "127.0.0.1:0"
		c.Reports.PerHour = 2
	})
	ctx := context.Background()
	alice := n.start(t, n.register(t, n.PhoneOn(0)))
	phone := n.PhoneOn(1)
	bob := n.start(t, n.register(t, phone))
	laptop := n.start(t, n.link(t, alice, "laptop"))

	spam, err := bob.Send(ctx, alice.User(), []byte("buy now"), pb.ContentType_CONTENT_TEXT)
	if err != nil {
		t.Fatal(err)
	}
	r := Report{User: bob.User(), Reason: "spam", Messages: []ReportedMessage{{ID: spam.ID, Body: []byte("buy now")}}}
	if err := alice.Report(ctx, r); err != nil {
		t.Fatal(err)
	}
	// The operator sees it at the admin endpoint.
	resp, err := http.Get("http://" + n.AdminAddr().String() + "/reports")
	if err != nil {
		t.Fatal(err)
	}
	var served []reports.Report
	err = json.NewDecoder(resp.Body).Decode(&served)
	resp.Body.Close()
	if err != nil || len(served) != 1 || served[0].Reporter != alice.User() || served[0].User != bob.User() ||
		served[0].Messages[0].ID != spam.ID || served[0].Messages[0].Text != "buy now" || served[0].Reason != "spam" {
		t.Fatalf("/reports = %+v, %v", served, err)
	}
	// The account's devices share its budget: two per hour.
	if err := laptop.Report(ctx, r); err != nil {
		t.Fatal(err)
	}
	if err := alice.Report(ctx, r); CodeOf(err) != protocol.CodeRateLimited {
		t.Fatalf("a third report: %v, want RATE_LIMITED", err)
	}
	if err := alice.Report(ctx, Report{User: bob.User()}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a report with no message: %v, want ErrInvalid", err)
	}

	n.Restart(t)
	b, err := os.ReadFile(filepath.Join(n.DataDir(), "reports", "reports.ndjson"))
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Count(string(b), "\n"); lines != 2 || strings.Contains(string(b), phone) {
		t.Fatalf("the file after a restart holds %d reports (want 2), phone number in it: %v", lines, strings.Contains(string(b), phone))
	}
}
