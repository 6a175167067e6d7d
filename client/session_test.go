package client

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// storeAt returns a MemoryStore holding testCreds and cursor.
func storeAt(t *testing.T, cursor uint64) *MemoryStore {
	t.Helper()
	st := NewMemoryStore()
	if err := st.SaveCredentials(testCreds); err != nil {
		t.Fatal(err)
	}
	if err := st.SaveCursor(cursor); err != nil {
		t.Fatal(err)
	}
	return st
}

func cursorOf(t *testing.T, st Store) uint64 {
	t.Helper()
	s, err := st.Load()
	if err != nil {
		t.Fatal(err)
	}
	return s.Cursor
}

// ackUntil reads frames until an Ack of at least seq, checking that acks
// only grow, and returns how many acks it saw.
func ackUntil(t *testing.T, fc *fakeConn, seq uint64) int {
	t.Helper()
	var last uint64
	n := 0
	for last < seq {
		got := fc.expectAck()
		if got <= last {
			t.Fatalf("ack %d after ack %d: acks must grow", got, last)
		}
		last = got
		n++
	}
	if last != seq {
		t.Fatalf("ack %d, want %d", last, seq)
	}
	return n
}

func TestLoginResumesFromCursor(t *testing.T) {
	srv := newFakeServer(t, false)
	st := storeAt(t, 7)
	c := startClient(t, testConfig(srv), st)

	fc := srv.accept(t)
	login := fc.login(16, 30, 7)
	if login.Version != protocol.Version || login.User != testCreds.User || login.Device != testCreds.Device ||
		!bytes.Equal(login.Credential, testCreds.Secret) || login.Cursor != 7 {
		t.Fatalf("Login = %v", login)
	}
	conn := waitFor[Connected](c)
	if conn.Heartbeat != 30*time.Second || conn.Window != 16 || conn.Cursor != 7 || conn.ServerTime.UnixMilli() != 1_750_000_000_000 {
		t.Errorf("Connected = %+v", conn)
	}
	fc.write(message(8, msgID(1000, 1), 5, "hello"))
	fc.write(receipt(9, 5, pb.ReceiptType_RECEIPT_READ, msgID(900, 0)))
	fc.writeProto(protocol.KindSynced, &pb.Synced{Seq: 9})

	m := waitFor[Message](c)
	if m.Seq != 8 || m.From != 5 || m.FromDevice != 1 || string(m.Body) != "hello" || m.ID != msgID(1000, 1) ||
		!m.Time.Equal(time.UnixMilli(protocol.MessageIDEpochMS+1000)) {
		t.Errorf("Message = %+v", m)
	}
	r := c.next().(Receipt)
	if r != (Receipt{Seq: 9, Peer: 5, Type: pb.ReceiptType_RECEIPT_READ, UpTo: msgID(900, 0)}) {
		t.Errorf("Receipt = %+v", r)
	}
	if s := c.next().(Synced); s.Seq != 9 {
		t.Errorf("Synced = %+v", s)
	}
	ackUntil(t, fc, 9) // Synced flushes the ack without waiting for AckDelay
	if got := cursorOf(t, st); got != 9 {
		t.Errorf("stored cursor %d after ack 9", got)
	}

	// The server drops the connection; the client resumes from 9.
	_ = fc.c.Close()
	ev := waitFor[Disconnected](c)
	if ev.Err == nil || ev.RetryIn < 0 || ev.RetryIn >= time.Millisecond {
		t.Errorf("Disconnected = %+v", ev)
	}
	fc = srv.accept(t)
	if login := fc.login(16, 30, 9); login.Cursor != 9 {
		t.Fatalf("second Login cursor %d, want 9", login.Cursor)
	}
	waitFor[Connected](c)
}

