package client

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// result is the outcome of a call run in the background.
type result[T any] struct {
	v   T
	err error
}

// background runs f on its own goroutine; wait collects the outcome.
func background[T any](f func() (T, error)) <-chan result[T] {
	ch := make(chan result[T], 1)
	go func() {
		v, err := f()
		ch <- result[T]{v, err}
	}()
	return ch
}

func wait[T any](t *testing.T, ch <-chan result[T]) (T, error) {
	t.Helper()
	select {
	case r := <-ch:
		return r.v, r.err
	case <-time.After(waitLong):
		t.Fatal("call did not return")
	}
	var zero T
	return zero, nil
}

// connected starts a client on srv and logs it in.
func connected(t *testing.T, srv *fakeServer, st Store) (*testClient, *fakeConn) {
	t.Helper()
	c := startClient(t, testConfig(srv), st)
	fc := srv.accept(t)
	fc.login(64, 30, 0)
	waitFor[Connected](c)
	return c, fc
}

// TestGroupSendResentWithGroup: a group SEND carries group and no to
// ([S-7-4]), is stored with its group, and is resent identically after a
// reconnect ([S-8-14]); SENT completes it once.
func TestGroupSendResentWithGroup(t *testing.T) {
	srv := newFakeServer(t, false)
	st := NewMemoryStore()
	c, fc := connected(t, srv, st)

	res := background(func() (Sent, error) {
		return c.SendGroup(context.Background(), 12293, []byte("table for six"), pb.ContentType_CONTENT_TEXT)
	})
	first := expectSend(t, fc)
	if first.To != 0 || first.Group != 12293 || first.CMID != 1 || string(first.Body) != "table for six" {
		t.Fatalf("SEND = %+v", first)
	}
	if out := outboxOf(t, st); len(out) != 1 || out[0].Group != 12293 || out[0].To != 0 {
		t.Fatalf("stored %+v", out)
	}
	_ = fc.c.Close()

	fc = srv.accept(t)
	fc.expect(protocol.KindLogin)
	if again := expectSend(t, fc); again.Group != 12293 || again.To != 0 || again.CMID != 1 {
		t.Fatalf("resent %+v", again)
	}
	fc.writeProto(protocol.KindLoginOK, &pb.LoginOk{HeartbeatS: 30, Window: 16})
	fc.write(codec.AppendSent(nil, 1, msgID(9, 1)))
	if s, err := wait(t, res); err != nil || s.ID != msgID(9, 1) {
		t.Fatalf("SendGroup = %+v, %v", s, err)
	}
	if _, err := c.SendGroup(context.Background(), 0, []byte("x"), 0); !errors.Is(err, ErrInvalid) {
		t.Errorf("SendGroup to group 0: %v", err)
	}
}

// TestGroupSendRestored: a group send found in the store goes out with
// its group, and its outcome is a SendDone naming the group.
func TestGroupSendRestored(t *testing.T) {
	srv := newFakeServer(t, false)
	st := storeAt(t, 0)
	if err := st.AddOutgoing(Outgoing{CMID: 4, Group: 77, Body: []byte("from before")}); err != nil {
		t.Fatal(err)
	}
	c := startClient(t, testConfig(srv), st)
	fc := srv.accept(t)
	fc.expect(protocol.KindLogin)
	if s := expectSend(t, fc); s.Group != 77 || s.To != 0 || s.CMID != 4 {
		t.Fatalf("SEND = %+v", s)
	}
	fc.writeProto(protocol.KindLoginOK, &pb.LoginOk{HeartbeatS: 30, Window: 16})
	fc.write(codec.AppendError(nil, protocol.CodeNotMember, 0, 4, "", 0))
	done := waitFor[SendDone](c)
	if done.Group != 77 || done.To != 0 || CodeOf(done.Err) != protocol.CodeNotMember {
		t.Fatalf("SendDone = %+v", done)
	}
}

