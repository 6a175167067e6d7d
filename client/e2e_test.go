package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/parley-im/parley/internal/node"
	"github.com/parley-im/parley/internal/nodetest"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// These tests run clients against a real node in this process: TLS,
// storage, fan-out and the media endpoint included. They wait for events,
// never for time.

// waitE2E bounds a wait for something a real node does: generous, for a
// loaded machine.
const waitE2E = 30 * time.Second

// e2eNode is a node for one test and the configuration clients use.
type e2eNode struct {
	*nodetest.Node
	cfg Config
}

func startE2ENode(t *testing.T) *e2eNode {
	t.Helper()
	return startE2ENodeWith(t, nil)
}

// startE2ENodeWith is startE2ENode with change applied to the node's
// configuration (see nodetest.Start).
func startE2ENodeWith(t *testing.T, change func(*node.Config)) *e2eNode {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a node")
	}
	n := nodetest.Start(t, change)
	return &e2eNode{Node: n, cfg: Config{
		Addr:        n.Addr().String(),
		Fingerprint: n.Fingerprint(),
		DialTimeout: waitE2E,
		BackoffMin:  10 * time.Millisecond,
		BackoffMax:  100 * time.Millisecond,
		Logger:      nodetest.Logger(t),
	}}
}

// register registers phone and returns its credentials.
func (n *e2eNode) register(t *testing.T, phone string) Credentials {
	t.Helper()
	ctx := context.Background()
	if _, err := RequestCode(ctx, n.cfg, phone); err != nil {
		t.Fatal(err)
	}
	creds, err := Verify(ctx, n.cfg, phone, n.Codes.Wait(t, phone), "e2e "+phone)
	if err != nil {
		t.Fatal(err)
	}
	return creds
}

// start runs a client for creds and waits until it is up to date.
func (n *e2eNode) start(t *testing.T, creds Credentials) *testClient {
	t.Helper()
	return n.startWith(t, n.cfg, creds)
}

func (n *e2eNode) startWith(t *testing.T, cfg Config, creds Credentials) *testClient {
	t.Helper()
	c := startClientAs(t, cfg, creds, nil)
	until(t, c, func(ev Event) bool { _, ok := ev.(Synced); return ok })
	return c
}

// until hands c's events to fn until it returns true.
func until(t *testing.T, c *testClient, fn func(Event) bool) {
	t.Helper()
	deadline := time.After(waitE2E)
	for {
		select {
		case ev, ok := <-c.Events():
			if !ok {
				t.Fatal("events closed")
			}
			if fn(ev) {
				return
			}
			if f, ok := ev.(Fatal); ok {
				t.Fatalf("fatal: %v", f.Err)
			}
		case <-deadline:
			t.Fatal("event did not come")
		}
	}
}

// next returns c's next event of type T that satisfies ok.
func next[T Event](t *testing.T, c *testClient, ok func(T) bool) T {
	t.Helper()
	var got T
	until(t, c, func(ev Event) bool {
		v, is := ev.(T)
		if is && (ok == nil || ok(v)) {
			got = v
			return true
		}
		return false
	})
	return got
}

// receiptMarks keeps, per group and peer, the highest DELIVERED and READ
// marks a sender has heard of ([S-10-4]).
type receiptMarks map[[2]uint64][2]uint64

func (m receiptMarks) add(group uint64, typ pb.ReceiptType, peer, upTo uint64) {
	k := [2]uint64{group, peer}
	v := m[k]
	switch typ {
	case pb.ReceiptType_RECEIPT_DELIVERED:
		v[0] = max(v[0], upTo)
	case pb.ReceiptType_RECEIPT_READ:
		v[0], v[1] = max(v[0], upTo), max(v[1], upTo)
	}
	m[k] = v
}

// waitMarks reads c's receipts until every peer's marks in group cover id
// (read too, if read).
func waitMarks(t *testing.T, c *testClient, group, id uint64, read bool, peers ...uint64) {
	t.Helper()
	marks := receiptMarks{}
	covered := func() bool {
		for _, p := range peers {
			v := marks[[2]uint64{group, p}]
			if v[0] < id || (read && v[1] < id) {
				return false
			}
		}
		return true
	}
	until(t, c, func(ev Event) bool {
		switch ev := ev.(type) {
		case Receipts:
			for _, it := range ev.Items {
				marks.add(ev.Group, ev.Type, it.Peer, it.UpTo)
			}
		case Receipt:
			marks.add(ev.Group, ev.Type, ev.Peer, ev.UpTo)
		}
		return covered()
	})
}