// TestEntriesAtOrBelowCursorDropped checks [S-8-9]: an entry at or below
// the cursor is dropped, yet acknowledged.
func TestEntriesAtOrBelowCursorDropped(t *testing.T) {
	srv := newFakeServer(t, false)
	st := storeAt(t, 10)
	cfg := testConfig(srv)
	c := startClient(t, cfg, st)
	fc := srv.accept(t)
	fc.login(16, 30, 10)
	waitFor[Connected](c)
	// A faulty server repeats entries the device already has.
	for seq := uint64(9); seq <= 11; seq++ {
		fc.write(message(seq, msgID(seq, 0), 5, "m"))
	}
	fc.writeProto(protocol.KindSynced, &pb.Synced{Seq: 11})
	if m := c.next().(Message); m.Seq != 11 {
		t.Fatalf("first message delivered has seq %d, want 11", m.Seq)
	}
	waitFor[Synced](c)
	if n := ackUntil(t, fc, 11); n != 1 {
		t.Errorf("%d acks, want 1 covering the dropped entries too", n)
	}
}

// TestServerCursorBehindIsAdopted checks [S-8-7]: LoginOk.cursor is the
// cursor even when it is below the client's (the client's state is from an
// earlier life of the account), so the entries above it are not dropped.
func TestServerCursorBehindIsAdopted(t *testing.T) {
	srv := newFakeServer(t, false)
	st := storeAt(t, 10)
	c := startClient(t, testConfig(srv), st)
	fc := srv.accept(t)
	if login := fc.login(16, 30, 4); login.Cursor != 10 {
		t.Fatalf("Login cursor %d, want 10", login.Cursor)
	}
	waitFor[Connected](c)
	fc.write(message(5, 5, 5, "five"))
	fc.writeProto(protocol.KindSynced, &pb.Synced{Seq: 5})
	if m := waitFor[Message](c); m.Seq != 5 {
		t.Fatalf("delivered seq %d, want 5", m.Seq)
	}
	if a := fc.expectAck(); a != 5 {
		t.Fatalf("ack %d, want 5", a)
	}
	if got := cursorOf(t, st); got != 5 {
		t.Errorf("stored cursor %d, want 5", got)
	}
}

func TestServerCursorAheadIsAdopted(t *testing.T) {
	srv := newFakeServer(t, false)
	st := storeAt(t, 3)
	c := startClient(t, testConfig(srv), st)
	fc := srv.accept(t)
	fc.login(16, 30, 20)
	waitFor[Connected](c)
	fc.write(message(20, 1, 5, "old")) // at the server's cursor: dropped
	fc.write(message(21, 2, 5, "new"))
	if m := waitFor[Message](c); m.Seq != 21 {
		t.Fatalf("delivered seq %d, want 21", m.Seq)
	}
	_ = fc.c.Close()
	fc = srv.accept(t)
	if login := fc.login(16, 30, 21); login.Cursor != 21 {
		t.Errorf("Login cursor %d, want 21", login.Cursor)
	}
}

// TestNewDeviceStartsAtServerCursorQuietly: a device with no cursor yet
// (a companion just linked, [S-9-13]) takes the server's without a
// warning; a device whose own cursor the server has passed is warned
// about.
func TestNewDeviceStartsAtServerCursorQuietly(t *testing.T) {
	for _, tt := range []struct {
		local uint64
		warn  bool
	}{{0, false}, {3, true}} {
		srv := newFakeServer(t, false)
		var logs syncLog
		cfg := testConfig(srv)
		cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
		c := startClient(t, cfg, storeAt(t, tt.local))
		fc := srv.accept(t)
		fc.login(16, 30, 20)
		if conn := waitFor[Connected](c); conn.Cursor != 20 {
			t.Fatalf("cursor %d, want 20", conn.Cursor)
		}
		if got := strings.Contains(logs.String(), "cursor ahead"); got != tt.warn {
			t.Errorf("local cursor %d: warning logged %v, want %v:\n%s", tt.local, got, tt.warn, logs.String())
		}
	}
}