// groupEvent returns a GROUP_EVENT frame.
func groupEvent(t *testing.T, m *pb.GroupEvent) []byte {
	t.Helper()
	b, err := appendProtoFrame(protocol.KindGroupEvent, m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestGroupEntries: group messages, copies of this user's messages, group
// events and coalesced receipts become events with their fields, and
// entries with values this version does not know are acknowledged without
// an event ([S-12-5]), also as the last entry of the stream.
func TestGroupEntries(t *testing.T) {
	srv := newFakeServer(t, false)
	c, fc := connected(t, srv, nil)

	var batch []byte
	batch = codec.AppendEntry(batch, protocol.KindMessage, 1, codec.AppendMessageEntry(nil, codec.Message{
		ID: msgID(1, 0), From: 4102, FromDevice: 1, Body: []byte("who brings the map?"), Group: 12293, GSeq: 4}))
	batch = codec.AppendEntry(batch, protocol.KindMessage, 2, codec.AppendMessageEntry(nil, codec.Message{
		ID: msgID(2, 0), From: testCreds.User, FromDevice: 9, Body: []byte("on my way"), To: 8197}))
	batch = append(batch, groupEvent(t, &pb.GroupEvent{Seq: 3, Id: msgID(3, 0), Group: 12293, Gseq: 5, Actor: 4101,
		Op: pb.GroupOp_GROUP_OP_PROMOTE, Members: []uint64{4102}})...)
	fc.write(codec.AppendFrame(nil, protocol.KindBatch, batch))
	rs, _ := appendProtoFrame(protocol.KindReceipts, &pb.Receipts{Seq: 4, Group: 12293, Type: pb.ReceiptType_RECEIPT_READ,
		Items: []*pb.ReceiptItem{{Peer: 4102, UpTo: msgID(2, 0)}, {Peer: 4107, UpTo: msgID(1, 0)}}})
	fc.write(rs)
	fc.write(codec.AppendEntry(nil, protocol.KindReceipt, 5, codec.AppendReceiptEntry(nil, codec.Receipt{
		Peer: 4102, Type: pb.ReceiptType_RECEIPT_SELF_READ, UpTo: msgID(1, 0), Group: 12293})))
	unknown, _ := appendProtoFrame(protocol.KindReceipts, &pb.Receipts{Seq: 6, Group: 12293, Type: 9, Items: []*pb.ReceiptItem{{Peer: 1, UpTo: 1}}})
	fc.write(unknown)
	fc.write(groupEvent(t, &pb.GroupEvent{Seq: 7, Id: msgID(4, 0), Group: 12293, Gseq: 6, Op: 99}))
	fc.write(codec.AppendEntry(nil, protocol.KindReceipt, 8, codec.AppendReceiptEntry(nil, codec.Receipt{Peer: 1, Type: 7, UpTo: 1})))

	if m := waitFor[Message](c); m.Seq != 1 || m.Group != 12293 || m.GSeq != 4 || m.To != 0 || m.From != 4102 {
		t.Errorf("group message %+v", m)
	}
	if m := waitFor[Message](c); m.Seq != 2 || m.To != 8197 || m.From != testCreds.User || m.FromDevice != 9 || m.Group != 0 {
		t.Errorf("copy %+v", m)
	}
	if ev := waitFor[GroupEvent](c); ev.Seq != 3 || ev.Group != 12293 || ev.GSeq != 5 || ev.Actor != 4101 ||
		ev.Op != pb.GroupOp_GROUP_OP_PROMOTE || !slices.Equal(ev.Members, []uint64{4102}) || !ev.Time.Equal(protocol.MessageTime(msgID(3, 0))) {
		t.Errorf("group event %+v", ev)
	}
	if r := waitFor[Receipts](c); r.Seq != 4 || r.Group != 12293 || r.Type != pb.ReceiptType_RECEIPT_READ ||
		!slices.Equal(r.Items, []ReceiptItem{{4102, msgID(2, 0)}, {4107, msgID(1, 0)}}) {
		t.Errorf("receipts %+v", r)
	}
	if r := waitFor[Receipt](c); r.Seq != 5 || r.Type != pb.ReceiptType_RECEIPT_SELF_READ || r.Group != 12293 || r.Peer != 4102 {
		t.Errorf("self read %+v", r)
	}
	if ev := waitFor[GroupEvent](c); ev.Seq != 7 || ev.Op != 99 {
		t.Errorf("unknown op %+v, want delivered for the application to refresh", ev)
	}
	ackUntil(t, fc, 8) // the receipt with an unknown type, last of all, is acknowledged
	// ... and gives no event: the next one is the entry after it.
	fc.write(message(9, msgID(5, 0), 4102, "marker"))
	ev := c.next()
	if m, ok := ev.(Message); !ok || m.Seq != 9 {
		t.Errorf("event %#v before the next entry's, want none for the unknown receipt", ev)
	}
}

// TestGroupRequests: each group call writes its frame and reads its
// answer: GROUP_INFO for create, add and get, OK for the other updates,
// GROUP_LIST_RESULT for the list ([S-7-13]–[S-7-15], [S-7-14]).
func TestGroupRequests(t *testing.T) {
	srv := newFakeServer(t, false)
	c, fc := connected(t, srv, nil)
	ctx := context.Background()

	created := background(func() (GroupInfo, error) {
		return c.CreateGroup(ctx, "Saturday hike", nil, []uint64{4102, 4107, 8197})
	})
	var gc pb.GroupCreate
	fc.expectProto(protocol.KindGroupCreate, &gc)
	if gc.Name != "Saturday hike" || !slices.Equal(gc.Members, []uint64{4102, 4107, 8197}) {
		t.Fatalf("GROUP_CREATE %v", &gc)
	}
	fc.writeProto(protocol.KindGroupInfo, &pb.GroupInfo{Rid: gc.Rid, Group: 12293, Name: gc.Name, Gseq: 2,
		Members: []*pb.Member{{User: 42, Role: pb.GroupRole_ROLE_ADMIN, SinceGseq: 1}, {User: 4102, SinceGseq: 2}, {User: 4107, SinceGseq: 2}},
		Refused: []*pb.Refusal{{User: 8197, Code: protocol.CodeTooManyGroups}}})
	g, err := wait(t, created)
	if err != nil || g.ID != 12293 || len(g.Members) != 3 || g.Members[0].Role != pb.GroupRole_ROLE_ADMIN ||
		!slices.Equal(g.Refused, []GroupRefusal{{8197, protocol.CodeTooManyGroups}}) {
		t.Fatalf("CreateGroup = %+v, %v", g, err)
	}

	for _, tt := range []struct {
		op   pb.GroupOp
		call func() error
	}{
		{pb.GroupOp_GROUP_OP_REMOVE, func() error { return c.RemoveGroupMembers(ctx, 12293, []uint64{4107}) }},
		{pb.GroupOp_GROUP_OP_PROMOTE, func() error { return c.PromoteGroupMembers(ctx, 12293, []uint64{4102}) }},
		{pb.GroupOp_GROUP_OP_DEMOTE, func() error { return c.DemoteGroupMembers(ctx, 12293, []uint64{4102}) }},
		{pb.GroupOp_GROUP_OP_RENAME, func() error { return c.RenameGroup(ctx, 12293, "Sunday hike") }},
		{pb.GroupOp_GROUP_OP_SET_AVATAR, func() error { return c.SetGroupAvatar(ctx, 12293, []byte{1, 2}) }},
		{pb.GroupOp_GROUP_OP_LEAVE, func() error { return c.LeaveGroup(ctx, 12293) }},
	} {
		res := background(func() (struct{}, error) { return struct{}{}, tt.call() })
		var u pb.GroupUpdate
		fc.expectProto(protocol.KindGroupUpdate, &u)
		if u.Group != 12293 || u.Op != tt.op {
			t.Fatalf("GROUP_UPDATE %v, want op %v", &u, tt.op)
		}
		fc.writeProto(protocol.KindOK, &pb.Ok{Rid: u.Rid})
		if _, err := wait(t, res); err != nil {
			t.Fatalf("%v: %v", tt.op, err)
		}
	}

	added := background(func() (GroupInfo, error) { return c.AddGroupMembers(ctx, 12293, []uint64{8197}) })
	var u pb.GroupUpdate
	fc.expectProto(protocol.KindGroupUpdate, &u)
	if u.Op != pb.GroupOp_GROUP_OP_ADD || !slices.Equal(u.Members, []uint64{8197}) {
		t.Fatalf("ADD %v", &u)
	}
	fc.write(codec.AppendError(nil, protocol.CodeNotAdmin, u.Rid, 0, "", 0))
	if _, err := wait(t, added); CodeOf(err) != protocol.CodeNotAdmin {
		t.Fatalf("AddGroupMembers: %v, want NOT_ADMIN", err)
	}

	list := background(func() ([]uint64, error) { return c.Groups(ctx) })
	var gl pb.GroupList
	fc.expectProto(protocol.KindGroupList, &gl)
	fc.writeProto(protocol.KindGroupListResult, &pb.GroupListResult{Rid: gl.Rid, Groups: []uint64{12293, 20485}})
	if ids, err := wait(t, list); err != nil || !slices.Equal(ids, []uint64{12293, 20485}) {
		t.Fatalf("Groups = %v, %v", ids, err)
	}

	// An answer of the wrong kind is the server's fault, not a group.
	get := background(func() (GroupInfo, error) { return c.Group(ctx, 12293) })
	var gg pb.GroupGet
	fc.expectProto(protocol.KindGroupGet, &gg)
	fc.writeProto(protocol.KindOK, &pb.Ok{Rid: gg.Rid})
	if _, err := wait(t, get); !errors.Is(err, ErrProtocol) {
		t.Fatalf("Group answered by OK: %v, want ErrProtocol", err)
	}

	for _, err := range []error{
		func() error { _, err := c.CreateGroup(ctx, "", nil, nil); return err }(),
		func() error {
			_, err := c.CreateGroup(ctx, string(make([]byte, protocol.MaxGroupName+1)), nil, nil)
			return err
		}(),
		func() error { _, err := c.CreateGroup(ctx, "x", make([]byte, protocol.MaxAvatar+1), nil); return err }(),
		c.RemoveGroupMembers(ctx, 12293, nil),
		c.RenameGroup(ctx, 0, "x"),
		c.LeaveGroup(ctx, 0),
	} {
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("bad argument: %v, want ErrInvalid", err)
		}
	}
}

// TestOnceRequestsNotRepeated: a request that must not be carried out
// twice fails with ErrNoAnswer when the connection is lost before its
// answer, and is not written again; an idempotent request in flight at
// the same moment is ([S-8-14] for requests). A request of the first kind
// made while disconnected waits for LoginOk rather than riding behind
// Login.
func TestOnceRequestsNotRepeated(t *testing.T) {
	srv := newFakeServer(t, false)
	c, fc := connected(t, srv, nil)
	ctx := context.Background()

	created := background(func() (GroupInfo, error) { return c.CreateGroup(ctx, "hike", nil, nil) })
	fc.expect(protocol.KindGroupCreate)
	got := background(func() (GroupInfo, error) { return c.Group(ctx, 5) })
	fc.expect(protocol.KindGroupGet)
	_ = fc.c.Close()
	if _, err := wait(t, created); !errors.Is(err, ErrNoAnswer) {
		t.Fatalf("CreateGroup after a lost connection: %v, want ErrNoAnswer", err)
	}
	left := background(func() (struct{}, error) { return struct{}{}, c.LeaveGroup(ctx, 5) })
	waitUntil(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return slices.ContainsFunc(c.requests, func(r *request) bool { return r.once })
	})

	fc = srv.accept(t)
	fc.expect(protocol.KindLogin)
	var gg pb.GroupGet
	fc.expectProto(protocol.KindGroupGet, &gg) // pipelined: safe to repeat
	fc.writeProto(protocol.KindLoginOK, &pb.LoginOk{HeartbeatS: 30, Window: 16})
	var u pb.GroupUpdate
	fc.expectProto(protocol.KindGroupUpdate, &u) // only after LoginOk
	if u.Op != pb.GroupOp_GROUP_OP_LEAVE {
		t.Fatalf("GROUP_UPDATE %v", &u)
	}
	fc.writeProto(protocol.KindGroupInfo, &pb.GroupInfo{Rid: gg.Rid, Group: 5, Name: "hike"})
	fc.writeProto(protocol.KindOK, &pb.Ok{Rid: u.Rid})
	if g, err := wait(t, got); err != nil || g.Name != "hike" {
		t.Fatalf("Group = %+v, %v", g, err)
	}
	if _, err := wait(t, left); err != nil {
		t.Fatal(err)
	}
}

