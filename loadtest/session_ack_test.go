package loadtest

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"testing"
	"testing/synctest"
	"time"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// TestLazyAck: the load tester acknowledges as the SDK does ([S-8-5]):
// receipts, group messages and copies of its own sends within
// LazyAckDelay, a one-to-one message from another user or a large one
// within AckDelay, which also brings a held Ack forward. In a synctest
// bubble over net.Pipe with TLS, so every Ack's time is exact.
func TestLazyAck(t *testing.T) {
	cert, fp := testCertificate(t)
	const ackDelay, lazyDelay = 50 * time.Millisecond, time.Second
	spec := workerSpec{Config: Config{AckDelay: ackDelay, LazyAckDelay: lazyDelay}, Source: "127.0.0.1", Hi: 1, Fingerprint: fp}
	w, err := newWorker(context.Background(), spec, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	d := w.devices[0]
	d.user = 42

	synctest.Test(t, func(t *testing.T) {
		cc, sc := net.Pipe()
		server := tls.Server(sc, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13})
		conn := tls.Client(cc, w.tlsConfig)
		handshake := make(chan error, 1)
		go func() { handshake <- server.Handshake() }()
		if err := conn.Handshake(); err != nil {
			t.Fatal(err)
		}
		if err := <-handshake; err != nil {
			t.Fatal(err)
		}
		type ack struct {
			seq uint64
			at  time.Time
		}
		acks := make(chan ack, 16)
		go func() { // the server: every Ack and when it came
			defer close(acks)
			r := codec.NewReader(server, protocol.MaxFrameBody, nil)
			for {
				f, err := r.ReadFrame()
				if err != nil {
					return
				}
				var m pb.Ack
				if f.Kind != protocol.KindAck || codec.ParseProto(f.Body, &m) != nil {
					t.Errorf("server got %v, want only Acks", f.Kind)
					continue
				}
				acks <- ack{m.Seq, time.Now()}
			}
		}()
		s := &session{d: d, conn: conn, window: 64, loggedIn: make(chan struct{}), synced: make(chan struct{}), done: make(chan struct{})}
		defer func() {
			_ = conn.Close()
			_ = server.Close()
			for range acks {
			}
		}()

		// take hands the entry to the session as its reader does (a
		// frame, then maybeAck with nothing more buffered).
		take := func(entry []byte) {
			t.Helper()
			f, _, err := codec.NextFrame(entry, protocol.MaxFrameBody)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.handle(f); err != nil {
				t.Fatal(err)
			}
			if err := s.maybeAck(); err != nil {
				t.Fatal(err)
			}
		}
		// expect waits for the next Ack: seq, after exactly wait since from.
		expect := func(seq uint64, from time.Time, wait time.Duration, what string) {
			t.Helper()
			a, ok := <-acks
			if !ok {
				t.Fatalf("%s: no Ack of %d", what, seq)
			}
			if a.seq != seq || a.at.Sub(from) != wait {
				t.Fatalf("%s: Ack of %d after %v, want of %d after %v", what, a.seq, a.at.Sub(from), seq, wait)
			}
		}
		message := func(seq, from, group uint64, body []byte) []byte {
			return codec.AppendEntry(nil, protocol.KindMessage, seq,
				codec.AppendMessageEntry(nil, codec.Message{ID: seq << protocol.MessageIDTimeShift, From: from, FromDevice: 1, Group: group, GSeq: seq, Body: body}))
		}
		receipt := codec.AppendEntry(nil, protocol.KindReceipt, 1,
			codec.AppendReceiptEntry(nil, codec.Receipt{Peer: 5, Type: pb.ReceiptType_RECEIPT_DELIVERED, UpTo: 7}))

		for _, c := range []struct {
			name  string
			entry []byte
			wait  time.Duration
		}{
			{"a receipt", receipt, lazyDelay},
			{"a group message", message(2, 5, 77, []byte("g")), lazyDelay},
			{"a copy of its own send", message(3, d.user, 0, []byte("mine")), lazyDelay},
			{"a one-to-one message", message(4, 5, 0, []byte("x")), ackDelay},
			{"a large group message", message(5, 5, 77, bytes.Repeat([]byte("g"), protocol.LazyAckMaxBody)), ackDelay},
		} {
			start := time.Now()
			take(c.entry)
			seq := d.cursor.Load()
			expect(seq, start, c.wait, c.name)
		}

		// A group message's held Ack, then a one-to-one message 10 ms
		// later: one Ack, AckDelay after the one-to-one message.
		start := time.Now()
		take(message(6, 5, 77, []byte("g")))
		time.Sleep(10 * time.Millisecond)
		take(message(7, 5, 0, []byte("y")))
		expect(7, start, 10*time.Millisecond+ackDelay, "a one-to-one message after a held Ack")
	})
}