// syncLog is a log destination tests read while the client writes.
type syncLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestAcksCumulativeAndCoalesced plays a server that never has more than
// window entries unacknowledged: the stream completes only if the client
// acks before the window fills, and with far fewer acks than entries.
func TestAcksCumulativeAndCoalesced(t *testing.T) {
	const window, total = 8, 200
	srv := newFakeServer(t, false)
	cfg := testConfig(srv)
	cfg.AckDelay = time.Hour // only the window rule and Synced may trigger acks
	c := startClient(t, cfg, nil)
	fc := srv.accept(t)
	fc.login(window, 30, 0)

	got := make(chan uint64, total)
	go func() {
		for i := 0; i < total; i++ {
			select {
			case ev := <-c.Events():
				if m, ok := ev.(Message); ok {
					got <- m.Seq
				} else {
					i--
				}
			case <-time.After(waitLong):
				close(got)
				return
			}
		}
	}()

	var sent, acked uint64
	acks := 0
	for sent < total {
		for sent < total && sent-acked < window {
			sent++
			fc.write(message(sent, msgID(sent, 0), 5, "x"))
		}
		if sent == total {
			break // not window-limited: Synced below ends the backlog
		}
		a := fc.expectAck()
		if a <= acked || a > sent {
			t.Fatalf("ack %d after ack %d with %d sent", a, acked, sent)
		}
		acked = a
		acks++
	}
	fc.writeProto(protocol.KindSynced, &pb.Synced{Seq: total})
	for acked < total {
		a := fc.expectAck()
		if a <= acked {
			t.Fatalf("ack %d after ack %d", a, acked)
		}
		acked = a
		acks++
	}
	for want := uint64(1); want <= total; want++ {
		if seq := <-got; seq != want {
			t.Fatalf("delivered seq %d, want %d", seq, want)
		}
	}
	// An Ack goes out once it covers a quarter of the window (2 entries
	// here), so about total/2; well under one per entry is coalescing.
	if acks > total*3/4 {
		t.Errorf("%d acks for %d entries: not coalesced", acks, total)
	}
	t.Logf("%d entries, window %d: %d acks", total, window, acks)
}

func TestAckDelayCoalescesLiveEntries(t *testing.T) {
	srv := newFakeServer(t, false)
	cfg := testConfig(srv)
	cfg.AckDelay = 30 * time.Millisecond
	c := startClient(t, cfg, nil)
	fc := srv.accept(t)
	fc.login(64, 30, 0)
	waitFor[Connected](c)
	for seq := uint64(1); seq <= 3; seq++ {
		fc.write(message(seq, seq, 5, "x"))
	}
	for range 3 {
		waitFor[Message](c)
	}
	if n := ackUntil(t, fc, 3); n > 2 {
		t.Errorf("%d acks for 3 entries delivered at once", n)
	}
}

func TestCompressedBatch(t *testing.T) {
	const n = 50
	srv := newFakeServer(t, false)
	cfg := testConfig(srv)
	cfg.AckDelay = time.Hour
	c := startClient(t, cfg, nil)
	fc := srv.accept(t)
	fc.login(256, 30, 0)
	waitFor[Connected](c)

	var body []byte
	for seq := uint64(1); seq <= n; seq++ {
		if seq%10 == 0 {
			body = append(body, receipt(seq, 5, pb.ReceiptType_RECEIPT_DELIVERED, seq)...)
			continue
		}
		body = append(body, message(seq, msgID(seq, 0), 5, "the same words, again and again")...)
	}
	comp, err := codec.NewCompressor()
	if err != nil {
		t.Fatal(err)
	}
	defer comp.Close()
	frame, _ := comp.AppendFrame(nil, nil, protocol.KindBatch, body)
	if frame[codec.HeaderLen(len(frame))-1]&protocol.FlagCompressed == 0 {
		t.Fatal("test batch was not compressed")
	}
	fc.write(frame)

	for seq := uint64(1); seq <= n; seq++ {
		switch ev := c.next().(type) {
		case Message:
			if ev.Seq != seq || string(ev.Body) != "the same words, again and again" {
				t.Fatalf("event %d: %+v", seq, ev)
			}
		case Receipt:
			if ev.Seq != seq || seq%10 != 0 {
				t.Fatalf("event %d: %+v", seq, ev)
			}
		default:
			t.Fatalf("event %d: %T", seq, ev)
		}
	}
	if a := fc.expectAck(); a != n {
		t.Fatalf("first ack %d, want one ack for the whole batch (%d)", a, n)
	}
}