// TestE2EGroupOfThree: three users on two shards in a group exchange
// messages in one order, and each sender hears who received and who read,
// per member ([S-16-6], [S-10-7], [S-16-8]).
func TestE2EGroupOfThree(t *testing.T) {
	n := startE2ENode(t)
	alice := n.start(t, n.register(t, n.PhoneOn(0)))
	bob := n.start(t, n.register(t, n.PhoneOn(1)))
	carol := n.start(t, n.register(t, n.PhoneOn(1)))
	ctx := context.Background()

	g, err := alice.CreateGroup(ctx, "Saturday hike", nil, []uint64{bob.User(), carol.User()})
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Members) != 3 || len(g.Refused) != 0 {
		t.Fatalf("created %+v", g)
	}
	for _, c := range []*testClient{bob, carol} {
		ev := next(t, c, func(ev GroupEvent) bool { return ev.Op == pb.GroupOp_GROUP_OP_ADD })
		if ev.Group != g.ID || !slices.Contains(ev.Members, c.User()) {
			t.Fatalf("ADD event %+v", ev)
		}
	}

	sent, err := alice.SendGroup(ctx, g.ID, []byte("who brings the map?"), pb.ContentType_CONTENT_TEXT)
	if err != nil {
		t.Fatal(err)
	}
	var gseq uint64
	for _, c := range []*testClient{bob, carol} {
		m := next[Message](t, c, nil)
		if m.Group != g.ID || m.ID != sent.ID || m.From != alice.User() || string(m.Body) != "who brings the map?" || m.GSeq <= g.GSeq {
			t.Fatalf("%d got %+v", c.User(), m)
		}
		if gseq != 0 && m.GSeq != gseq {
			t.Fatalf("gseq %d and %d: one order for all", gseq, m.GSeq)
		}
		gseq = m.GSeq
	}
	// Both devices acknowledged: alice hears it was delivered to both.
	waitMarks(t, alice, g.ID, sent.ID, false, bob.User(), carol.User())

	// Bob reads and answers; carol reads both senders with one call.
	if err := bob.MarkGroupRead(ctx, g.ID, map[uint64]uint64{alice.User(): sent.ID}); err != nil {
		t.Fatal(err)
	}
	waitMarks(t, alice, g.ID, sent.ID, true, bob.User())
	reply, err := bob.SendGroup(ctx, g.ID, []byte("I do"), pb.ContentType_CONTENT_TEXT)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*testClient{alice, carol} {
		if m := next[Message](t, c, nil); m.ID != reply.ID || m.From != bob.User() || m.GSeq <= gseq {
			t.Fatalf("%d got %+v", c.User(), m)
		}
	}
	if err := carol.MarkGroupRead(ctx, g.ID, map[uint64]uint64{alice.User(): sent.ID, bob.User(): reply.ID}); err != nil {
		t.Fatal(err)
	}
	waitMarks(t, alice, g.ID, sent.ID, true, carol.User())
	waitMarks(t, bob, g.ID, reply.ID, true, carol.User())

	// Membership changes reach the members as events in the group's order.
	if err := alice.RemoveGroupMembers(ctx, g.ID, []uint64{carol.User()}); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, carol, func(ev GroupEvent) bool { return ev.Op == pb.GroupOp_GROUP_OP_REMOVE }); !slices.Equal(ev.Members, []uint64{carol.User()}) {
		t.Fatalf("REMOVE %+v", ev)
	}
	if _, err := carol.SendGroup(ctx, g.ID, []byte("still here?"), 0); CodeOf(err) != protocol.CodeNotMember {
		t.Fatalf("removed member's send: %v, want NOT_MEMBER", err)
	}
	info, err := bob.Group(ctx, g.ID)
	if err != nil || len(info.Members) != 2 {
		t.Fatalf("Group = %+v, %v", info, err)
	}
	ids, err := bob.Groups(ctx)
	if err != nil || !slices.Equal(ids, []uint64{g.ID}) {
		t.Fatalf("Groups = %v, %v", ids, err)
	}
}

