package client

import (
	"bytes"
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// expectSend reads the next frame, which must be a Send.
func expectSend(t *testing.T, fc *fakeConn) codec.Send {
	t.Helper()
	f := fc.expect(protocol.KindSend)
	s, err := codec.ParseSend(f.Body)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// sendResult is the outcome of a Send run in the background.
type sendOutcome struct {
	sent Sent
	err  error
}

func sendAsyncTest(c *testClient, ctx context.Context, to uint64, body string) <-chan sendOutcome {
	ch := make(chan sendOutcome, 1)
	go func() {
		s, err := c.Send(ctx, to, []byte(body), pb.ContentType_CONTENT_TEXT)
		ch <- sendOutcome{s, err}
	}()
	return ch
}

func outcome(t *testing.T, ch <-chan sendOutcome) sendOutcome {
	t.Helper()
	select {
	case o := <-ch:
		return o
	case <-time.After(waitLong):
		t.Fatal("Send did not return")
	}
	return sendOutcome{}
}

func outboxOf(t *testing.T, st Store) []Outgoing {
	t.Helper()
	s, err := st.Load()
	if err != nil {
		t.Fatal(err)
	}
	return s.Outbox
}

// TestSendResentWithSameCMID checks [S-8-14]: a SEND left unanswered when
// the connection drops is resent identically, pipelined right behind
// Login ([S-6-3]), and its outcome is reported once.
func TestSendResentWithSameCMID(t *testing.T) {
	srv := newFakeServer(t, false)
	st := NewMemoryStore()
	c := startClient(t, testConfig(srv), st)
	fc := srv.accept(t)
	fc.login(16, 30, 0)
	waitFor[Connected](c)

	res := sendAsyncTest(c, context.Background(), 77, "see you at eight")
	first := expectSend(t, fc)
	if first.To != 77 || first.CMID != 1 || string(first.Body) != "see you at eight" || first.Type != pb.ContentType_CONTENT_TEXT {
		t.Fatalf("Send = %+v", first)
	}
	// The protocol budget: at most 16 bytes beyond the text ([DESIGN]).
	if n := codec.HeaderLen(len(first.Body)+6) + 6; n > 16 {
		t.Errorf("send overhead %d bytes, want ≤ 16", n)
	}
	if out := outboxOf(t, st); len(out) != 1 || out[0].CMID != 1 {
		t.Fatalf("outbox before SENT: %+v", out)
	}
	_ = fc.c.Close() // dropped before SENT

	fc = srv.accept(t)
	fc.expect(protocol.KindLogin)
	again := expectSend(t, fc) // before LoginOk: pipelined
	if again.To != first.To || again.CMID != first.CMID || !bytes.Equal(again.Body, first.Body) || again.Type != first.Type {
		t.Fatalf("resent %+v, want %+v", again, first)
	}
	fc.writeProto(protocol.KindLoginOK, &pb.LoginOk{HeartbeatS: 30, Window: 16})
	id := msgID(5000, 9)
	fc.write(codec.AppendSent(nil, 1, id))
	fc.write(codec.AppendSent(nil, 1, id)) // a duplicate answer is ignored

	o := outcome(t, res)
	if o.err != nil || o.sent.CMID != 1 || o.sent.ID != id || !o.sent.Time.Equal(protocol.MessageTime(id)) {
		t.Fatalf("Send = %+v, %v", o.sent, o.err)
	}
	if out := outboxOf(t, st); len(out) != 0 {
		t.Errorf("outbox after SENT: %+v", out)
	}
	// Nothing else reports the send: no SendDone before the marker entry.
	fc.write(message(1, 1, 5, "marker"))
	for {
		switch ev := c.next().(type) {
		case SendDone:
			t.Fatalf("outcome reported twice: %+v", ev)
		case Message:
			return
		}
	}
}

func TestSendRestoredFromStore(t *testing.T) {
	srv := newFakeServer(t, false)
	st := storeAt(t, 0)
	if err := st.AddOutgoing(Outgoing{CMID: 5, To: 9, Body: []byte("from before the crash")}); err != nil {
		t.Fatal(err)
	}
	c := startClient(t, testConfig(srv), st)
	fc := srv.accept(t)
	fc.expect(protocol.KindLogin)
	s := expectSend(t, fc)
	if s.CMID != 5 || s.To != 9 || string(s.Body) != "from before the crash" {
		t.Fatalf("restored send = %+v", s)
	}
	fc.writeProto(protocol.KindLoginOK, &pb.LoginOk{HeartbeatS: 30, Window: 16})
	fc.write(codec.AppendSent(nil, 5, 1234))
	done := waitFor[SendDone](c)
	if done.CMID != 5 || done.ID != 1234 || done.To != 9 || done.Err != nil {
		t.Errorf("SendDone = %+v", done)
	}
	// The counter continues above the stored cmid.
	res := sendAsyncTest(c, context.Background(), 9, "new")
	if s := expectSend(t, fc); s.CMID != 6 {
		t.Errorf("next cmid %d, want 6", s.CMID)
	}
	fc.write(codec.AppendSent(nil, 6, 1235))
	if o := outcome(t, res); o.err != nil {
		t.Fatal(o.err)
	}
}

// TestSendFinalError checks [S-8-14]: NOT_FOUND ends the send for good.
func TestSendFinalError(t *testing.T) {
	srv := newFakeServer(t, false)
	st := NewMemoryStore()
	c := startClient(t, testConfig(srv), st)
	fc := srv.accept(t)
	fc.login(16, 30, 0)
	res := sendAsyncTest(c, context.Background(), 404, "anyone there?")
	s := expectSend(t, fc)
	fc.write(codec.AppendError(nil, protocol.CodeNotFound, 0, s.CMID, "no such user", 0))
	o := outcome(t, res)
	var se *ServerError
	if !errors.As(o.err, &se) || se.Code != protocol.CodeNotFound || se.Message != "no such user" {
		t.Fatalf("Send error = %v, want NOT_FOUND", o.err)
	}
	if out := outboxOf(t, st); len(out) != 0 {
		t.Errorf("outbox after final error: %+v", out)
	}
}

// TestSendRetriedAfterOverloaded checks [S-8-14] and [S-11-1]: OVERLOADED
// is retried with the same cmid, not before retry_after_ms.
func TestSendRetriedAfterOverloaded(t *testing.T) {
	for _, code := range []protocol.Code{protocol.CodeOverloaded, protocol.CodeInternal, protocol.CodeRateLimited, 1000 /* unknown: as INTERNAL */} {
		t.Run(code.String(), func(t *testing.T) {
			srv := newFakeServer(t, false)
			cfg := testConfig(srv)
			retries := make(chan Retry, 4)
			cfg.OnRetry = func(r Retry) { retries <- r }
			c := startClient(t, cfg, nil)
			fc := srv.accept(t)
			fc.login(16, 30, 0)
			res := sendAsyncTest(c, context.Background(), 9, "retry me")
			s := expectSend(t, fc)
			start := time.Now() // before the client can have the Error: a bound it cannot beat
			fc.write(codec.AppendError(nil, code, 0, s.CMID, "", 30))
			again := expectSend(t, fc)
			if d := time.Since(start); d < 30*time.Millisecond {
				t.Errorf("retried after %v, before retry_after_ms", d)
			}
			if again.CMID != s.CMID || !bytes.Equal(again.Body, s.Body) {
				t.Fatalf("retry %+v, want %+v", again, s)
			}
			select { // told of the retry (once the lock is released: maybe after it was written)
			case r := <-retries:
				if r.CMID != s.CMID || r.Request != 0 || r.Err == nil || r.Err.Code != code || r.In < 30*time.Millisecond {
					t.Errorf("OnRetry got %+v, want cmid %d, code %v, in at least 30ms", r, s.CMID, code)
				}
			case <-time.After(waitLong):
				t.Error("OnRetry not called")
			}
			fc.write(codec.AppendSent(nil, s.CMID, 99))
			if o := outcome(t, res); o.err != nil || o.sent.ID != 99 {
				t.Fatalf("Send = %+v, %v", o.sent, o.err)
			}
		})
	}
}

// TestOnRetryOutsideTheLock: OnRetry is called without the client's
// lock, so it may call the Client (here Ack, which takes the lock), and
// in the order the refusals arrived: two sends refused in one write are
// told of in that order.
func TestOnRetryOutsideTheLock(t *testing.T) {
	srv := newFakeServer(t, false)
	cfg := testConfig(srv)
	retries := make(chan Retry, 4)
	var client atomic.Pointer[testClient]
	cfg.OnRetry = func(r Retry) {
		called := make(chan struct{})
		go func() { client.Load().Ack(0); close(called) }()
		select {
		case <-called:
		case <-time.After(waitLong):
			t.Error("Ack called from OnRetry did not return: OnRetry is called with the client's lock held")
		}
		retries <- r
	}
	c := startClient(t, cfg, nil)
	client.Store(c)
	fc := srv.accept(t)
	fc.login(16, 30, 0)
	res := []<-chan sendOutcome{sendAsyncTest(c, context.Background(), 9, "a"), sendAsyncTest(c, context.Background(), 10, "b")}
	s1, s2 := expectSend(t, fc), expectSend(t, fc)
	fc.write(append(codec.AppendError(nil, protocol.CodeOverloaded, 0, s1.CMID, "", 10),
		codec.AppendError(nil, protocol.CodeRateLimited, 0, s2.CMID, "", 10)...))
	for i, want := range []codec.Send{s1, s2} {
		select {
		case r := <-retries:
			if r.CMID != want.CMID {
				t.Errorf("OnRetry call %d for cmid %d, want %d (the order of the refusals)", i, r.CMID, want.CMID)
			}
		case <-time.After(waitLong):
			t.Fatalf("OnRetry call %d not made", i)
		}
	}
	for range 2 {
		fc.write(codec.AppendSent(nil, expectSend(t, fc).CMID, 99))
	}
	for _, ch := range res {
		if o := outcome(t, ch); o.err != nil {
			t.Fatal(o.err)
		}
	}
}

// TestSendGivenUpReportsSendDone: a Send whose context ends still gets its
// answer, as a SendDone event.
func TestSendGivenUpReportsSendDone(t *testing.T) {
	srv := newFakeServer(t, false)
	c := startClient(t, testConfig(srv), nil)
	fc := srv.accept(t)
	fc.login(16, 30, 0)
	ctx, cancel := context.WithCancel(context.Background())
	res := sendAsyncTest(c, ctx, 9, "slow")
	s := expectSend(t, fc)
	cancel()
	o := outcome(t, res)
	if !errors.Is(o.err, context.Canceled) || o.sent.CMID != s.CMID {
		t.Fatalf("Send = %+v, %v; want the cmid and context.Canceled", o.sent, o.err)
	}
	fc.write(codec.AppendSent(nil, s.CMID, 4242))
	if done := waitFor[SendDone](c); done.CMID != s.CMID || done.ID != 4242 || done.Err != nil {
		t.Errorf("SendDone = %+v", done)
	}
}

func TestSendAsyncCallback(t *testing.T) {
	srv := newFakeServer(t, false)
	c := startClient(t, testConfig(srv), nil)
	fc := srv.accept(t)
	fc.login(16, 30, 0)
	waitFor[Connected](c) // callbacks are delivered in order with events
	got := make(chan Sent, 1)
	cmid, err := c.SendAsync(9, []byte("x"), pb.ContentType_CONTENT_IMAGE, func(s Sent, err error) {
		if err != nil {
			t.Error(err)
		}
		got <- s
	})
	if err != nil {
		t.Fatal(err)
	}
	s := expectSend(t, fc)
	if s.CMID != cmid || s.Type != pb.ContentType_CONTENT_IMAGE {
		t.Fatalf("Send = %+v, cmid %d", s, cmid)
	}
	fc.write(codec.AppendSent(nil, cmid, 7))
	select {
	case s := <-got:
		if s.ID != 7 {
			t.Errorf("callback got %+v", s)
		}
	case <-time.After(waitLong):
		t.Fatal("callback not called")
	}
}

// TestInFlightBounded checks [S-6-14]: at most MaxInFlight sends are
// unanswered on a connection; the rest follow as answers arrive.
func TestInFlightBounded(t *testing.T) {
	srv := newFakeServer(t, false)
	cfg := testConfig(srv)
	cfg.MaxInFlight = 3
	c := startClient(t, cfg, nil)
	fc := srv.accept(t)
	fc.login(16, 30, 0)
	waitFor[Connected](c)
	for range 5 {
		if _, err := c.SendAsync(9, []byte("m"), 0, nil); err != nil {
			t.Fatal(err)
		}
	}
	var cmids []uint64
	for range 3 {
		cmids = append(cmids, expectSend(t, fc).CMID)
	}
	// A marker written after them: the writer puts due sends before it, so
	// a fourth send would come first.
	if err := c.Typing(9, pb.TypingState_TYPING_STARTED); err != nil {
		t.Fatal(err)
	}
	if f := fc.next(); f.Kind != protocol.KindTyping {
		t.Fatalf("%v frame written with 3 sends unanswered", f.Kind)
	}
	fc.write(codec.AppendSent(nil, cmids[0], 1))
	if s := expectSend(t, fc); s.CMID != 4 {
		t.Errorf("next send cmid %d, want 4 (in order)", s.CMID)
	}
}

// TestPipelineBoundedBeforeLoginOK checks [S-6-14]: little is sent between
// Login and LoginOk, the rest after.
func TestPipelineBoundedBeforeLoginOK(t *testing.T) {
	srv := newFakeServer(t, false)
	st := storeAt(t, 0)
	big := bytes.Repeat([]byte("z"), 40<<10) // three fit in 128 KiB
	for cmid := uint64(1); cmid <= 5; cmid++ {
		if err := st.AddOutgoing(Outgoing{CMID: cmid, To: 9, Body: big}); err != nil {
			t.Fatal(err)
		}
	}
	c := startClient(t, testConfig(srv), st)
	fc := srv.accept(t)
	fc.expect(protocol.KindLogin)
	for range 3 {
		expectSend(t, fc)
	}
	// A small request as a marker: it fits in what is left of the 128 KiB,
	// and the writer puts due sends before it, so a fourth send would
	// come first.
	ctx, cancel := context.WithCancel(context.Background())
	lookup := make(chan error, 1)
	go func() { _, err := c.Lookup(ctx, []string{"+15550001111"}); lookup <- err }()
	if f := fc.next(); f.Kind != protocol.KindLookup {
		t.Fatalf("%v frame beyond 128 KiB before LoginOk", f.Kind)
	}
	fc.writeProto(protocol.KindLoginOK, &pb.LoginOk{HeartbeatS: 30, Window: 16})
	if s := expectSend(t, fc); s.CMID != 4 {
		t.Errorf("cmid %d after LoginOk, want 4", s.CMID)
	}
	expectSend(t, fc)
	cancel()
	<-lookup
	waitFor[Connected](c)
}

func TestSendValidation(t *testing.T) {
	c, err := New(Config{Addr: "127.0.0.1:1"}, testCreds, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, tt := range []struct {
		to   uint64
		body []byte
	}{
		{0, []byte("x")},
		{1, nil},
		{1, make([]byte, protocol.MaxMessageBody+1)},
	} {
		if _, err := c.SendAsync(tt.to, tt.body, 0, nil); !errors.Is(err, ErrInvalid) {
			t.Errorf("SendAsync(%d, %d bytes) = %v, want ErrInvalid", tt.to, len(tt.body), err)
		}
	}
}

func TestOutboxFull(t *testing.T) {
	c, err := New(Config{Addr: "127.0.0.1:1", MaxOutbox: 2}, testCreds, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 3 {
		_, err := c.SendAsync(9, []byte("x"), 0, nil)
		if want := i == 2; errors.Is(err, ErrOutboxFull) != want {
			t.Errorf("send %d: %v", i, err)
		}
	}
}

// TestSendContinuesAboveMaxCMID checks [S-8-19]: a client whose store lost
// its counter (a fresh MemoryStore with old credentials) numbers its sends
// above LoginOk.max_cmid.
func TestSendContinuesAboveMaxCMID(t *testing.T) {
	srv := newFakeServer(t, false)
	st := NewMemoryStore()
	c := startClient(t, testConfig(srv), st)
	fc := srv.accept(t)
	fc.expectProto(protocol.KindLogin, &pb.Login{})
	fc.writeProto(protocol.KindLoginOK, &pb.LoginOk{HeartbeatS: 30, Window: 16, MaxCmid: 41})
	waitFor[Connected](c)
	res := sendAsyncTest(c, context.Background(), 9, "after a lost store")
	if s := expectSend(t, fc); s.CMID != 42 {
		t.Fatalf("first cmid %d, want 42 (above max_cmid 41)", s.CMID)
	}
	fc.write(codec.AppendSent(nil, 42, 77))
	if o := outcome(t, res); o.err != nil || o.sent.CMID != 42 {
		t.Fatalf("Send = %+v, %v", o.sent, o.err)
	}
	if s, _ := st.Load(); s.LastCMID != 42 {
		t.Errorf("stored counter %d, want 42", s.LastCMID)
	}
}

// TestSendRenumberedAfterCMIDReused checks [S-8-20]: a send refused
// CMID_REUSED is sent again under a cmid beyond any the device can have
// used (the time-based floor), stored under it, and answered under it.
func TestSendRenumberedAfterCMIDReused(t *testing.T) {
	srv := newFakeServer(t, false)
	st := NewMemoryStore()
	c := startClient(t, testConfig(srv), st)
	fc := srv.accept(t)
	fc.login(16, 30, 0)
	res := sendAsyncTest(c, context.Background(), 9, "a new message")
	first := expectSend(t, fc)
	fc.write(codec.AppendError(nil, protocol.CodeCMIDReused, 0, first.CMID, "", 0))
	again := expectSend(t, fc)
	floor := uint64(time.Now().UnixMilli()-protocol.MessageIDEpochMS) << 10
	if again.CMID <= floor-1<<20 || again.To != first.To || !bytes.Equal(again.Body, first.Body) {
		t.Fatalf("resent %+v, want the same message with a cmid near %d", again, floor)
	}
	if out := outboxOf(t, st); len(out) != 1 || out[0].CMID != again.CMID {
		t.Fatalf("stored outbox %+v, want only cmid %d", out, again.CMID)
	}
	fc.write(codec.AppendSent(nil, again.CMID, 5))
	if o := outcome(t, res); o.err != nil || o.sent.CMID != again.CMID || o.sent.ID != 5 {
		t.Fatalf("Send = %+v, %v", o.sent, o.err)
	}
	next := sendAsyncTest(c, context.Background(), 9, "and the next")
	if s := expectSend(t, fc); s.CMID != again.CMID+1 {
		t.Fatalf("next cmid %d, want %d", s.CMID, again.CMID+1)
	}
	fc.write(codec.AppendSent(nil, again.CMID+1, 6))
	if o := outcome(t, next); o.err != nil {
		t.Fatal(o.err)
	}
}
