package node_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parley-im/parley/internal/node"
	"github.com/parley-im/parley/internal/nodetest"
	"github.com/parley-im/parley/internal/wiretest"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
	"github.com/parley-im/parley/sms"
)

// Phones the fake gateway answers differently.
const (
	phoneHeld    = "+447700900001" // answered 201 once the test releases it
	phoneInvalid = "+447700900002" // 400 21211: not a valid number
	phoneDown    = "+447700900003" // 503 every time
	phoneSilent  = "+447700900004" // never answered
)

// twilioFake answers as Twilio's Messages API does, by the To number.
type twilioFake struct {
	got     chan string   // the To of every request, as it arrives
	release chan struct{} // lets the held number's answer go
	mu      sync.Mutex
	bodies  map[string]string // guarded by mu: the last Body per To
}

func (f *twilioFake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil || !strings.HasSuffix(r.URL.Path, "/Messages.json") {
		http.Error(w, "bad request", http.StatusNotFound)
		return
	}
	to := r.PostForm.Get("To")
	f.mu.Lock()
	f.bodies[to] = r.PostForm.Get("Body")
	f.mu.Unlock()
	f.got <- to
	switch to {
	case phoneHeld:
		select {
		case <-f.release:
		case <-r.Context().Done():
			return
		}
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, `{"sid":"SM1","status":"queued"}`)
	case phoneInvalid:
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"code":21211,"message":"The 'To' number is not a valid phone number.","status":400}`)
	case phoneDown:
		w.WriteHeader(http.StatusServiceUnavailable)
	case phoneSilent:
		<-r.Context().Done()
	}
}

func (f *twilioFake) body(to string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.bodies[to]
}

// expectTo waits for the gateway to receive a request for phone.
func (f *twilioFake) expectTo(t *testing.T, phone string) {
	t.Helper()
	select {
	case got := <-f.got:
		if got != phone {
			t.Fatalf("the gateway got a request for %s, want %s", got, phone)
		}
	case <-time.After(wiretest.Timeout):
		t.Fatalf("the gateway got no request for %s", phone)
	}
}

// manualClock is an sms.Clock whose timers fire only when the test says:
// its time stands still, so only fire ends an attempt.
type manualClock struct {
	now     time.Time
	mu      sync.Mutex
	pending map[*func()]bool // guarded by mu
}

func (c *manualClock) Now() time.Time { return c.now }

func (c *manualClock) AfterFunc(_ time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pending[&f] = true
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		ok := c.pending[&f]
		delete(c.pending, &f)
		return ok
	}
}

// fire runs every pending timer.
func (c *manualClock) fire() {
	c.mu.Lock()
	due := c.pending
	c.pending = map[*func()]bool{}
	c.mu.Unlock()
	for f := range due {
		go (*f)()
	}
}

// TestSMSThroughNode: through a node in process, REQUEST_CODE is
// answered CODE_SENT only once the fake gateway took the code, with the
// code that verifies; a number the gateway refuses gets
// CODE_UNDELIVERABLE, a gateway down or silent CODE_DELIVERY_FAILED with
// retry_after_ms; bystanders on test numbers chat throughout; the admin
// metrics count it all ([S-9-16]).
func TestSMSThroughNode(t *testing.T) {
	fake := &twilioFake{got: make(chan string, 16), release: make(chan struct{}), bodies: map[string]string{}}
	gw := httptest.NewServer(fake)
	defer gw.Close()
	tw, err := sms.NewTwilio(sms.TwilioConfig{BaseURL: gw.URL, AccountSID: "AC1", AuthToken: "token", From: "+15005550006", HTTPClient: gw.Client()})
	if err != nil {
		t.Fatal(err)
	}
	clock := &manualClock{now: time.Now(), pending: map[*func()]bool{}}
	n := nodetest.Start(t, func(c *node.Config) {
		c.Codes = nil // the SMS sender instead
		c.SMS = sms.Config{Gateway: tw, Clock: clock, Rand: func() float64 { return 0 }, Attempts: 3}
		c.AdminAddr = "127.0.0.1:0"
		c.Storage.TestPrefix, c.Storage.TestCode = "+1999", "000000"
	})
	addr, fp := n.Addr().String(), n.Fingerprint()

	// Bystanders on test numbers: answered at once, whatever the gateway does.
	b1, b2 := wiretest.Dial(t, addr, fp), wiretest.Dial(t, addr, fp)
	testCode := func(string) string { return "000000" }
	u1, u2 := b1.Register("+19990000001", testCode), b2.Register("+19990000002", testCode)
	b1.Login(u1, 0)
	b2.Login(u2, 0)
	cmid := uint64(0)
	chat := func() {
		t.Helper()
		cmid++
		b1.SendText(u2.ID, cmid, "still here")
		if m := b2.Message(); string(m.Body) != "still here" {
			t.Fatalf("bystander got %q", m.Body)
		}
	}

	c := wiretest.Dial(t, addr, fp)
	request := func(phone string) uint32 {
		rid := c.NextRID()
		c.Send(protocol.KindRequestCode, &pb.RequestCode{Rid: rid, Phone: phone, Version: protocol.Version})
		return rid
	}

	// Held at the gateway: the client hears nothing but its Pong; a
	// bystander chats meanwhile.
	rid := request(phoneHeld)
	fake.expectTo(t, phoneHeld)
	chat()
	c.Ping()
	c.Expect(protocol.KindPong) // a CODE_SENT before the gateway answered fails here
	close(fake.release)
	var sent pb.CodeSent
	c.ExpectProto(protocol.KindCodeSent, &sent)
	if sent.Rid != rid || sent.CodeLength != 6 {
		t.Fatalf("CODE_SENT %v, want rid %d", &sent, rid)
	}
	code := strings.TrimPrefix(fake.body(phoneHeld), "Your Parley code is ")
	c.Send(protocol.KindVerify, &pb.Verify{Rid: c.NextRID(), Phone: phoneHeld, Code: code, DeviceName: "phone"})
	var reg pb.Registered
	c.ExpectProto(protocol.KindRegistered, &reg)

	// Refused for good: one request, CODE_UNDELIVERABLE.
	rid = request(phoneInvalid)
	fake.expectTo(t, phoneInvalid)
	if e := c.ExpectError(protocol.CodeCodeUndeliverable); e.Rid != rid {
		t.Fatalf("CODE_UNDELIVERABLE rid %d, want %d", e.Rid, rid)
	}

	// Down: three attempts, then CODE_DELIVERY_FAILED.
	rid = request(phoneDown)
	for range 3 {
		fake.expectTo(t, phoneDown)
	}
	if e := c.ExpectError(protocol.CodeCodeDeliveryFailed); e.Rid != rid || e.RetryAfterMs != 30_000 {
		t.Fatalf("gateway down: %v, want rid %d and retry_after_ms 30000", e, rid)
	}
	chat()

	// Silent: each attempt ends when its timer fires.
	rid = request(phoneSilent)
	for range 3 {
		fake.expectTo(t, phoneSilent)
		clock.fire()
	}
	if e := c.ExpectError(protocol.CodeCodeDeliveryFailed); e.Rid != rid || e.RetryAfterMs != 30_000 {
		t.Fatalf("gateway silent: %v, want rid %d and retry_after_ms 30000", e, rid)
	}
	chat()

	resp, err := gw.Client().Get("http://" + n.AdminAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		"parley_sms_sent_total 1\n",
		`parley_sms_failed_total{reason="refused"} 1` + "\n",
		`parley_sms_failed_total{reason="unavailable"} 1` + "\n",
		`parley_sms_failed_total{reason="timeout"} 1` + "\n",
		"parley_sms_retries_total 4\n",
		"parley_sms_queued 0\n",
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// TestSMSConfigConflict: a node takes a code sender or an SMS gateway,
// not both.
func TestSMSConfigConflict(t *testing.T) {
	tw, err := sms.NewTwilio(sms.TwilioConfig{AccountSID: "AC1", AuthToken: "token", From: "+15005550006"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = node.Start(node.Config{
		DataDir: t.TempDir(), Listen: "127.0.0.1:0", Shards: 1, MediaAddr: "off",
		Logger: slog.New(slog.DiscardHandler),
		Codes:  node.LogCodes{Logger: slog.New(slog.DiscardHandler)}, SMS: sms.Config{Gateway: tw},
	})
	if err == nil || !strings.Contains(err.Error(), "both a code sender") {
		t.Fatalf("Start: %v, want a refusal", err)
	}
}