func TestManualAck(t *testing.T) {
	srv := newFakeServer(t, false)
	cfg := testConfig(srv)
	cfg.ManualAck = true
	cfg.AckDelay = time.Millisecond
	clock := newManualClock()
	cfg.Clock = clock
	st := NewMemoryStore()
	c := startClient(t, cfg, st)
	fc := srv.accept(t)
	fc.login(64, 30, 0)
	waitFor[Connected](c)
	for seq := uint64(1); seq <= 3; seq++ {
		fc.write(message(seq, seq, 5, "x"))
	}
	fc.writeProto(protocol.KindSynced, &pb.Synced{Seq: 3})
	for range 3 {
		waitFor[Message](c)
	}
	// An automatic ack would have left when Synced came, which flushes
	// acks at once; the delayed one waits for the clock, which stands.
	waitFor[Synced](c)
	c.Ack(2)
	clock.Advance(cfg.AckDelay + time.Millisecond)
	if a := fc.expectAck(); a != 2 {
		t.Fatalf("first ack %d, want 2 (only what the application acked)", a)
	}
	c.Ack(100) // clamped to what was delivered
	if a := fc.expectAck(); a != 3 {
		t.Fatalf("ack %d, want 3", a)
	}
	if got := cursorOf(t, st); got != 3 {
		t.Errorf("stored cursor %d, want 3", got)
	}
}

func TestGoAwayHonoured(t *testing.T) {
	srv := newFakeServer(t, false)
	cfg := testConfig(srv)
	cfg.Rand = func() float64 { return 0.5 }
	c := startClient(t, cfg, nil)
	fc := srv.accept(t)
	fc.login(16, 30, 0)
	waitFor[Connected](c)
	fc.writeProto(protocol.KindGoAway, &pb.GoAway{Code: protocol.CodeShuttingDown, ReconnectAfterMs: 50})
	// Frames after GoAway are processed ([S-6-10]) until the server closes.
	fc.write(message(1, 1, 5, "last words"))
	if m := waitFor[Message](c); m.Seq != 1 {
		t.Fatalf("message after GoAway: %+v", m)
	}
	if a := fc.expectAck(); a != 1 {
		t.Fatalf("ack %d after GoAway, want 1", a)
	}
	start := time.Now() // before the client can see the close, which starts its wait
	_ = fc.c.Close()
	ev := waitFor[Disconnected](c)
	if CodeOf(ev.Err) != protocol.CodeShuttingDown {
		t.Errorf("Disconnected.Err = %v, want SHUTTING_DOWN", ev.Err)
	}
	// 50 ms plus Rand (0.5) times BackoffMin (1 ms).
	if want := 50*time.Millisecond + 500*time.Microsecond; ev.RetryIn != want {
		t.Errorf("RetryIn = %v, want %v", ev.RetryIn, want)
	}
	fc = srv.accept(t)
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Errorf("reconnected after %v, before the 50ms GoAway asked for", d)
	}
	fc.login(16, 30, 0)
	waitFor[Connected](c)
}

func TestFatalCodesStopReconnecting(t *testing.T) {
	for _, tt := range []struct {
		code   protocol.Code
		goAway bool
	}{
		{protocol.CodeAuthFailed, false},
		{protocol.CodeDeviceRevoked, false},
		{protocol.CodeUnsupportedVersion, false},
		{protocol.CodeSessionReplaced, false},
		{protocol.CodeSessionReplaced, true},
	} {
		t.Run(tt.code.String(), func(t *testing.T) {
			srv := newFakeServer(t, false)
			cfg := testConfig(srv)
			dials := 0
			dial := cfg.Dial
			if dial == nil {
				st, _ := cfg.resolve()
				dial = st.Dial
			}
			cfg.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
				dials++ // only Run's goroutine dials
				return dial(ctx, network, addr)
			}
			c := startClient(t, cfg, nil)
			sendErr := make(chan error, 1)
			go func() {
				_, err := c.Send(context.Background(), 9, []byte("hi"), pb.ContentType_CONTENT_TEXT)
				sendErr <- err
			}()
			fc := srv.accept(t)
			fc.expect(protocol.KindLogin)
			if tt.goAway {
				fc.writeProto(protocol.KindGoAway, &pb.GoAway{Code: tt.code})
			} else {
				fc.writeProto(protocol.KindError, &pb.Error{Code: tt.code, Message: "no"})
			}
			_ = fc.c.Close()
			err := c.runErr()
			if CodeOf(err) != tt.code {
				t.Fatalf("Run = %v, want code %v", err, tt.code)
			}
			if ev := waitFor[Fatal](c); CodeOf(ev.Err) != tt.code {
				t.Errorf("Fatal = %v", ev.Err)
			}
			if _, ok := <-c.Events(); ok {
				t.Error("events not closed after Fatal")
			}
			if err := <-sendErr; CodeOf(err) != tt.code {
				t.Errorf("pending Send = %v, want the fatal error", err)
			}
			if dials != 1 {
				t.Errorf("%d dials, want 1", dials)
			}
			if _, err := c.Send(context.Background(), 9, []byte("hi"), 0); CodeOf(err) != tt.code {
				t.Errorf("Send after stop = %v", err)
			}
		})
	}
}

