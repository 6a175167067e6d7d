package client

import (
	"context"
	"errors"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// TestBackoffGrowsWithJitter checks [S-6-13]: the delay after the n-th
// consecutive failure is Rand × min(BackoffMax, BackoffMin·2^n), the client
// waits exactly that long on its clock, and a connection that stays logged
// in for BackoffMax resets the growth.
func TestBackoffGrowsWithJitter(t *testing.T) {
	srv := newFakeServer(t, false)
	clock := newManualClock()
	rands := []float64{0.5, 0.25, 0.75, 0.5, 0.5, 0.9, 0.1}
	var calls atomic.Int32
	var dials atomic.Int32
	cfg := testConfig(srv)
	cfg.BackoffMin, cfg.BackoffMax = time.Second, 8*time.Second
	cfg.Clock = clock
	cfg.Rand = func() float64 { return rands[int(calls.Add(1)-1)%len(rands)] }
	cfg.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if dials.Add(1) <= 6 {
			return nil, errors.New("network unreachable")
		}
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	c := startClient(t, cfg, nil)

	want := []time.Duration{ // rand × min(8s, 1s·2^n)
		500 * time.Millisecond, 500 * time.Millisecond, 3 * time.Second,
		4 * time.Second, 4 * time.Second, 7200 * time.Millisecond,
	}
	for i, w := range want {
		ev := waitFor[Disconnected](c)
		if ev.RetryIn != w || !strings.Contains(ev.Err.Error(), "network unreachable") {
			t.Fatalf("failure %d: Disconnected = %v, %v; want RetryIn %v", i, ev.RetryIn, ev.Err, w)
		}
		// The client sleeps on its clock; the next attempt waits for it.
		waitUntil(t, func() bool { return len(clockWaits(clock)) > i })
		if got := clockWaits(clock)[i]; got != w {
			t.Fatalf("failure %d: slept %v, want %v", i, got, w)
		}
		clock.Advance(w)
	}

	// The seventh dial succeeds; a connection logged in for BackoffMax
	// resets the backoff.
	fc := srv.accept(t)
	fc.login(16, 3600, 0)
	waitFor[Connected](c)
	clock.Advance(cfg.BackoffMax)
	_ = fc.c.Close()
	ev := waitFor[Disconnected](c)
	if w := time.Duration(0.1 * float64(time.Second)); ev.RetryIn != w {
		t.Errorf("after a stable connection: RetryIn %v, want %v (reset)", ev.RetryIn, w)
	}
}

func clockWaits(c *manualClock) []time.Duration {
	var out []time.Duration
	for _, d := range c.Waits() {
		if d >= time.Second/10 { // backoff sleeps, not the writer's timers
			out = append(out, d)
		}
	}
	return out
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestHeartbeatAsked: Config.Heartbeat goes out in LOGIN ([S-6-8]).
func TestHeartbeatAsked(t *testing.T) {
	srv := newFakeServer(t, false)
	cfg := testConfig(srv)
	cfg.Heartbeat = 5*time.Minute + 500*time.Millisecond
	startClient(t, cfg, nil)
	if m := srv.accept(t).login(16, 300, 0); m.HeartbeatS != 300 {
		t.Fatalf("Login.heartbeat_s = %d, want 300", m.HeartbeatS)
	}
}

func TestLookupAndMarkRead(t *testing.T) {
	srv := newFakeServer(t, false)
	cfg := testConfig(srv)
	retries := make(chan Retry, 4)
	cfg.OnRetry = func(r Retry) { retries <- r }
	c := startClient(t, cfg, nil)
	fc := srv.accept(t)
	fc.login(16, 30, 0)

	type lookupOutcome struct {
		contacts []Contact
		err      error
	}
	lres := make(chan lookupOutcome, 1)
	go func() {
		cs, err := c.Lookup(context.Background(), []string{"+15551234567", "+15557654321"})
		lres <- lookupOutcome{cs, err}
	}()
	var lk pb.Lookup
	fc.expectProto(protocol.KindLookup, &lk)
	if lk.Rid == 0 || len(lk.Phones) != 2 {
		t.Fatalf("Lookup = %v", &lk)
	}
	// The connection drops before the answer: the lookup is asked again.
	_ = fc.c.Close()
	fc = srv.accept(t)
	fc.expect(protocol.KindLogin)
	var lk2 pb.Lookup
	fc.expectProto(protocol.KindLookup, &lk2)
	fc.writeProto(protocol.KindLoginOK, &pb.LoginOk{HeartbeatS: 30, Window: 16})
	fc.writeProto(protocol.KindOK, &pb.Ok{Rid: lk.Rid})                                                                                 // a stale rid: ignored
	fc.writeProto(protocol.KindLookupResult, &pb.LookupResult{Rid: lk2.Rid, Contacts: []*pb.Contact{{Phone: "+15557654321", User: 8}}}) // answered
	o := <-lres
	if o.err != nil || len(o.contacts) != 1 || o.contacts[0] != (Contact{Phone: "+15557654321", User: 8}) {
		t.Fatalf("Lookup = %+v, %v", o.contacts, o.err)
	}

	rres := make(chan error, 1)
	go func() { rres <- c.MarkRead(context.Background(), 8, 12345) }()
	var rd pb.Read
	fc.expectProto(protocol.KindRead, &rd)
	if rd.Peer != 8 || rd.UpTo != 12345 || rd.Rid == 0 || rd.Rid == lk2.Rid {
		t.Fatalf("Read = %v", &rd)
	}
	fc.write(appendErrorFrame(protocol.CodeOverloaded, rd.Rid, 10))
	var rd2 pb.Read
	fc.expectProto(protocol.KindRead, &rd2) // retried with a new rid
	if rd2.Rid == rd.Rid || rd2.Peer != 8 || rd2.UpTo != 12345 {
		t.Fatalf("retried Read = %v", &rd2)
	}
	select { // told of the retry (once the lock is released: maybe after it was written)
	case r := <-retries:
		if r.Request != protocol.KindRead || r.CMID != 0 || r.Err == nil || r.Err.Code != protocol.CodeOverloaded {
			t.Errorf("OnRetry got %+v, want the Read refused OVERLOADED", r)
		}
	case <-time.After(waitLong):
		t.Error("OnRetry not called")
	}
	fc.writeProto(protocol.KindOK, &pb.Ok{Rid: rd2.Rid})
	if err := <-rres; err != nil {
		t.Fatal(err)
	}

	go func() { rres <- c.MarkRead(context.Background(), 404, 1) }()
	fc.expectProto(protocol.KindRead, &rd)
	fc.write(appendErrorFrame(protocol.CodeNotFound, rd.Rid, 0))
	if err := <-rres; CodeOf(err) != protocol.CodeNotFound {
		t.Fatalf("MarkRead = %v, want NOT_FOUND", err)
	}
}

func appendErrorFrame(code protocol.Code, rid uint32, retryMS uint32) []byte {
	b, _ := appendProtoFrame(protocol.KindError, &pb.Error{Code: code, Rid: rid, RetryAfterMs: retryMS})
	return b
}

func TestRequestValidation(t *testing.T) {
	c, err := New(Config{Addr: "127.0.0.1:1"}, testCreds, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	for _, phones := range [][]string{nil, {"15551234567"}, {"+0551234567"}, {"+1555"}, {"+1555123456789012"}, make([]string, protocol.MaxLookupPhones+1)} {
		if _, err := c.Lookup(ctx, phones); !errors.Is(err, ErrInvalid) {
			t.Errorf("Lookup(%q) = %v, want ErrInvalid", phones, err)
		}
	}
	if err := c.MarkRead(ctx, 0, 1); !errors.Is(err, ErrInvalid) {
		t.Errorf("MarkRead(0, 1) = %v", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	if _, err := c.Lookup(ctx, []string{"+447700900123"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Lookup without a connection = %v, want the context's error", err)
	}
}

func TestCloseWithoutRun(t *testing.T) {
	c, err := New(Config{Addr: "127.0.0.1:1"}, testCreds, nil)
	if err != nil {
		t.Fatal(err)
	}
	res := make(chan error, 1)
	go func() {
		_, err := c.Send(context.Background(), 9, []byte("x"), 0)
		res <- err
	}()
	waitUntil(t, func() bool { c.mu.Lock(); defer c.mu.Unlock(); return len(c.queue) == 1 })
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-res; !errors.Is(err, ErrClosed) {
		t.Errorf("pending Send = %v, want ErrClosed", err)
	}
	if _, ok := <-c.Events(); ok {
		t.Error("events open after Close")
	}
	if _, err := c.SendAsync(9, []byte("x"), 0, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("SendAsync after Close = %v", err)
	}
	if err := c.Run(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Run after Close = %v", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
}

func TestRunTwice(t *testing.T) {
	srv := newFakeServer(t, false)
	c := startClient(t, testConfig(srv), nil)
	srv.accept(t)
	if err := c.Run(context.Background()); !errors.Is(err, ErrRunning) {
		t.Errorf("second Run = %v, want ErrRunning", err)
	}
}

func TestRunStopsWithContext(t *testing.T) {
	srv := newFakeServer(t, false)
	c, err := New(testConfig(srv), testCreds, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 1)
	go func() { res <- c.Run(ctx) }()
	fc := srv.accept(t)
	fc.t = t
	fc.login(16, 30, 0)
	tc := &testClient{Client: c, t: t}
	waitFor[Connected](tc)
	cancel()
	if err := <-res; !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v, want context.Canceled", err)
	}
	fc.expectClosed()
	if _, ok := <-c.Events(); ok {
		t.Error("events open after Run returned")
	}
}

func TestOnEvent(t *testing.T) {
	srv := newFakeServer(t, false)
	var mu sync.Mutex
	var got []Event
	cfg := testConfig(srv)
	cfg.OnEvent = func(ev Event) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, ev)
	}
	c := startClient(t, cfg, nil)
	if c.Events() != nil {
		t.Error("Events() not nil with OnEvent")
	}
	fc := srv.accept(t)
	fc.login(16, 30, 0)
	fc.write(message(1, 1, 5, "hi"))
	if a := fc.expectAck(); a != 1 {
		t.Fatalf("ack %d", a)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 {
		t.Fatalf("events %#v", got)
	}
	if _, ok := got[0].(Connected); !ok {
		t.Errorf("first event %#v", got[0])
	}
	if m, ok := got[1].(Message); !ok || string(m.Body) != "hi" {
		t.Errorf("second event %#v", got[1])
	}
}

func TestNewChecksStore(t *testing.T) {
	cfg := Config{Addr: "127.0.0.1:1"}
	st := NewMemoryStore()
	c, err := New(cfg, testCreds, st)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if s, _ := st.Load(); s.Credentials.User != testCreds.User {
		t.Errorf("credentials not saved: %+v", s.Credentials)
	}
	other := testCreds
	other.Device++
	if _, err := New(cfg, other, st); !errors.Is(err, ErrStoreMismatch) {
		t.Errorf("New with another device = %v, want ErrStoreMismatch", err)
	}
	if _, err := New(cfg, Credentials{User: 1, Secret: []byte("short")}, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("New with a short secret = %v, want ErrInvalid", err)
	}
}

func TestConfigValidateReportsEverything(t *testing.T) {
	_, err := Config{
		Fingerprint:  "xyz",
		RootCAs:      nil,
		Plaintext:    true,
		DialTimeout:  -1,
		BackoffMin:   time.Minute,
		BackoffMax:   time.Second,
		MaxInFlight:  128,
		MaxOutbox:    -1,
		WriteTimeout: -time.Second,
	}.resolve()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"Addr is required", "not 64 hex digits", "Plaintext excludes", "DialTimeout", "WriteTimeout", "MaxInFlight", "MaxOutbox", "BackoffMin 1m0s above BackoffMax"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	st, err := Config{Addr: "example.org:443"}.resolve()
	if err != nil {
		t.Fatal(err)
	}
	if st.BackoffMin != time.Second || st.BackoffMax != time.Minute || st.MaxInFlight != 64 || st.AckDelay != 50*time.Millisecond ||
		st.tls.ServerName != "example.org" || st.tls.MinVersion != 0x0304 || st.tls.SessionTicketsDisabled || st.tls.ClientSessionCache == nil || st.tls.InsecureSkipVerify {
		t.Errorf("defaults: %+v, tls %+v", st.Config, st.tls)
	}
}

func TestRegister(t *testing.T) {
	srv := newFakeServer(t, false)
	cfg := testConfig(srv)
	secret := make([]byte, protocol.CredentialLen)
	secret[0] = 9

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
	var v pb.Verify
	fc.expectProto(protocol.KindVerify, &v)
	if v.Phone != "+447700900123" || v.Code != "492817" || v.DeviceName != "Pixel 9" || v.Rid == 0 {
		t.Fatalf("Verify = %v", &v)
	}
	fc.writeProto(protocol.KindPong, &pb.Pong{}) // not the answer: skipped
	fc.writeProto(protocol.KindRegistered, &pb.Registered{Rid: v.Rid, User: 4101, Device: 1, Credential: secret})
	o := <-res
	if o.err != nil || o.creds.User != 4101 || o.creds.Device != 1 || string(o.creds.Secret) != string(secret) {
		t.Fatalf("Verify = %+v, %v", o.creds, o.err)
	}

	go func() {
		_, err := Verify(context.Background(), cfg, "+447700900123", "000000", "")
		res <- verifyOutcome{err: err}
	}()
	fc = srv.accept(t)
	fc.expectProto(protocol.KindVerify, &v)
	fc.writeProto(protocol.KindError, &pb.Error{Code: protocol.CodeCodeInvalid, Rid: v.Rid})
	if o := <-res; CodeOf(o.err) != protocol.CodeCodeInvalid {
		t.Errorf("wrong code: %v, want CODE_INVALID", o.err)
	}

	rc := make(chan error, 1)
	go func() {
		_, err := RequestCode(context.Background(), cfg, "+447700900123")
		rc <- err
	}()
	fc = srv.accept(t)
	var r pb.RequestCode
	fc.expectProto(protocol.KindRequestCode, &r)
	fc.writeProto(protocol.KindError, &pb.Error{Code: protocol.CodeRateLimited, Rid: r.Rid, RetryAfterMs: 21500})
	var se *ServerError
	if err := <-rc; !errors.As(err, &se) || se.Code != protocol.CodeRateLimited || se.RetryAfter != 21500*time.Millisecond {
		t.Errorf("RequestCode = %v, want RATE_LIMITED after 21.5s", err)
	}

	if _, err := Verify(context.Background(), cfg, "447700900123", "1", ""); !errors.Is(err, ErrInvalid) {
		t.Errorf("Verify with a bad phone = %v", err)
	}
	if _, err := Verify(context.Background(), cfg, "+447700900123", "1", strings.Repeat("x", 65)); !errors.Is(err, ErrInvalid) {
		t.Errorf("Verify with a long device name = %v", err)
	}
}

// TestRequestCodeHonoursContext: a RequestCode whose context ends while it
// waits for the answer returns the context's error. The context ends once
// the request has arrived (a fixed deadline could end it sooner, during the
// handshake, on a loaded machine).
func TestRequestCodeHonoursContext(t *testing.T) {
	srv := newFakeServer(t, false)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res := make(chan error, 1)
	go func() {
		_, err := RequestCode(ctx, testConfig(srv), "+447700900123")
		res <- err
	}()
	fc := srv.accept(t)
	fc.expect(protocol.KindRequestCode) // and never answer
	cancel()
	select {
	case err := <-res:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("RequestCode = %v, want Canceled", err)
		}
	case <-time.After(waitLong):
		t.Fatal("RequestCode still waits after its context ended")
	}
}

// TestIdleClientUsesOneGoroutine guards the footprint the load generator
// relies on: a connected, idle client runs one goroutine (its reader); the
// writer and the dispatcher exist only while they have work.
func TestIdleClientUsesOneGoroutine(t *testing.T) {
	const n = 10
	srv := newFakeServer(t, false)
	for range n {
		c := startClient(t, testConfig(srv), nil)
		srv.accept(t).login(16, 30, 0)
		waitFor[Connected](c)
	}
	var runs, others int
	deadline := time.Now().Add(waitLong)
	for {
		runs, others = clientGoroutines()
		if runs == n && others == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d idle clients run %d reader and %d other goroutines, want %d and 0", n, runs, others, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// clientGoroutines counts the goroutines running Client.Run, and those
// running the client's writer or dispatcher.
func clientGoroutines() (runs, others int) {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for _, g := range strings.Split(string(buf), "\n\n") {
		switch {
		case strings.Contains(g, "client.(*Client).writeLoop("), strings.Contains(g, "client.(*Client).dispatch("):
			others++
		case strings.Contains(g, "client.(*Client).Run("):
			runs++
		}
	}
	return runs, others
}

func TestCloseConcurrently(t *testing.T) {
	srv := newFakeServer(t, false)
	c := startClient(t, testConfig(srv), nil)
	srv.accept(t).login(16, 30, 0)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() { defer wg.Done(); _ = c.Close() }()
	}
	wg.Wait()
	if err := c.runErr(); !errors.Is(err, ErrClosed) {
		t.Errorf("Run = %v, want ErrClosed", err)
	}
}
