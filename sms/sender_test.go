package sms_test

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parley-im/parley/sms"
	"github.com/parley-im/parley/storage"
)

// Credentials of the tests: the logs must never show them.
const (
	testSID   = "AC0123456789abcdef0123456789abcdef"
	testToken = "tok-SECRET-4f1c9a7e2b"
	testPhone = "+447700900123"
	testCode  = "493817"
)

// Answers of a fake Twilio, as Twilio words them.
var (
	twilioCreated     = answer{status: 201, body: `{"sid":"SM0123","status":"queued"}`}
	twilioInvalidTo   = answer{status: 400, body: `{"code":21211,"message":"The 'To' number is not a valid phone number.","more_info":"https://www.twilio.com/docs/errors/21211","status":400}`}
	twilioBadFrom     = answer{status: 400, body: `{"code":21606,"message":"The From phone number is not a valid, SMS-capable inbound phone number for your account.","status":400}`}
	twilioAuthFailed  = answer{status: 401, body: `{"code":20003,"message":"Authenticate","status":401}`}
	twilioThrottled   = answer{status: 429, body: `{"code":20429,"message":"Too Many Requests","status":429}`, retryAfter: "1"}
	twilioServerError = answer{status: 500, body: `{"code":20500,"message":"Internal Server Error","status":500}`}
	twilioUnavailable = answer{status: 503, body: `Service Unavailable`}
	hang              = answer{hang: true}
)

// answer is what a fake gateway answers one request.
type answer struct {
	status     int
	body       string
	retryAfter string
	hang       bool // answer nothing until the client gives up
}

// request is what a fake gateway received.
type request struct {
	method, path string
	header       http.Header
	body         []byte
	form         url.Values
	user, pass   string
}

// fakeGateway is an HTTP server on loopback that answers as a gateway:
// each request gets the next answer of its list, the last one repeating.
type fakeGateway struct {
	srv     *httptest.Server
	reqs    chan request
	mu      sync.Mutex
	answers []answer // guarded by mu
	served  int      // guarded by mu
}

func newFakeGateway(t *testing.T, answers ...answer) *fakeGateway {
	g := &fakeGateway{reqs: make(chan request, 64), answers: answers}
	g.srv = httptest.NewServer(http.HandlerFunc(g.serve))
	t.Cleanup(g.srv.Close)
	return g
}

func (g *fakeGateway) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	req := request{method: r.Method, path: r.URL.Path, header: r.Header.Clone(), body: body}
	req.form, _ = url.ParseQuery(string(body))
	req.user, req.pass, _ = r.BasicAuth()
	g.mu.Lock()
	a := g.answers[min(g.served, len(g.answers)-1)]
	g.served++
	g.mu.Unlock()
	g.reqs <- req
	if a.hang {
		<-r.Context().Done()
		return
	}
	if a.retryAfter != "" {
		w.Header().Set("Retry-After", a.retryAfter)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(a.status)
	io.WriteString(w, a.body)
}

// next returns the next request the gateway received.
func (g *fakeGateway) next(t *testing.T) request {
	t.Helper()
	select {
	case r := <-g.reqs:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("the gateway received no request")
	}
	return request{}
}

// count returns how many requests the gateway received.
func (g *fakeGateway) count() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.served
}

