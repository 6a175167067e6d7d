package codec

import (
	"bytes"
	"errors"
	"testing"

	"github.com/parley-im/parley/protocol"
)

func TestParseLiteral(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		kind    protocol.Kind
		body    []byte
		n       int
		comp    bool
		wantErr error
	}{
		{name: "ping", in: []byte{0x00, 0x01}, kind: protocol.KindPing, body: []byte{}, n: 2},
		{name: "ack 150", in: []byte{0x03, 0x06, 0x08, 0x96, 0x01}, kind: protocol.KindAck, body: []byte{0x08, 0x96, 0x01}, n: 5},
		{name: "trailing bytes stay", in: []byte{0x00, 0x01, 0xff}, kind: protocol.KindPing, body: []byte{}, n: 2},
		{name: "compressed flag", in: []byte{0x01, 0xcb, 0x00}, kind: protocol.KindBatch, body: []byte{0x00}, n: 3, comp: true},
		{name: "two-byte length", in: append([]byte{0x80, 0x01, 0x49}, make([]byte, 128)...), kind: protocol.KindMessage, body: make([]byte, 128), n: 131},
		{name: "kind zero", in: []byte{0x00, 0x00}, wantErr: ErrMalformed},
		{name: "non-minimal length", in: []byte{0x80, 0x00, 0x01}, wantErr: ErrMalformed},
		{name: "length prefix too long", in: []byte{0x80, 0x80, 0x80, 0x01}, wantErr: ErrMalformed},
		{name: "too large, header only", in: []byte{0x81, 0x80, 0x01}, wantErr: ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, n, _, err := Parse(tt.in, 1024)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Parse(% x) error = %v, want %v", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(% x): %v", tt.in, err)
			}
			if n != tt.n || f.Kind != tt.kind || f.Compressed != tt.comp || !bytes.Equal(f.Body, tt.body) {
				t.Fatalf("Parse(% x) = %v n=%d, want kind %v body % x n=%d", tt.in, f, n, tt.kind, tt.body, tt.n)
			}
		})
	}
}

// TestParsePrefixes checks [S-3-2]: every strict prefix of a frame asks for
// more input, and reports the total length once the header is complete.
func TestParsePrefixes(t *testing.T) {
	frames := [][]byte{
		AppendAck(nil, 150),
		AppendSend(nil, Send{To: 4242, CMID: 7, Body: []byte("hello, world")}),
		AppendFrame(nil, protocol.KindMessage, make([]byte, 300)),
		AppendFrame(nil, protocol.KindMessage, make([]byte, 20000)),
	}
	for _, fr := range frames {
		for i := 0; i < len(fr); i++ {
			f, n, need, err := Parse(fr[:i], protocol.MaxFrameBody)
			if err != nil || n != 0 || f.Kind != 0 {
				t.Fatalf("Parse(prefix %d of %d) = %v, %d, %v; want need-more", i, len(fr), f, n, err)
			}
			if i >= HeaderLen(len(fr)-HeaderLen(0)) && need != 0 && need != len(fr) {
				t.Fatalf("prefix %d: need = %d, want %d", i, need, len(fr))
			}
		}
		if _, n, _, err := Parse(fr, protocol.MaxFrameBody); err != nil || n != len(fr) {
			t.Fatalf("Parse(whole) n=%d err=%v, want %d", n, err, len(fr))
		}
	}
}

// TestParseLimitBeforeBody checks [S-3-3]: an oversized frame is refused as
// soon as its length prefix is complete.
func TestParseLimitBeforeBody(t *testing.T) {
	hdr := AppendHeader(nil, protocol.KindSend, false, protocol.MaxClientFrameBody+1)
	if _, _, _, err := Parse(hdr[:len(hdr)-1], protocol.MaxClientFrameBody); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Parse(length only) error = %v, want ErrTooLarge", err)
	}
}

func TestHeaderLen(t *testing.T) {
	for _, n := range []int{0, 1, 127, 128, 16383, 16384, protocol.MaxFrameBody} {
		if got, want := HeaderLen(n), len(AppendHeader(nil, protocol.KindMessage, false, n)); got != want {
			t.Errorf("HeaderLen(%d) = %d, want %d", n, got, want)
		}
	}
	if got := HeaderLen(protocol.MaxFrameBody); got > protocol.MaxHeaderLen {
		t.Errorf("HeaderLen(MaxFrameBody) = %d > MaxHeaderLen", got)
	}
}

func TestNextFrame(t *testing.T) {
	var batch []byte
	batch = AppendEntry(batch, protocol.KindMessage, 1, AppendMessageEntry(nil, Message{ID: 9, From: 3, Body: []byte("a")}))
	batch = AppendEntry(batch, protocol.KindReceipt, 2, AppendReceiptEntry(nil, Receipt{Peer: 3, UpTo: 8}))
	var seqs []uint64
	for rest := batch; len(rest) > 0; {
		f, r, err := NextFrame(rest, protocol.MaxFrameBody)
		if err != nil {
			t.Fatal(err)
		}
		rest = r
		switch f.Kind {
		case protocol.KindMessage:
			m, err := ParseMessage(f.Body)
			if err != nil {
				t.Fatal(err)
			}
			seqs = append(seqs, m.Seq)
		case protocol.KindReceipt:
			r, err := ParseReceipt(f.Body)
			if err != nil {
				t.Fatal(err)
			}
			seqs = append(seqs, r.Seq)
		}
	}
	if len(seqs) != 2 || seqs[0] != 1 || seqs[1] != 2 {
		t.Fatalf("seqs = %v, want [1 2]", seqs)
	}
	torn := batch[:len(batch)-1]
	_, rest, err := NextFrame(torn, protocol.MaxFrameBody)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := NextFrame(rest, protocol.MaxFrameBody); !errors.Is(err, ErrMalformed) {
		t.Fatalf("NextFrame on a torn batch: err = %v, want ErrMalformed", err)
	}
	nested := AppendFrame(nil, protocol.KindBatch, nil)
	if _, _, err := NextFrame(nested, protocol.MaxFrameBody); !errors.Is(err, ErrMalformed) {
		t.Fatalf("nested batch: err = %v, want ErrMalformed", err)
	}
}