// TestE2ELinkedCompanion links a second device to alice's account: it
// gets copies of what alice sends from her phone ([S-8-17]) and her reads
// there as SELF_READ ([S-10-6]); then the phone revokes it.
func TestE2ELinkedCompanion(t *testing.T) {
	n := startE2ENode(t)
	aliceCreds := n.register(t, n.PhoneOn(0))
	alice := n.start(t, aliceCreds)
	bob := n.start(t, n.register(t, n.PhoneOn(1)))
	ctx := context.Background()

	pending, err := RequestLink(ctx, n.cfg, "laptop")
	if err != nil {
		t.Fatal(err)
	}
	if len(pending.Code) != protocol.LinkCodeLen {
		t.Fatalf("code %q", pending.Code)
	}
	linked := background(func() (Credentials, error) { return pending.Wait(ctx) })
	if err := alice.ApproveLink(ctx, pending.Code); err != nil {
		t.Fatal(err)
	}
	creds, err := wait(t, linked)
	if err != nil {
		t.Fatal(err)
	}
	if creds.User != aliceCreds.User || creds.Device == aliceCreds.Device {
		t.Fatalf("linked %+v, primary %+v", creds, aliceCreds)
	}
	laptop := n.start(t, creds)

	devs, err := laptop.Devices(ctx)
	if err != nil || len(devs) != 2 || !devs[0].Primary || devs[1].ID != creds.Device || devs[1].Name != "laptop" || !devs[1].Online {
		t.Fatalf("Devices = %+v, %v", devs, err)
	}

	sent, err := alice.Send(ctx, bob.User(), []byte("on my way"), pb.ContentType_CONTENT_TEXT)
	if err != nil {
		t.Fatal(err)
	}
	cp := next[Message](t, laptop, nil)
	if cp.ID != sent.ID || cp.From != alice.User() || cp.FromDevice != aliceCreds.Device || cp.To != bob.User() || string(cp.Body) != "on my way" {
		t.Fatalf("copy %+v", cp)
	}
	// The sending device gets its own copy too, and recognises it.
	if own := next[Message](t, alice, nil); own.ID != sent.ID || own.FromDevice != alice.Device() {
		t.Fatalf("own copy %+v", own)
	}

	hello, err := bob.Send(ctx, alice.User(), []byte("great"), pb.ContentType_CONTENT_TEXT)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*testClient{alice, laptop} {
		if m := next[Message](t, c, nil); m.ID != hello.ID || m.From != bob.User() {
			t.Fatalf("device %d got %+v", c.Device(), m)
		}
	}
	if err := alice.MarkRead(ctx, bob.User(), hello.ID); err != nil {
		t.Fatal(err)
	}
	r := next[Receipt](t, laptop, nil)
	if r.Type != pb.ReceiptType_RECEIPT_SELF_READ || r.Peer != bob.User() || r.UpTo != hello.ID {
		t.Fatalf("laptop got %+v, want SELF_READ", r)
	}

	if err := alice.RevokeDevice(ctx, creds.Device); err != nil {
		t.Fatal(err)
	}
	f := next[Fatal](t, laptop, nil)
	if CodeOf(f.Err) != protocol.CodeDeviceRevoked {
		t.Fatalf("laptop stopped with %v, want DEVICE_REVOKED", f.Err)
	}
}

// dropDialer dials through a net.Dialer and can cut the last connection,
// to make a client reconnect.
type dropDialer struct {
	mu   sync.Mutex
	last net.Conn
}

func (d *dropDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err == nil {
		d.mu.Lock()
		d.last = c
		d.mu.Unlock()
	}
	return c, err
}

func (d *dropDialer) drop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	_ = d.last.Close()
}

