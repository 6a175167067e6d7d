package server_test

import (
	"testing"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/internal/nodetest"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// TestOnlineChatWithReceipts: register, log in, send both ways, receipts
// both ways, over real TLS sockets.
func TestOnlineChatWithReceipts(t *testing.T) {
	n := nodetest.Start(t, nil)
	alice, bob := n.RegisterOn(t, 0), n.RegisterOn(t, 1) // receipts cross shards
	a, _ := n.Login(t, alice, 0)
	b, _ := n.Login(t, bob, 0)
	a.Expect(protocol.KindSynced)
	b.Expect(protocol.KindSynced)

	id := a.SendText(bob.ID, 1, "hi bob")
	m := b.Message()
	if m.ID != id || m.From != alice.ID || string(m.Body) != "hi bob" {
		t.Fatalf("bob got %+v", m)
	}
	b.Ack(m.Seq)
	r := a.Receipt()
	if r.Peer != bob.ID || r.Type != pb.ReceiptType_RECEIPT_DELIVERED || r.UpTo != id {
		t.Fatalf("alice got %+v, want delivered %d", r, id)
	}
	a.Ack(r.Seq)
	b.Send(protocol.KindRead, &pb.Read{Rid: 7, Peer: alice.ID, UpTo: id})
	var ok pb.Ok
	b.ExpectProto(protocol.KindOK, &ok)
	if ok.Rid != 7 {
		t.Fatalf("Ok rid %d", ok.Rid)
	}
	if r := a.Receipt(); r.Type != pb.ReceiptType_RECEIPT_READ || r.UpTo != id {
		t.Fatalf("alice got %+v, want read %d", r, id)
	}

	reply := b.SendText(alice.ID, 1, "hi alice")
	if m := a.Message(); m.ID != reply || string(m.Body) != "hi alice" {
		t.Fatalf("alice got %+v", m)
	}
	a.Write(codec.AppendFrame(nil, protocol.KindPing, nil))
	a.Expect(protocol.KindPong)
	// Frames both ways are counted for the metrics endpoint.
	st := n.Server().Stats()
	if st.FramesIn.Load() < 8 || st.FramesOut.Load() < 12 {
		t.Fatalf("frames in %d, out %d: not counted", st.FramesIn.Load(), st.FramesOut.Load())
	}
}

// TestOfflineQueueInOrder: messages for an offline device arrive in order
// on login, then Synced, with receipts going back to the sender once the
// device acks.
func TestOfflineQueueInOrder(t *testing.T) {
	n := nodetest.Start(t, nil)
	alice, bob := n.RegisterOn(t, 1), n.RegisterOn(t, 0)
	a, _ := n.Login(t, alice, 0)
	a.Expect(protocol.KindSynced)
	var ids []uint64
	for i := range 300 {
		ids = append(ids, a.SendText(bob.ID, uint64(i+1), "queued"))
	}
	b, ok := n.Login(t, bob, 0)
	if ok.Window == 0 || ok.HeartbeatS == 0 {
		t.Fatalf("LoginOk = %v", ok)
	}
	var got []uint64
	for len(got) < len(ids) {
		f := b.Expect(protocol.KindMessage, protocol.KindSynced)
		m, err := codec.ParseMessage(f.Body)
		if err != nil {
			t.Fatal(err)
		}
		if m.Seq != uint64(len(got)+1) {
			t.Fatalf("seq %d at position %d", m.Seq, len(got))
		}
		got = append(got, m.ID)
		if len(got)%50 == 0 {
			b.Ack(m.Seq)
		}
	}
	for i := range ids {
		if got[i] != ids[i] {
			t.Fatalf("message %d has id %d, want %d", i, got[i], ids[i])
		}
	}
	b.Ack(300)
	var s pb.Synced
	b.ExpectProto(protocol.KindSynced, &s)
	if s.Seq != 300 {
		t.Fatalf("Synced %d, want 300", s.Seq)
	}
	// Delivered receipts, coalesced: the last one names the last message.
	for {
		r := a.Receipt()
		if r.UpTo == ids[len(ids)-1] {
			break
		}
	}
}

// TestRetriedSendDeliveredOnce: the connection drops after the Send is
// written; the client reconnects and sends the same cmid again; the
// message is delivered once, with one id.
func TestRetriedSendDeliveredOnce(t *testing.T) {
	n := nodetest.Start(t, nil)
	alice, bob := n.RegisterOn(t, 0), n.RegisterOn(t, 1)
	a, _ := n.Login(t, alice, 0)
	a.Write(codec.AppendSend(nil, codec.Send{To: bob.ID, CMID: 42, Body: []byte("once")}))
	a.Conn.Close() // gone before (or after) Sent: the client cannot know
	a2, _ := n.Login(t, alice, 0)
	id := a2.SendText(bob.ID, 42, "once")
	b, _ := n.Login(t, bob, 0)
	m := b.Message()
	if m.ID != id || string(m.Body) != "once" {
		t.Fatalf("bob got %+v, want id %d", m, id)
	}
	var s pb.Synced
	b.ExpectProto(protocol.KindSynced, &s)
	if s.Seq != 1 {
		t.Fatalf("bob's inbox has %d entries, want 1", s.Seq)
	}
}