func (g *fakeGateway) twilio(t *testing.T, tweak func(*sms.TwilioConfig)) *sms.Twilio {
	t.Helper()
	cfg := sms.TwilioConfig{BaseURL: g.srv.URL, AccountSID: testSID, AuthToken: testToken, From: "+15005550006", HTTPClient: g.srv.Client()}
	if tweak != nil {
		tweak(&cfg)
	}
	tw, err := sms.NewTwilio(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return tw
}

// syncBuffer is a log destination safe for the workers' concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// harness is a Sender on a fake clock with its log captured.
type harness struct {
	*sms.Sender
	clock *fakeClock
	log   *syncBuffer
}

func newSender(t *testing.T, gw sms.Gateway, tweak func(*sms.Config)) *harness {
	t.Helper()
	h := &harness{clock: newFakeClock(), log: &syncBuffer{}}
	cfg := sms.Config{
		Gateway: gw,
		Logger:  slog.New(slog.NewTextHandler(h.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Clock:   h.clock,
		Rand:    func() float64 { return 0.5 },
	}
	if tweak != nil {
		tweak(&cfg)
	}
	s, err := sms.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.Sender = s
	t.Cleanup(s.Close)
	return h
}

// outcome collects what a Sender reports for one message, and fails the
// test if it reports twice.
type outcome struct {
	t     *testing.T
	calls atomic.Int32
	ch    chan error
}

func newOutcome(t *testing.T) *outcome { return &outcome{t: t, ch: make(chan error, 2)} }

func (o *outcome) done(err error) {
	if o.calls.Add(1) > 1 {
		o.t.Errorf("done called again, with %v", err)
	}
	o.ch <- err
}

func (o *outcome) wait() error {
	o.t.Helper()
	select {
	case err := <-o.ch:
		return err
	case <-time.After(10 * time.Second):
		o.t.Fatal("the sender reported nothing")
	}
	return nil
}

func (o *outcome) reported() bool { return o.calls.Load() > 0 }

// TestTwilioSent: the request is Twilio's Messages API, and the code is
// reported sent once the gateway answered 201.
func TestTwilioSent(t *testing.T) {
	g := newFakeGateway(t, twilioCreated)
	h := newSender(t, g.twilio(t, nil), func(c *sms.Config) { c.Text = "{code} is your code. Parley: {code}" })
	o := newOutcome(t)
	h.SendCode(testPhone, testCode, o.done)
	r := g.next(t)
	if err := o.wait(); err != nil {
		t.Fatalf("done(%v), want nil", err)
	}
	if r.method != http.MethodPost || r.path != "/2010-04-01/Accounts/"+testSID+"/Messages.json" {
		t.Errorf("request %s %s", r.method, r.path)
	}
	if r.user != testSID || r.pass != testToken {
		t.Errorf("basic auth %q:%q", r.user, r.pass)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/x-www-form-urlencoded" {
		t.Errorf("Content-Type %q", ct)
	}
	want := url.Values{"To": {testPhone}, "From": {"+15005550006"}, "Body": {testCode + " is your code. Parley: " + testCode}}
	if r.form.Encode() != want.Encode() {
		t.Errorf("form %v, want %v", r.form, want)
	}
	if st := h.Stats(); st.Sent != 1 || st.Retries != 0 {
		t.Errorf("stats %+v", st)
	}

	// A messaging service instead of a sender number; the default text.
	g2 := newFakeGateway(t, twilioCreated)
	h2 := newSender(t, g2.twilio(t, func(c *sms.TwilioConfig) { c.From, c.MessagingServiceSID = "", "MG0123" }), nil)
	o2 := newOutcome(t)
	h2.SendCode(testPhone, testCode, o2.done)
	r = g2.next(t)
	if err := o2.wait(); err != nil {
		t.Fatal(err)
	}
	want = url.Values{"To": {testPhone}, "MessagingServiceSid": {"MG0123"}, "Body": {"Your Parley code is " + testCode}}
	if r.form.Encode() != want.Encode() {
		t.Errorf("form %v, want %v", r.form, want)
	}
}

// TestTwilioFailures: how each answer is classified, retried and
// counted.
func TestTwilioFailures(t *testing.T) {
	for _, tc := range []struct {
		name          string
		answers       []answer
		undeliverable bool
		requests      int
		reason        string
	}{
		{"invalid number", []answer{twilioInvalidTo}, true, 1, sms.ReasonRefused},
		{"bad sender", []answer{twilioBadFrom}, false, 1, sms.ReasonRejected},
		{"bad credentials", []answer{twilioAuthFailed}, false, 1, sms.ReasonRejected},
		{"server errors", []answer{twilioServerError, twilioUnavailable}, false, 3, sms.ReasonUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newFakeGateway(t, tc.answers...)
			h := newSender(t, g.twilio(t, nil), func(c *sms.Config) { c.Rand = func() float64 { return 0 } })
			o := newOutcome(t)
			h.SendCode(testPhone, testCode, o.done)
			err := o.wait()
			if err == nil {
				t.Fatal("done(nil), want an error")
			}
			if got := errors.Is(err, storage.ErrCodeUndeliverable); got != tc.undeliverable {
				t.Errorf("done(%v): undeliverable %v, want %v", err, got, tc.undeliverable)
			}
			if n := g.count(); n != tc.requests {
				t.Errorf("%d requests, want %d", n, tc.requests)
			}
			st := h.Stats()
			if st.Failed[tc.reason] != 1 || st.Sent != 0 || st.Retries != uint64(tc.requests-1) {
				t.Errorf("stats %+v, want one failed %s and %d retries", st, tc.reason, tc.requests-1)
			}
		})
	}
}

// TestRetryBackoff: throttling and server errors are retried after a
// capped exponential backoff with jitter, or the gateway's Retry-After
// when it is longer, until the gateway takes the message.
func TestRetryBackoff(t *testing.T) {
	g := newFakeGateway(t, twilioThrottled, twilioServerError, twilioServerError, twilioCreated)
	h := newSender(t, g.twilio(t, nil), func(c *sms.Config) {
		c.Attempts = 4
		c.BackoffMin, c.BackoffMax = 400*time.Millisecond, time.Second
		c.Deadline = 10 * time.Second
	})
	o := newOutcome(t)
	h.SendCode(testPhone, testCode, o.done)
	// Rand is 0.5: half of min(1 s, 400 ms·2ⁿ⁻¹), but Retry-After 1 s first.
	for i, wait := range []time.Duration{time.Second, 400 * time.Millisecond, 500 * time.Millisecond} {
		g.next(t)
		h.clock.waitTimer(t, wait)
		if o.reported() {
			t.Fatalf("reported before retry %d", i+1)
		}
		h.clock.Advance(wait)
	}
	g.next(t)
	if err := o.wait(); err != nil {
		t.Fatalf("done(%v), want nil", err)
	}
	if st := h.Stats(); st.Sent != 1 || st.Retries != 3 {
		t.Errorf("stats %+v, want 1 sent after 3 retries", st)
	}
}

// TestAttemptTimeout: an attempt the gateway does not answer ends after
// AttemptTimeout; the next attempt is bounded by what is left of the
// Deadline, and then the message fails as timed out.
func TestAttemptTimeout(t *testing.T) {
	g := newFakeGateway(t, hang)
	h := newSender(t, g.twilio(t, nil), func(c *sms.Config) {
		c.AttemptTimeout, c.Deadline = 3*time.Second, 5*time.Second
		c.Rand = func() float64 { return 0 }
	})
	o := newOutcome(t)
	h.SendCode(testPhone, testCode, o.done)
	g.next(t)
	h.clock.waitTimer(t, 3*time.Second)
	h.clock.Advance(3 * time.Second)
	g.next(t) // the retry, with 2 s left
	h.clock.waitTimer(t, 2*time.Second)
	if o.reported() {
		t.Fatal("reported while the second attempt was waiting")
	}
	h.clock.Advance(2 * time.Second)
	err := o.wait()
	if !errors.Is(err, sms.ErrTimeout) || errors.Is(err, storage.ErrCodeUndeliverable) {
		t.Fatalf("done(%v), want ErrTimeout", err)
	}
	if st := h.Stats(); st.Failed[sms.ReasonTimeout] != 1 || st.Retries != 1 {
		t.Errorf("stats %+v", st)
	}
}

// TestQueueBounded: with every worker busy and the queue full, SendCode
// refuses at once; a message that waited past its Deadline in the queue
// is not sent.
func TestQueueBounded(t *testing.T) {
	g := newFakeGateway(t, hang, twilioCreated)
	h := newSender(t, g.twilio(t, nil), func(c *sms.Config) {
		c.Workers, c.Queue, c.Attempts = 1, 1, 1
		c.AttemptTimeout, c.Deadline = 3*time.Second, 3*time.Second
	})
	first, queued, refused := newOutcome(t), newOutcome(t), newOutcome(t)
	h.SendCode("+447700900001", testCode, first.done)
	g.next(t) // the worker is busy with the first
	h.SendCode("+447700900002", testCode, queued.done)
	h.SendCode("+447700900003", testCode, refused.done)
	if !refused.reported() {
		t.Fatal("SendCode with the queue full did not report at once")
	}
	if err := refused.wait(); !errors.Is(err, sms.ErrQueueFull) {
		t.Fatalf("done(%v), want ErrQueueFull", err)
	}
	if st := h.Stats(); st.Queued != 1 || st.InFlight != 1 {
		t.Errorf("stats %+v, want 1 queued and 1 in flight", st)
	}
	h.clock.waitTimer(t, 3*time.Second)
	h.clock.Advance(3 * time.Second) // the first times out; the queued one is past its deadline
	if err := first.wait(); !errors.Is(err, sms.ErrTimeout) {
		t.Fatalf("first: done(%v), want ErrTimeout", err)
	}
	if err := queued.wait(); !errors.Is(err, sms.ErrTimeout) {
		t.Fatalf("queued: done(%v), want ErrTimeout", err)
	}
	if n := g.count(); n != 1 {
		t.Errorf("%d requests, want 1: a message past its deadline was sent", n)
	}
	st := h.Stats()
	if st.Failed[sms.ReasonQueueFull] != 1 || st.Failed[sms.ReasonTimeout] != 2 {
		t.Errorf("stats %+v", st)
	}
}

// TestClose: Close ends the attempt in progress and the queued messages
// with ErrClosed, and SendCode after Close reports at once.
func TestClose(t *testing.T) {
	g := newFakeGateway(t, hang)
	h := newSender(t, g.twilio(t, nil), func(c *sms.Config) { c.Workers, c.Queue = 1, 4 })
	busy, queued := newOutcome(t), newOutcome(t)
	h.SendCode(testPhone, testCode, busy.done)
	g.next(t)
	h.SendCode(testPhone, testCode, queued.done)
	h.Close()
	for _, o := range []*outcome{busy, queued} {
		if err := o.wait(); !errors.Is(err, sms.ErrClosed) {
			t.Fatalf("done(%v), want ErrClosed", err)
		}
	}
	late := newOutcome(t)
	h.SendCode(testPhone, testCode, late.done)
	if !late.reported() {
		t.Fatal("SendCode after Close did not report at once")
	}
	if err := late.wait(); !errors.Is(err, sms.ErrClosed) {
		t.Fatalf("done(%v), want ErrClosed", err)
	}
}

// TestNoSecretsInLogs: failing sends log their cause, but never the auth
// token, the webhook secret, a token in the webhook URL, the code or the
// message text, and neither do the errors reported.
func TestNoSecretsInLogs(t *testing.T) {
	const secret = "whsec-SECRET-0123456789abcdef"
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close() // connections to it are refused

	var errs []string
	record := func(o *outcome) { errs = append(errs, o.wait().Error()) }
	for _, answers := range [][]answer{{twilioAuthFailed}, {twilioInvalidTo}, {twilioServerError}} {
		g := newFakeGateway(t, answers...)
		h := newSender(t, g.twilio(t, nil), func(c *sms.Config) { c.Attempts = 1 })
		o := newOutcome(t)
		h.SendCode(testPhone, testCode, o.done)
		record(o)
		errs = append(errs, h.log.String())
	}
	tw, err := sms.NewTwilio(sms.TwilioConfig{BaseURL: deadURL, AccountSID: testSID, AuthToken: testToken, From: "+15005550006"})
	if err != nil {
		t.Fatal(err)
	}
	wh, err := sms.NewWebhook(sms.WebhookConfig{URL: deadURL + "/sms?token=" + secret, Secret: []byte(secret)})
	if err != nil {
		t.Fatal(err)
	}
	for _, gw := range []sms.Gateway{tw, wh} {
		h := newSender(t, gw, func(c *sms.Config) { c.Attempts = 1 })
		o := newOutcome(t)
		h.SendCode(testPhone, testCode, o.done)
		record(o)
		errs = append(errs, h.log.String())
	}
	all := strings.Join(errs, "\n")
	for _, s := range []string{testToken, secret, testCode, "Your Parley code"} {
		if strings.Contains(all, s) {
			t.Errorf("the logs or errors show %q:\n%s", s, all)
		}
	}
	for _, s := range []string{"reason=rejected", "reason=refused", "reason=unavailable", "21211", "connection refused"} {
		if !strings.Contains(all, s) {
			t.Errorf("the logs do not say %q:\n%s", s, all)
		}
	}
}

// TestConfigErrors: every problem is reported at once; gateway URLs must
// be https unless they are on loopback.
func TestConfigErrors(t *testing.T) {
	_, err := sms.NewTwilio(sms.TwilioConfig{BaseURL: "http://gateway.example.com"})
	for _, want := range []string{"want https", "no account SID", "no auth token", "exactly one of"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("NewTwilio: %v, want it to say %q", err, want)
		}
	}
	for _, u := range []string{"https://api.example.com", "http://127.0.0.1:8080", "http://[::1]:99", "http://localhost"} {
		if _, err := sms.NewWebhook(sms.WebhookConfig{URL: u, Secret: make([]byte, sms.MinSecret)}); err != nil {
			t.Errorf("NewWebhook(%s): %v", u, err)
		}
	}
	_, err = sms.NewWebhook(sms.WebhookConfig{URL: "https://u:p@example.com", Secret: []byte("short")})
	for _, want := range []string{"carries credentials", "at least 16"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("NewWebhook: %v, want it to say %q", err, want)
		}
	}
	_, err = sms.New(sms.Config{Text: "no code here", Deadline: time.Minute, Workers: -1})
	for _, want := range []string{"no gateway", "has no {code}", "deadline 1m0s above 10s", "negative workers"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("New: %v, want it to say %q", err, want)
		}
	}
}