// TestMarkGroupRead: one READ per sender, each with the group ([S-7-5],
// [S-10-7]); answers in any order; a refusal names its sender's error.
func TestMarkGroupRead(t *testing.T) {
	srv := newFakeServer(t, false)
	c, fc := connected(t, srv, nil)
	res := background(func() (struct{}, error) {
		return struct{}{}, c.MarkGroupRead(context.Background(), 12293, map[uint64]uint64{4102: 100, 4107: 90, 9999: 80})
	})
	reads := map[uint64]*pb.Read{}
	for range 3 {
		var r pb.Read
		fc.expectProto(protocol.KindRead, &r)
		reads[r.Peer] = &r
	}
	for peer, upTo := range map[uint64]uint64{4102: 100, 4107: 90, 9999: 80} {
		if r := reads[peer]; r == nil || r.UpTo != upTo || r.Group != 12293 {
			t.Fatalf("READ for %d: %v", peer, r)
		}
	}
	fc.writeProto(protocol.KindOK, &pb.Ok{Rid: reads[4107].Rid})
	fc.write(codec.AppendError(nil, protocol.CodeNotFound, reads[9999].Rid, 0, "", 0))
	fc.writeProto(protocol.KindOK, &pb.Ok{Rid: reads[4102].Rid})
	if _, err := wait(t, res); CodeOf(err) != protocol.CodeNotFound {
		t.Fatalf("MarkGroupRead: %v, want NOT_FOUND", err)
	}
	if err := c.MarkGroupRead(context.Background(), 12293, map[uint64]uint64{5: 0}); !errors.Is(err, ErrInvalid) {
		t.Errorf("zero id: %v", err)
	}
}

