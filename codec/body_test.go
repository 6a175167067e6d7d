package codec

import (
	"bytes"
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// parseOne parses b as exactly one frame of kind want.
func parseOne(t *testing.T, b []byte, want protocol.Kind) Frame {
	t.Helper()
	f, n, _, err := Parse(b, protocol.MaxFrameBody)
	if err != nil || n != len(b) {
		t.Fatalf("Parse(% x): n=%d err=%v", b, n, err)
	}
	if f.Kind != want {
		t.Fatalf("kind = %v, want %v", f.Kind, want)
	}
	return f
}

// TestHotEncodersMatchGenerated checks that the hand-written encoders
// produce exactly what the generated code produces for the same message.
func TestHotEncodersMatchGenerated(t *testing.T) {
	tests := []struct {
		name string
		hand []byte
		kind protocol.Kind
		msg  proto.Message
	}{
		{"send", AppendSend(nil, Send{To: 300, CMID: 1 << 40, Body: []byte("hi"), Type: pb.ContentType_CONTENT_IMAGE}),
			protocol.KindSend, &pb.Send{To: 300, Cmid: 1 << 40, Body: []byte("hi"), Type: pb.ContentType_CONTENT_IMAGE}},
		{"send zero fields", AppendSend(nil, Send{To: 1}), protocol.KindSend, &pb.Send{To: 1}},
		{"reaction", AppendSend(nil, Send{To: 300, CMID: 2, Body: []byte("+1"), Type: pb.ContentType_CONTENT_REACTION, Ref: 1 << 58, Forwarded: 0}),
			protocol.KindSend, &pb.Send{To: 300, Cmid: 2, Body: []byte("+1"), Type: pb.ContentType_CONTENT_REACTION, Ref: 1 << 58}},
		{"forwarded reply", AppendSend(nil, Send{Group: 300, CMID: 3, Body: []byte("x"), Ref: 7, Forwarded: 5}),
			protocol.KindSend, &pb.Send{Group: 300, Cmid: 3, Body: []byte("x"), Ref: 7, Forwarded: 5}},
		{"group send", AppendSend(nil, Send{CMID: 2, Body: []byte("g"), Group: 1 << 33}), protocol.KindSend, &pb.Send{Cmid: 2, Body: []byte("g"), Group: 1 << 33}},
		{"ack", AppendAck(nil, 1<<21), protocol.KindAck, &pb.Ack{Seq: 1 << 21}},
		{"ack zero", AppendAck(nil, 0), protocol.KindAck, &pb.Ack{}},
		{"sent", AppendSent(nil, 5, 1<<62), protocol.KindSent, &pb.Sent{Cmid: 5, Id: 1 << 62}},
		{"message", AppendEntry(nil, protocol.KindMessage, 77, AppendMessageEntry(nil, Message{ID: 1 << 60, From: 12345, Body: []byte("hello"), Type: pb.ContentType_CONTENT_VOICE, FromDevice: 3})),
			protocol.KindMessage, &pb.Message{Seq: 77, Id: 1 << 60, From: 12345, Body: []byte("hello"), Type: pb.ContentType_CONTENT_VOICE, FromDevice: 3}},
		{"group message", AppendEntry(nil, protocol.KindMessage, 78, AppendMessageEntry(nil, Message{ID: 5, From: 6, Body: []byte("x"), Group: 9 << 12, GSeq: 300, To: 0})),
			protocol.KindMessage, &pb.Message{Seq: 78, Id: 5, From: 6, Body: []byte("x"), Group: 9 << 12, Gseq: 300}},
		{"self copy", AppendEntry(nil, protocol.KindMessage, 79, AppendMessageEntry(nil, Message{ID: 5, From: 6, Body: []byte("x"), To: 7})),
			protocol.KindMessage, &pb.Message{Seq: 79, Id: 5, From: 6, Body: []byte("x"), To: 7}},
		{"disappearing message", AppendEntry(nil, protocol.KindMessage, 80, AppendMessageEntry(nil, Message{ID: 5, From: 6, Body: []byte("x"), TTL: 86400})),
			protocol.KindMessage, &pb.Message{Seq: 80, Id: 5, From: 6, Body: []byte("x"), TtlS: 86400}},
		{"edit of a forwarded message", AppendEntry(nil, protocol.KindMessage, 81, AppendMessageEntry(nil, Message{ID: 5, From: 6, Body: []byte("y"), Type: pb.ContentType_CONTENT_EDIT, Ref: 4, Forwarded: 2})),
			protocol.KindMessage, &pb.Message{Seq: 81, Id: 5, From: 6, Body: []byte("y"), Type: pb.ContentType_CONTENT_EDIT, Ref: 4, Forwarded: 2}},
		{"group receipt", AppendEntry(nil, protocol.KindReceipt, 9, AppendReceiptEntry(nil, Receipt{Peer: 4, Type: pb.ReceiptType_RECEIPT_READ, UpTo: 3, Group: 8})),
			protocol.KindReceipt, &pb.Receipt{Seq: 9, Peer: 4, Type: pb.ReceiptType_RECEIPT_READ, UpTo: 3, Group: 8}},
		{"receipt", AppendEntry(nil, protocol.KindReceipt, 9, AppendReceiptEntry(nil, Receipt{Peer: 4, Type: pb.ReceiptType_RECEIPT_READ, UpTo: 1 << 50})),
			protocol.KindReceipt, &pb.Receipt{Seq: 9, Peer: 4, Type: pb.ReceiptType_RECEIPT_READ, UpTo: 1 << 50}},
		{"synced", AppendSynced(nil, 300), protocol.KindSynced, &pb.Synced{Seq: 300}},
		{"ok", AppendOK(nil, 12), protocol.KindOK, &pb.Ok{Rid: 12}},
		{"error", AppendError(nil, protocol.CodeRateLimited, 7, 8, "slow down", 1500),
			protocol.KindError, &pb.Error{Code: protocol.CodeRateLimited, Rid: 7, Cmid: 8, Message: "slow down", RetryAfterMs: 1500}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gen, err := AppendProto(nil, tt.kind, tt.msg)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(tt.hand, gen) {
				t.Fatalf("hand-written % x\ngenerated    % x", tt.hand, gen)
			}
		})
	}
}