func TestConnectionErrorReconnects(t *testing.T) {
	srv := newFakeServer(t, false)
	c := startClient(t, testConfig(srv), nil)
	fc := srv.accept(t)
	fc.login(16, 30, 0)
	waitFor[Connected](c)
	fc.writeProto(protocol.KindError, &pb.Error{Code: protocol.CodeSlowConsumer})
	ev := waitFor[Disconnected](c)
	if CodeOf(ev.Err) != protocol.CodeSlowConsumer {
		t.Errorf("Disconnected.Err = %v", ev.Err)
	}
	srv.accept(t).login(16, 30, 0)
	waitFor[Connected](c)
}

func TestFrameBeforeLoginOKIsProtocolViolation(t *testing.T) {
	srv := newFakeServer(t, false)
	c := startClient(t, testConfig(srv), nil)
	fc := srv.accept(t)
	fc.expect(protocol.KindLogin)
	fc.write(message(1, 1, 5, "too early"))
	if ev := waitFor[Disconnected](c); !errors.Is(ev.Err, ErrProtocol) {
		t.Errorf("Disconnected.Err = %v, want ErrProtocol", ev.Err)
	}
	srv.accept(t)
}

// TestDeadConnectionDetected drives the heartbeat with a manual clock: the
// client pings after three quarters of the heartbeat, and drops the
// connection when half a heartbeat passes with no answer.
func TestDeadConnectionDetected(t *testing.T) {
	srv := newFakeServer(t, false)
	clock := newManualClock()
	cfg := testConfig(srv)
	cfg.Clock = clock
	c := startClient(t, cfg, nil)
	fc := srv.accept(t)
	fc.autoPong.Store(false)
	fc.login(16, 4, 0) // heartbeat 4s: ping after 3s idle, dead 2s later
	waitFor[Connected](c)

	clock.Advance(2 * time.Second)
	clock.Advance(time.Second)
	fc.expect(protocol.KindPing)
	clock.Advance(2 * time.Second)
	ev := waitFor[Disconnected](c)
	if !errors.Is(ev.Err, ErrDeadConnection) {
		t.Fatalf("Disconnected.Err = %v, want ErrDeadConnection", ev.Err)
	}
	fc.expectClosed()
	for { // the backoff runs on the manual clock too
		select {
		case fc = <-srv.conns:
			fc.t = t
			fc.login(16, 4, 0)
			waitFor[Connected](c)
			return
		case <-time.After(5 * time.Millisecond):
			clock.Advance(cfg.BackoffMin)
		}
	}
}