// TestE2EPresenceAndTyping: bob watches alice come online and go
// offline with a last-seen time ([S-15-3]), his subscription survives a
// reconnect, and typing reaches him, 1:1 and in a group ([S-15-7]).
func TestE2EPresenceAndTyping(t *testing.T) {
	n := startE2ENode(t)
	aliceCreds := n.register(t, n.PhoneOn(0))
	dd := &dropDialer{}
	cfg := n.cfg
	cfg.Dial = dd.dial
	bob := n.startWith(t, cfg, n.register(t, n.PhoneOn(1)))
	ctx := context.Background()

	if err := bob.Subscribe(ctx, []uint64{aliceCreds.User}); err != nil {
		t.Fatal(err)
	}
	if p := next[Presence](t, bob, nil); p.User != aliceCreds.User || p.Online {
		t.Fatalf("before alice connects: %+v", p)
	}
	alice := n.start(t, aliceCreds)
	next(t, bob, func(p Presence) bool { return p.User == alice.User() && p.Online })

	// Bob's connection breaks; the client subscribes again on the next.
	dd.drop()
	next[Disconnected](t, bob, nil)
	next[Connected](t, bob, nil)
	next(t, bob, func(p Presence) bool { return p.User == alice.User() && p.Online })

	if err := alice.Typing(bob.User(), pb.TypingState_TYPING_STARTED); err != nil {
		t.Fatal(err)
	}
	if it := next[IsTyping](t, bob, nil); it.From != alice.User() || it.Group != 0 || it.State != pb.TypingState_TYPING_STARTED {
		t.Fatalf("IsTyping %+v", it)
	}
	g, err := alice.CreateGroup(ctx, "typists", nil, []uint64{bob.User()})
	if err != nil {
		t.Fatal(err)
	}
	next(t, bob, func(ev GroupEvent) bool { return ev.Op == pb.GroupOp_GROUP_OP_ADD })
	if err := alice.GroupTyping(g.ID, pb.TypingState_TYPING_STOPPED); err != nil {
		t.Fatal(err)
	}
	if it := next[IsTyping](t, bob, nil); it.From != alice.User() || it.Group != g.ID || it.State != pb.TypingState_TYPING_STOPPED {
		t.Fatalf("group IsTyping %+v", it)
	}

	before := time.Now().Add(-time.Second)
	if err := alice.Close(); err != nil {
		t.Fatal(err)
	}
	p := next(t, bob, func(p Presence) bool { return p.User == alice.User() && !p.Online })
	if p.LastSeen.Before(before) {
		t.Fatalf("offline with last seen %v, want about now", p.LastSeen)
	}
}

// TestE2EMedia uploads through *Client as the Media requester and
// downloads on another user's client ([S-14-4], [S-14-7]).
func TestE2EMedia(t *testing.T) {
	n := startE2ENode(t)
	alice := n.start(t, n.register(t, n.PhoneOn(1)))
	bob := n.start(t, n.register(t, n.PhoneOn(0)))
	httpc, err := NewMediaHTTPClient(n.cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer httpc.CloseIdleConnections()
	ctx := context.Background()
	data := mediaBytes(1<<20 + 17)
	sum := sha256.Sum256(data)

	up := Media{Requester: alice.Client, HTTP: httpc}
	ref, err := up.UploadMedia(ctx, pb.ContentType_CONTENT_DOCUMENT, bytes.NewReader(data), int64(len(data)), sum)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Send(ctx, bob.User(), []byte(ref.ID.String()), pb.ContentType_CONTENT_DOCUMENT); err != nil {
		t.Fatal(err)
	}
	m := next[Message](t, bob, nil)
	raw, err := hex.DecodeString(string(m.Body))
	if err != nil || len(raw) != protocol.MediaIDLen || m.Type != pb.ContentType_CONTENT_DOCUMENT {
		t.Fatalf("message %+v: %v", m, err)
	}
	id := MediaID(raw)
	down := Media{Requester: bob.Client, HTTP: httpc}
	var buf bytes.Buffer
	u, err := down.DownloadMedia(ctx, id, &buf)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), data) || u.Size != int64(len(data)) || u.SHA256 != sum {
		t.Fatalf("downloaded %d bytes (%+v)", buf.Len(), u)
	}
	if _, err := bob.RequestDownloadURL(ctx, MediaID{1}); CodeOf(err) != protocol.CodeMediaNotFound {
		t.Fatalf("unknown media: %v, want MEDIA_NOT_FOUND", err)
	}
}