// TestHotDecodersMatchGenerated checks the hand-written decoders against
// bytes produced by the generated code, including unknown fields, which
// must be skipped ([S-12-3]).
func TestHotDecodersMatchGenerated(t *testing.T) {
	unknown := []byte{0xf8, 0x07, 0x01, 0xfa, 0x07, 0x02, 'x', 'y', 0xfd, 0x07, 1, 2, 3, 4}

	b, _ := proto.Marshal(&pb.Send{To: 9, Cmid: 10, Body: []byte("body"), Type: pb.ContentType_CONTENT_DOCUMENT, Group: 11, Forwarded: 12, Ref: 13})
	s, err := ParseSend(append(b, unknown...))
	if err != nil || s.To != 9 || s.CMID != 10 || string(s.Body) != "body" || s.Type != pb.ContentType_CONTENT_DOCUMENT || s.Group != 11 ||
		s.Forwarded != 12 || s.Ref != 13 {
		t.Fatalf("ParseSend = %+v, %v", s, err)
	}

	b, _ = proto.Marshal(&pb.Ack{Seq: 123456})
	seq, err := ParseAck(append(b, unknown...))
	if err != nil || seq != 123456 {
		t.Fatalf("ParseAck = %d, %v", seq, err)
	}

	b, _ = proto.Marshal(&pb.Message{Seq: 1, Id: 2, From: 3, Body: []byte("m"), Type: pb.ContentType_CONTENT_VIDEO, FromDevice: 4, Group: 5, Gseq: 6, To: 7, TtlS: 8,
		Forwarded: 9, Ref: 10})
	m, err := ParseMessage(append(b, unknown...))
	if err != nil || m.Seq != 1 || m.ID != 2 || m.From != 3 || string(m.Body) != "m" || m.Type != pb.ContentType_CONTENT_VIDEO || m.FromDevice != 4 ||
		m.Group != 5 || m.GSeq != 6 || m.To != 7 || m.TTL != 8 || m.Forwarded != 9 || m.Ref != 10 {
		t.Fatalf("ParseMessage = %+v, %v", m, err)
	}

	b, _ = proto.Marshal(&pb.Receipt{Seq: 5, Peer: 6, Type: pb.ReceiptType_RECEIPT_READ, UpTo: 7, Group: 8})
	r, err := ParseReceipt(append(b, unknown...))
	if err != nil || r != (Receipt{Seq: 5, Peer: 6, Type: pb.ReceiptType_RECEIPT_READ, UpTo: 7, Group: 8}) {
		t.Fatalf("ParseReceipt = %+v, %v", r, err)
	}
}

func TestHotDecodersRejectMalformed(t *testing.T) {
	bad := [][]byte{
		{0x08},             // tag, no value
		{0x08, 0x80},       // truncated varint
		{0x0a, 0x05, 0x01}, // field 1 as bytes, truncated
		{0x1a, 0x01},       // body shorter than declared
		{0x00},             // field number 0
	}
	for _, b := range bad {
		if _, err := ParseSend(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseSend(% x) err = %v, want ErrMalformed", b, err)
		}
	}
}