// TestPongKeepsConnectionAlive: each Pong ends the Ping it answers, so
// the next one goes out (one Ping is outstanding at a time) and the
// connection stays up. The pong timeout is far beyond the test: on a
// loaded machine a round trip may take longer than any short one.
func TestPongKeepsConnectionAlive(t *testing.T) {
	srv := newFakeServer(t, false)
	cfg := testConfig(srv)
	cfg.PingInterval = 5 * time.Millisecond
	cfg.PongTimeout = time.Minute
	c := startClient(t, cfg, nil)
	fc := srv.accept(t)
	fc.login(16, 30, 0)
	waitFor[Connected](c)
	deadline := time.Now().Add(waitLong)
	for fc.pings.Load() < 5 {
		if time.Now().After(deadline) {
			t.Fatalf("%d pings", fc.pings.Load())
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case ev := <-c.Events():
		t.Fatalf("unexpected event %#v while pongs arrive", ev)
	default:
	}
}

// TestStopFlushesAck: a client that stops writes the Ack it was holding
// back, so the server does not deliver those entries again.
func TestStopFlushesAck(t *testing.T) {
	srv := newFakeServer(t, false)
	cfg := testConfig(srv)
	cfg.AckDelay = time.Hour
	st := NewMemoryStore()
	c := startClient(t, cfg, st)
	fc := srv.accept(t)
	fc.login(64, 30, 0)
	fc.write(message(1, 1, 5, "seen just before quitting"))
	waitFor[Message](c)
	waitUntil(t, func() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.processed == 1 })
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	got := fc.expectClosed()
	if len(got) != 1 || got[0].Kind != protocol.KindAck {
		t.Fatalf("frames before close: %v, want one Ack", got)
	}
	if seq, _ := codec.ParseAck(got[0].Body); seq != 1 {
		t.Errorf("ack %d, want 1", seq)
	}
	if cursorOf(t, st) != 1 {
		t.Errorf("stored cursor %d, want 1", cursorOf(t, st))
	}
}

// TestEntrySeq: the seq of an entry of a kind the client has no event
// for is read from field 1 wherever it is, so the entry can be
// acknowledged.
func TestEntrySeq(t *testing.T) {
	body, err := proto.Marshal(&pb.GroupEvent{Seq: 77, Id: 5, Group: 9, Name: "x"})
	if err != nil {
		t.Fatal(err)
	}
	// Another field first, and one of a type version 1 has not got.
	body = append(protowire.AppendVarint(protowire.AppendTag(nil, 9, protowire.BytesType), 0), body...)
	body = append(protowire.AppendFixed32(protowire.AppendTag(nil, 20, protowire.Fixed32Type), 1), body...)
	if got := entrySeq(body); got != 77 {
		t.Errorf("entrySeq = %d, want 77", got)
	}
	if got := entrySeq([]byte{0x08}); got != 0 {
		t.Errorf("entrySeq of a cut body = %d, want 0", got)
	}
}

// TestFutureEntryKindsAcknowledged is [S-12-6]: an entry of a kind this
// client does not know, in the reserved range, is acknowledged, so the
// stream does not stall on it; an unknown kind outside it is ignored.
func TestFutureEntryKindsAcknowledged(t *testing.T) {
	srv := newFakeServer(t, false)
	cfg := testConfig(srv)
	cfg.AckDelay = time.Millisecond
	c := startClient(t, cfg, nil)
	fc := srv.accept(t)
	fc.login(8, 30, 0)
	if ev := <-c.Events(); ev == nil {
		t.Fatal("no Connected event")
	}
	fc.write(codec.AppendFrame(nil, 100, []byte{0x08, 0x09}))                                  // unknown, not an entry
	fc.write(codec.AppendEntry(nil, protocol.FirstReservedEntryKind+3, 1, []byte{0x12, 0x00})) // a future entry, seq 1
	if a := fc.expectAck(); a != 1 {
		t.Fatalf("ack %d, want 1 (the future entry)", a)
	}
	fc.write(message(2, msgID(2, 0), 5, "after it"))
	select {
	case ev := <-c.Events():
		if m, ok := ev.(Message); !ok || m.Seq != 2 {
			t.Fatalf("event %#v, want the message at seq 2", ev)
		}
	case <-time.After(waitLong):
		t.Fatal("no message event")
	}
	if a := fc.expectAck(); a != 2 {
		t.Fatalf("ack %d, want 2", a)
	}
}

// ackDueIn waits until the client's pending Ack is due in want from the
// clock's now (the Ack is armed when the application has taken the
// entries), failing after waitLong.
func ackDueIn(t *testing.T, c *testClient, clock *manualClock, want time.Duration) {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	var got time.Duration
	for time.Now().Before(deadline) {
		c.mu.Lock()
		if s := c.sess; s != nil && !s.ackDue.IsZero() {
			got = s.ackDue.Sub(clock.Now())
		}
		c.mu.Unlock()
		if got == want {
			return
		}
		runtime.Gosched()
	}
	t.Fatalf("Ack due in %v, want %v", got, want)
}

