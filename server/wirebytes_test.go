package server_test

import (
	"bytes"
	"testing"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/internal/nodetest"
	"github.com/parley-im/parley/internal/tls13"
	"github.com/parley-im/parley/internal/wiretest"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// TestWireBytesPerLeg counts, on the wire, every leg of a 20-byte 1:1
// text and its delivered receipt between two devices that asked for
// compact SENTs ([S-7-16]), each leg on its own (nothing else in flight,
// as at a low rate): SEND, SENT, MESSAGE, the recipient's ACK, the
// RECEIPT, the sender's ACK. The second message of the conversation is
// measured, so its SENT is the compact one. Each leg is one TLS record:
// its frame plus tls13.SealedSize's 22 bytes.
func TestWireBytesPerLeg(t *testing.T) {
	n := nodetest.Start(t, nil)
	alice, bob := n.RegisterOn(t, 0), n.RegisterOn(t, 1) // receipts cross shards
	a, ac := wiretest.DialCounting(t, n.Addr().String(), n.Fingerprint())
	b, bc := wiretest.DialCounting(t, n.Addr().String(), n.Fingerprint())
	for _, l := range []struct {
		c *wiretest.Client
		u wiretest.User
	}{{a, alice}, {b, bob}} {
		l.c.Send(protocol.KindLogin, &pb.Login{Version: protocol.Version, User: l.u.ID, Device: l.u.Device,
			Credential: l.u.Cred, CompactSent: true})
		l.c.Expect(protocol.KindLoginOK)
		l.c.Expect(protocol.KindSynced)
	}

	text := bytes.Repeat([]byte("t"), 20)
	type leg struct {
		name         string
		frame, wire  int
		budgetFrame  int // 0: none
		sealedAsOnce bool
	}
	var legs []leg
	// measure runs step, which moves one leg, and records the bytes that
	// moved on counter field *field and the leg's frame size.
	measure := func(name string, field *int, budget int, step func() int) {
		t.Helper()
		before := *field
		frame := step()
		legs = append(legs, leg{name: name, frame: frame, wire: *field - before, budgetFrame: budget})
	}
	var sent struct{ st codec.SentState }
	for i := range 2 {
		cmid := uint64(i + 1)
		legs = legs[:0]
		measure("SEND", &ac.Out, 0, func() int {
			f := codec.AppendSend(nil, codec.Send{To: bob.ID, CMID: cmid, Body: text})
			a.Write(f)
			return len(f)
		})
		var id uint64
		measure("SENT", &ac.In, 6, func() int {
			f := a.Expect(protocol.KindSent)
			gotCMID, gotID, err := sent.st.ParseSent(f.Body)
			if err != nil || gotCMID != cmid {
				t.Fatalf("Sent (%d, %d, %v), want cmid %d", gotCMID, gotID, err, cmid)
			}
			id = gotID
			return codec.HeaderLen(len(f.Body)) + len(f.Body)
		})
		var seq uint64
		measure("MESSAGE", &bc.In, 0, func() int {
			f := b.Expect(protocol.KindMessage)
			m, err := codec.ParseMessage(f.Body)
			if err != nil || m.ID != id || !bytes.Equal(m.Body, text) {
				t.Fatalf("bob got %+v (%v), want id %d", m, err, id)
			}
			seq = m.Seq
			return codec.HeaderLen(len(f.Body)) + len(f.Body)
		})
		measure("ACK", &bc.Out, 6, func() int {
			f := codec.AppendAck(nil, seq)
			b.Write(f)
			return len(f)
		})
		measure("RECEIPT (delivered)", &ac.In, 0, func() int {
			f := a.Expect(protocol.KindReceipt)
			r, err := codec.ParseReceipt(f.Body)
			if err != nil || r.UpTo != id || r.Type != pb.ReceiptType_RECEIPT_DELIVERED {
				t.Fatalf("alice got %+v (%v), want delivered %d", r, err, id)
			}
			seq = r.Seq
			return codec.HeaderLen(len(f.Body)) + len(f.Body)
		})
		measure("ACK of the receipt", &ac.Out, 6, func() int {
			f := codec.AppendAck(nil, seq)
			a.Write(f)
			return len(f)
		})
	}
	// The receipt's ACK has no answer: a PING's PONG proves the server
	// read it before the test ends (and that nothing else came first).
	a.Write(codec.AppendFrame(nil, protocol.KindPing, nil))
	a.Expect(protocol.KindPong)

	var frames, wire int
	for _, l := range legs {
		t.Logf("%-20s %3d B frame, %3d B on the wire", l.name, l.frame, l.wire)
		if l.wire != tls13.SealedSize(l.frame) {
			t.Errorf("%s: %d B on the wire, want its frame (%d B) in one record: %d B", l.name, l.wire, l.frame, tls13.SealedSize(l.frame))
		}
		if l.budgetFrame > 0 && l.frame > l.budgetFrame {
			t.Errorf("%s: %d B frame, budget %d B", l.name, l.frame, l.budgetFrame)
		}
		frames += l.frame
		wire += l.wire
	}
	// DESIGN.md's budget is 120 B for all legs on the wire; one record per
	// leg costs 6 × 22 B whatever the frames are (docs/benchmarks.md).
	t.Logf("all legs: %d B of frames, %d B on the wire in %d records", frames, wire, len(legs))
}

// TestErrorsCountedOnCompactConnections: an Error frame written to a
// connection that asked for compact SENTs is counted by code, as on any
// other connection, along with the frames around it.
func TestErrorsCountedOnCompactConnections(t *testing.T) {
	n := nodetest.Start(t, nil)
	alice := n.RegisterOn(t, 0)
	a := n.Dial(t)
	a.Send(protocol.KindLogin, &pb.Login{Version: protocol.Version, User: alice.ID, Device: alice.Device,
		Credential: alice.Cred, CompactSent: true})
	a.Expect(protocol.KindLoginOK)
	a.Expect(protocol.KindSynced)
	st := n.Server().Stats()
	before, framesBefore := st.ErrorsSent[protocol.CodeNotFound].Load(), st.FramesOut.Load()
	a.Write(codec.AppendSend(nil, codec.Send{To: alice.ID + 1<<40, CMID: 1, Body: []byte("to nobody")})) // no such user: NOT_FOUND
	a.ExpectError(protocol.CodeNotFound)
	if got := st.ErrorsSent[protocol.CodeNotFound].Load() - before; got != 1 {
		t.Fatalf("NOT_FOUND counted %d times on a compact connection, want 1", got)
	}
	if st.FramesOut.Load() == framesBefore {
		t.Fatal("the Error frame was not counted among the frames sent")
	}
}