// TestWrongWireTypeIsUnknown: a known field with an unexpected wire type is
// an unknown field, skipped, exactly as the generated code does ([S-12-3]).
func TestWrongWireTypeIsUnknown(t *testing.T) {
	in := []byte{0x0a, 0x00, 0x10, 0x05, 0x18, 0x01} // to as bytes, cmid 5, body as varint
	s, err := ParseSend(in)
	if err != nil || s.To != 0 || s.CMID != 5 || s.Body != nil {
		t.Fatalf("ParseSend = %+v, %v; want only cmid 5", s, err)
	}
	var gen pb.Send
	if err := proto.Unmarshal(in, &gen); err != nil || gen.To != 0 || gen.Cmid != 5 || gen.Body != nil {
		t.Fatalf("generated = %v, %v", &gen, err)
	}
	if seq, err := ParseAck([]byte{0x0a, 0x00}); err != nil || seq != 0 {
		t.Fatalf("ParseAck(seq as bytes) = %d, %v; want 0, nil", seq, err)
	}
}

// TestHotPathAllocations checks the frame path allocates nothing: parsing
// and decoding a Send and an Ack, and encoding Sent and Message frames into
// a buffer with room.
func TestHotPathAllocations(t *testing.T) {
	send := AppendSend(nil, Send{To: 4242, CMID: 99, Body: bytes.Repeat([]byte("x"), 20)})
	ack := AppendAck(nil, 1000)
	stored := AppendMessageEntry(nil, Message{ID: 1 << 57, From: 4242, Body: bytes.Repeat([]byte("x"), 20)})
	buf := make([]byte, 0, 4096)
	allocs := testing.AllocsPerRun(1000, func() {
		f, _, _, err := Parse(send, protocol.MaxClientFrameBody)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParseSend(f.Body); err != nil {
			t.Fatal(err)
		}
		f, _, _, _ = Parse(ack, protocol.MaxClientFrameBody)
		if _, err := ParseAck(f.Body); err != nil {
			t.Fatal(err)
		}
		out := AppendSent(buf[:0], 99, 1<<57)
		out = AppendEntry(out, protocol.KindMessage, 1000, stored)
		_ = AppendError(out, protocol.CodeNotFound, 0, 99, "", 0)
	})
	if allocs != 0 {
		t.Fatalf("hot path allocates %.1f times per frame set, want 0", allocs)
	}
}

// TestOverheadBudget checks the byte budgets of DESIGN.md for a 20-byte
// text: sender→server ≤ 16 bytes beyond the text, server→recipient ≤ 24,
// a cumulative ack and a (compact) SENT ≤ 6 each, with realistic ids (3-byte user ids, seq below
// 2^21, a message id of today).
func TestOverheadBudget(t *testing.T) {
	text := bytes.Repeat([]byte("t"), 20)
	const user, cmid, seq = 1 << 20, 1 << 13, 1<<21 - 1
	id := uint64(3e11) << protocol.MessageIDTimeShift // a message id from 2034
	up := len(AppendSend(nil, Send{To: user, CMID: cmid, Body: text})) - len(text)
	down := len(AppendEntry(nil, protocol.KindMessage, seq, AppendMessageEntry(nil, Message{ID: id, From: user, Body: text}))) - len(text)
	ack := len(AppendAck(nil, seq))
	// A SENT a second after the connection's previous one, compact ([S-7-16]).
	prev := SentState{CMID: cmid - 1, ID: id - 1000<<protocol.MessageIDTimeShift}
	sent := len(prev.AppendSent(nil, cmid, id))
	if up > 16 || down > 24 || ack > 6 || sent > 6 {
		t.Fatalf("overhead up=%d down=%d ack=%d sent=%d, budget 16/24/6/6", up, down, ack, sent)
	}
	t.Logf("overhead: up %d B, down %d B, ack %d B, SENT %d B", up, down, ack, sent)
}

func BenchmarkParseSend(b *testing.B) {
	send := AppendSend(nil, Send{To: 4242, CMID: 99, Body: bytes.Repeat([]byte("x"), 100)})
	b.ReportAllocs()
	for b.Loop() {
		f, _, _, _ := Parse(send, protocol.MaxClientFrameBody)
		if _, err := ParseSend(f.Body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendEntry(b *testing.B) {
	stored := AppendMessageEntry(nil, Message{ID: 1 << 57, From: 4242, Body: bytes.Repeat([]byte("x"), 100)})
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendEntry(buf[:0], protocol.KindMessage, 123456, stored)
	}
}
