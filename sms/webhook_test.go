package sms_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/parley-im/parley/sms"
	"github.com/parley-im/parley/storage"
)

const webhookSecret = "whsec-0123456789abcdef"

// TestWebhookSigned: the webhook POSTs the message as JSON, signed and
// stamped; the receiver's check (VerifyWebhook) accepts it, and refuses
// it altered, replayed late or signed with another secret; a retry
// carries the same id.
func TestWebhookSigned(t *testing.T) {
	g := newFakeGateway(t, answer{status: 503}, answer{status: 204})
	clock := newFakeClock()
	wh, err := sms.NewWebhook(sms.WebhookConfig{URL: g.srv.URL + "/hooks/sms", Secret: []byte(webhookSecret), Now: clock.Now, HTTPClient: g.srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	h := newSender(t, wh, func(c *sms.Config) { c.Rand = func() float64 { return 0 } })
	o := newOutcome(t)
	h.SendCode(testPhone, testCode, o.done)
	first, second := g.next(t), g.next(t)
	if err := o.wait(); err != nil {
		t.Fatalf("done(%v), want nil", err)
	}
	if first.method != http.MethodPost || first.path != "/hooks/sms" || first.header.Get("Content-Type") != "application/json" {
		t.Errorf("request %s %s %q", first.method, first.path, first.header.Get("Content-Type"))
	}
	var body sms.WebhookBody
	if err := json.Unmarshal(first.body, &body); err != nil {
		t.Fatal(err)
	}
	now := clock.Now()
	want := sms.WebhookBody{ID: body.ID, Phone: testPhone, Code: testCode, Text: "Your Parley code is " + testCode, Timestamp: now.Unix()}
	if body != want || body.ID == "" {
		t.Errorf("body %+v, want %+v", body, want)
	}
	if got := first.header.Get(sms.HeaderTimestamp); got != strconv.FormatInt(now.Unix(), 10) {
		t.Errorf("%s %q", sms.HeaderTimestamp, got)
	}
	if first.header.Get(sms.HeaderIdempotencyKey) != body.ID || second.header.Get(sms.HeaderIdempotencyKey) != body.ID {
		t.Errorf("idempotency keys %q and %q, want the id %q on both attempts",
			first.header.Get(sms.HeaderIdempotencyKey), second.header.Get(sms.HeaderIdempotencyKey), body.ID)
	}

	secret := []byte(webhookSecret)
	if err := sms.VerifyWebhook(secret, first.header, first.body, now, 5*time.Minute); err != nil {
		t.Errorf("a genuine request: %v", err)
	}
	altered := append([]byte(nil), first.body...)
	altered[len(altered)-3] ^= 1
	for name, err := range map[string]error{
		"altered body":   sms.VerifyWebhook(secret, first.header, altered, now, 5*time.Minute),
		"another secret": sms.VerifyWebhook([]byte("another-secret-0123"), first.header, first.body, now, 5*time.Minute),
	} {
		if !errors.Is(err, sms.ErrBadSignature) {
			t.Errorf("%s: %v, want ErrBadSignature", name, err)
		}
	}
	if err := sms.VerifyWebhook(secret, first.header, first.body, now.Add(6*time.Minute), 5*time.Minute); !errors.Is(err, sms.ErrStale) {
		t.Errorf("replayed 6 minutes later: %v, want ErrStale", err)
	}
}

// TestWebhookAnswers: 422 refuses the number; other 4xx are the
// operator's configuration; 429 is retried.
func TestWebhookAnswers(t *testing.T) {
	for _, tc := range []struct {
		answers       []answer
		undeliverable bool
		reason        string
		requests      int
	}{
		{[]answer{{status: 422, body: `{"code":"unsupported_country","message":"no route"}`}}, true, sms.ReasonRefused, 1},
		{[]answer{{status: 401}}, false, sms.ReasonRejected, 1},
		{[]answer{{status: 429}, {status: 200}}, false, "", 2},
	} {
		g := newFakeGateway(t, tc.answers...)
		wh, err := sms.NewWebhook(sms.WebhookConfig{URL: g.srv.URL, Secret: []byte(webhookSecret), HTTPClient: g.srv.Client()})
		if err != nil {
			t.Fatal(err)
		}
		h := newSender(t, wh, func(c *sms.Config) { c.Rand = func() float64 { return 0 } })
		o := newOutcome(t)
		h.SendCode(testPhone, testCode, o.done)
		err = o.wait()
		if (err == nil) != (tc.reason == "") || errors.Is(err, storage.ErrCodeUndeliverable) != tc.undeliverable {
			t.Errorf("answers %v: done(%v)", tc.answers, err)
		}
		if n := g.count(); n != tc.requests {
			t.Errorf("answers %v: %d requests, want %d", tc.answers, n, tc.requests)
		}
		if tc.reason != "" && h.Stats().Failed[tc.reason] != 1 {
			t.Errorf("answers %v: stats %+v, want one %s", tc.answers, h.Stats(), tc.reason)
		}
	}
}

// TestWebhookExample: the request docs/operations.md shows is the one a
// Webhook sends, byte for byte, and its signature verifies.
func TestWebhookExample(t *testing.T) {
	const (
		secret = "example-secret-0123456789"
		body   = `{"id":"dn99ubq6yuj9-1","phone":"+447700900123","code":"493817","text":"Your Parley code is 493817","timestamp":1796115600}`
		sig    = "v1=29902435513611bd44dc0255e3149ae9b072e201e8a579734b62aa04d0fb244d"
	)
	g := newFakeGateway(t, answer{status: 200})
	at := time.Unix(1796115600, 0)
	wh, err := sms.NewWebhook(sms.WebhookConfig{URL: g.srv.URL + "/sms", Secret: []byte(secret), Now: func() time.Time { return at }, HTTPClient: g.srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	m := sms.Message{ID: "dn99ubq6yuj9-1", Phone: "+447700900123", Code: "493817", Text: "Your Parley code is 493817"}
	if err := wh.Send(t.Context(), m); err != nil {
		t.Fatal(err)
	}
	r := g.next(t)
	if string(r.body) != body {
		t.Errorf("body %s\nwant %s", r.body, body)
	}
	for k, want := range map[string]string{sms.HeaderTimestamp: "1796115600", sms.HeaderSignature: sig, sms.HeaderIdempotencyKey: "dn99ubq6yuj9-1"} {
		if got := r.header.Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	if err := sms.VerifyWebhook([]byte(secret), r.header, r.body, at.Add(time.Minute), 5*time.Minute); err != nil {
		t.Error(err)
	}
}