// TestLazyAck: an Ack that would newly cover no one-to-one Message from
// another user (receipts, group messages, copies of the user's own sends)
// waits LazyAckDelay; a one-to-one Message it covers brings it forward to
// AckDelay ([S-8-5]).
func TestLazyAck(t *testing.T) {
	srv := newFakeServer(t, false)
	cfg := testConfig(srv)
	cfg.AckDelay = 50 * time.Millisecond
	cfg.LazyAckDelay = 2 * time.Second
	clock := newManualClock()
	cfg.Clock = clock
	c := startClient(t, cfg, nil)
	fc := srv.accept(t)
	fc.login(64, 30, 0)
	waitFor[Connected](c)

	groupMsg := func(seq, gseq uint64, body []byte) []byte {
		return codec.AppendEntry(nil, protocol.KindMessage, seq,
			codec.AppendMessageEntry(nil, codec.Message{ID: msgID(seq, 0), From: 5, FromDevice: 1, Group: 77, GSeq: gseq, Body: body}))
	}
	// take waits until the application has taken the entry seq, and
	// checks when the Ack is due; with ack set, moves the clock there and
	// expects the Ack to cover the entry.
	take := func(seq uint64, due time.Duration, ack bool) {
		t.Helper()
		for taken := false; !taken; {
			switch c.next().(type) {
			case Message, Receipt:
				taken = true
			}
		}
		ackDueIn(t, c, clock, due)
		if ack {
			clock.Advance(due)
			if a := fc.expectAck(); a != seq {
				t.Fatalf("ack %d, want %d", a, seq)
			}
		}
	}
	// deliver writes an entry and takes it.
	deliver := func(seq uint64, entry []byte, due time.Duration, ack bool) {
		t.Helper()
		fc.write(entry)
		take(seq, due, ack)
	}
	deliver(1, receipt(1, 5, pb.ReceiptType_RECEIPT_DELIVERED, 7), cfg.LazyAckDelay, false)
	deliver(2, groupMsg(2, 1, []byte("g")), cfg.LazyAckDelay, false) // a group's sender does not wait on one member
	deliver(3, message(3, msgID(3, 0), testCreds.User, "my own, from my other device"), cfg.LazyAckDelay, false)
	deliver(4, message(4, msgID(4, 0), 5, "x"), cfg.AckDelay, true)
	deliver(5, receipt(5, 5, pb.ReceiptType_RECEIPT_READ, 7), cfg.LazyAckDelay, true)
	// A large group message may not wait: held acks must not reach the
	// server's byte bound.
	deliver(6, receipt(6, 5, pb.ReceiptType_RECEIPT_READ, 8), cfg.LazyAckDelay, false)
	deliver(7, groupMsg(7, 2, bytes.Repeat([]byte("g"), protocol.LazyAckMaxBody)), cfg.AckDelay, true)
	// A one-to-one message received but not yet processed does not hurry
	// the Ack of what came before it, which would not cover it; once
	// processed, it does (one Ack for both).
	fc.write(append(groupMsg(8, 3, []byte("g")), message(9, msgID(9, 0), 5, "y")...))
	received(t, c, 9)
	take(8, cfg.LazyAckDelay, false)
	take(9, cfg.AckDelay, true)
	// Of two received, the first processed hurries the Ack that covers it.
	fc.write(append(message(10, msgID(10, 0), 5, "z"), message(11, msgID(11, 0), 5, "w")...))
	received(t, c, 11)
	take(10, cfg.AckDelay, true)
	take(11, cfg.AckDelay, true)
}

// received waits until the client's connection has received the entry
// seq (which the application may not have taken yet).
func received(t *testing.T, c *testClient, seq uint64) {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		got := c.sess != nil && c.sess.recvHigh >= seq
		c.mu.Unlock()
		if got {
			return
		}
		runtime.Gosched()
	}
	t.Fatalf("entry %d not received", seq)
}
