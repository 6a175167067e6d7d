package client

import (
	"bytes"
	"context"
	"encoding/hex"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// These tests replay spec.md section 13, "A complete session in hex",
// against the client: what the client writes must be those bytes (except
// request ids, which are the client's choice), and what the server sends
// there must have the effect the section describes.

// specFrame is one hex example of section 13 and the prose line above it.
type specFrame struct {
	label string // "Alice → LOGIN, on the same connection, …"
	bytes []byte
}

// specSession returns the frames of spec.md section 13 in order.
func specSession(t *testing.T) []specFrame {
	t.Helper()
	b, err := os.ReadFile("../spec.md")
	if err != nil {
		t.Fatalf("read spec: %v", err)
	}
	lines := strings.Split(string(b), "\n")
	start := -1
	for i, l := range lines {
		if strings.HasPrefix(l, "## 13.") {
			start = i
		}
	}
	if start < 0 {
		t.Fatal("spec.md has no section 13")
	}
	var frames []specFrame
	label := ""
	for i := start; i < len(lines); i++ {
		l := lines[i]
		switch {
		case strings.HasPrefix(l, "<!-- frame:"):
			if i+1 >= len(lines) || lines[i+1] != "```" {
				t.Fatalf("spec.md:%d: frame comment without a code block", i+1)
			}
			var raw []byte
			for i += 2; i < len(lines) && lines[i] != "```"; i++ {
				hexPart, _, _ := strings.Cut(lines[i], "  ")
				bs, err := hex.DecodeString(strings.ReplaceAll(hexPart, " ", ""))
				if err != nil {
					t.Fatalf("spec.md:%d: %v", i+1, err)
				}
				raw = append(raw, bs...)
			}
			frames = append(frames, specFrame{label: label, bytes: raw})
		case strings.Contains(l, "→"):
			label = l
		}
	}
	return frames
}

// specBytes returns the bytes of the frame whose label starts with prefix,
// the n-th such (from 0).
func specBytes(t *testing.T, frames []specFrame, prefix string, n int) []byte {
	t.Helper()
	for _, f := range frames {
		if strings.HasPrefix(f.label, prefix) {
			if n == 0 {
				return f.bytes
			}
			n--
		}
	}
	t.Fatalf("spec.md section 13 has no frame %q", prefix)
	return nil
}

// wire returns a frame as it was on the wire.
func wire(f codec.Frame) []byte { return codec.AppendFrame(nil, f.Kind, f.Body) }

func TestSpecSessionAlice(t *testing.T) {
	frames := specSession(t)
	srv := newFakeServer(t, false)
	cfg := testConfig(srv)

	// Registration: VERIFY carries what the user typed; REGISTERED gives
	// the credentials.
	type verifyOutcome struct {
		creds Credentials
		err   error
	}
	res := make(chan verifyOutcome, 1)
	go func() {
		creds, err := Verify(context.Background(), cfg, "+447700900123", "492817", "Pixel 9")
		res <- verifyOutcome{creds, err}
	}()
	fc := srv.accept(t)
	var got, want pb.Verify
	fc.expectProto(protocol.KindVerify, &got)
	if err := codec.ParseProto(specBytes(t, frames, "Alice → VERIFY", 0)[2:], &want); err != nil {
		t.Fatal(err)
	}
	got.Rid, want.Rid = 0, 0 // request ids are the client's choice
	if got.String() != want.String() {
		t.Errorf("VERIFY = %v, spec %v", &got, &want)
	}
	fc.write(specBytes(t, frames, "→ Alice REGISTERED", 0))
	o := <-res
	if o.err != nil {
		t.Fatal(o.err)
	}

	c := startClientAs(t, cfg, o.creds, nil)
	// The client logs in on a new connection; the bytes are the spec's.
	fc = srv.accept(t)
	if login := wire(fc.next()); !bytes.Equal(login, specBytes(t, frames, "Alice → LOGIN", 0)) {
		t.Fatalf("LOGIN\n got % x\nspec % x", login, specBytes(t, frames, "Alice → LOGIN", 0))
	}
	fc.write(specBytes(t, frames, "→ Alice LOGIN_OK", 0))
	fc.write(specBytes(t, frames, "→ Alice SYNCED", 0))
	fc.write(specBytes(t, frames, "→ Alice MESSAGE", 0))
	conn := waitFor[Connected](c)
	if conn.Window != 128 || conn.Heartbeat != time.Minute || conn.Cursor != 0 {
		t.Errorf("Connected = %+v", conn)
	}
	if s := c.next().(Synced); s.Seq != 0 {
		t.Errorf("Synced = %+v", s)
	}
	m := c.next().(Message)
	if m.Seq != 1 || m.From != 4102 || m.ID != 251332520069573639 || string(m.Body) != "Hi Alice, welcome to Parley!" ||
		!m.Time.Equal(time.Date(2026, 11, 25, 13, 5, 42, 317e6, time.UTC)) {
		t.Errorf("Message = %+v", m)
	}
	if ack := wire(fc.next()); !bytes.Equal(ack, specBytes(t, frames, "Alice → ACK", 0)) {
		t.Errorf("ACK % x, spec % x", ack, specBytes(t, frames, "Alice → ACK", 0))
	}

	read := make(chan error, 1)
	go func() { read <- c.MarkRead(context.Background(), m.From, m.ID) }()
	var r, rwant pb.Read
	fc.expectProto(protocol.KindRead, &r)
	if err := codec.ParseProto(specBytes(t, frames, "Alice → READ", 0)[2:], &rwant); err != nil {
		t.Fatal(err)
	}
	rid := r.Rid
	r.Rid, rwant.Rid = 0, 0
	if r.String() != rwant.String() {
		t.Errorf("READ = %v, spec %v", &r, &rwant)
	}
	fc.writeProto(protocol.KindOK, &pb.Ok{Rid: rid})
	if err := <-read; err != nil {
		t.Fatal(err)
	}
}

func TestSpecSessionBob(t *testing.T) {
	frames := specSession(t)
	srv := newFakeServer(t, false)
	st := NewMemoryStore()
	bob := Credentials{User: 4102, Device: 1, Secret: bytes.Repeat([]byte{1}, protocol.CredentialLen)}
	for _, err := range []error{
		st.SaveCredentials(bob),
		st.SaveCursor(41),
		st.AddOutgoing(Outgoing{CMID: 16, To: 1}), // his 16th message…
		st.RemoveOutgoing(16),                     // …answered long ago
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	tc := startClientAs(t, testConfig(srv), bob, st)

	fc := srv.accept(t)
	fc.login(128, 60, 41)
	waitFor[Connected](tc)

	res := sendAsyncTest(tc, context.Background(), 4101, "Hi Alice, welcome to Parley!")
	if send := wire(fc.next()); !bytes.Equal(send, specBytes(t, frames, "Bob → SEND", 0)) {
		t.Fatalf("SEND\n got % x\nspec % x", send, specBytes(t, frames, "Bob → SEND", 0))
	}
	fc.write(specBytes(t, frames, "→ Bob SENT", 0))
	o := outcome(t, res)
	if o.err != nil || o.sent.ID != 251332520069573639 || !o.sent.Time.Equal(time.Date(2026, 11, 25, 13, 5, 42, 317e6, time.UTC)) {
		t.Fatalf("Send = %+v, %v", o.sent, o.err)
	}

	for n, typ := range []pb.ReceiptType{pb.ReceiptType_RECEIPT_DELIVERED, pb.ReceiptType_RECEIPT_READ} {
		fc.write(specBytes(t, frames, "→ Bob RECEIPT", n))
		r := waitFor[Receipt](tc)
		if r.Peer != 4101 || r.Type != typ || r.UpTo != o.sent.ID {
			t.Errorf("Receipt = %+v", r)
		}
		if ack := wire(fc.next()); !bytes.Equal(ack, specBytes(t, frames, "Bob → ACK", n)) {
			t.Errorf("ACK % x, spec % x", ack, specBytes(t, frames, "Bob → ACK", n))
		}
	}
}