// TestGroupInfoApply follows a group through its events ([S-16-5]).
func TestGroupInfoApply(t *testing.T) {
	g := GroupInfo{ID: 7}
	steps := []GroupEvent{
		{Group: 7, GSeq: 1, Op: pb.GroupOp_GROUP_OP_CREATE, Members: []uint64{1}, Name: "hike"},
		{Group: 7, GSeq: 2, Op: pb.GroupOp_GROUP_OP_ADD, Members: []uint64{2, 3, 1}},
		{Group: 7, GSeq: 4, Op: pb.GroupOp_GROUP_OP_PROMOTE, Members: []uint64{2}},
		{Group: 7, GSeq: 5, Op: pb.GroupOp_GROUP_OP_LEAVE, Members: []uint64{1}},
		{Group: 7, GSeq: 6, Op: pb.GroupOp_GROUP_OP_RENAME, Name: "walk"},
		{Group: 7, GSeq: 7, Op: pb.GroupOp_GROUP_OP_DEMOTE, Members: []uint64{2}},
		{Group: 7, GSeq: 8, Op: pb.GroupOp_GROUP_OP_REMOVE, Members: []uint64{3}},
	}
	for _, ev := range steps {
		if !g.Apply(ev) {
			t.Fatalf("%v not applied", ev.Op)
		}
	}
	for _, ev := range []GroupEvent{
		{Group: 7, GSeq: 8, Op: pb.GroupOp_GROUP_OP_ADD, Members: []uint64{9}}, // already applied
		{Group: 8, GSeq: 9, Op: pb.GroupOp_GROUP_OP_ADD, Members: []uint64{9}}, // another group
		{Group: 7, GSeq: 9, Op: 99}, // unknown
	} {
		if g.Apply(ev) {
			t.Errorf("%+v applied", ev)
		}
	}
	want := []GroupMember{{User: 2, Role: pb.GroupRole_ROLE_MEMBER, SinceGSeq: 2}}
	if g.Name != "walk" || g.GSeq != 8 || !slices.Equal(g.Members, want) {
		t.Errorf("group %+v", g)
	}
}
