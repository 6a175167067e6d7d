package sms

import (
	"bytes"
	"context"
	"crypto/hmac"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/parley-im/parley/internal/hooksig"
)

// Webhook request headers.
const (
	// HeaderTimestamp carries the request's time, Unix seconds; the
	// signature covers it.
	HeaderTimestamp = hooksig.HeaderTimestamp
	// HeaderSignature carries "v1=" and the hex HMAC-SHA256, under the
	// shared secret, of the timestamp, a ".", and the body.
	HeaderSignature = hooksig.HeaderSignature
	// HeaderIdempotencyKey carries the message's id, the same on every
	// attempt: a receiver that saw it already answers 2xx and sends
	// nothing.
	HeaderIdempotencyKey = "Idempotency-Key"
)

// MinSecret is the shortest webhook secret accepted, in bytes.
const MinSecret = hooksig.MinSecret

// WebhookConfig configures a Webhook gateway.
type WebhookConfig struct {
	// URL receives the POSTs: https, or plain http to a loopback address
	// only. Required.
	URL string
	// Secret signs each request; at least MinSecret bytes. Required. It is
	// never logged.
	Secret []byte
	// Now stamps the requests; nil means time.Now.
	Now func() time.Time
	// HTTPClient makes the requests; nil means a client of the gateway's
	// own, which follows no redirects. Timeouts come from the Sender.
	HTTPClient *http.Client
}

// WebhookBody is the JSON body of a webhook request.
type WebhookBody struct {
	// ID identifies the message, the same on every attempt (as in
	// HeaderIdempotencyKey).
	ID string `json:"id"`
	// Phone is the destination, E.164.
	Phone string `json:"phone"`
	// Code is the verification code, for a receiver that words the
	// message itself; Text is the message as Config.Text words it.
	Code string `json:"code"`
	Text string `json:"text"`
	// Timestamp is the request's time, Unix seconds, as in
	// HeaderTimestamp.
	Timestamp int64 `json:"timestamp"`
}

// Webhook hands messages to an HTTP endpoint of the operator's: a POST of
// a JSON WebhookBody, signed (HeaderSignature) so the receiver can check
// that it comes from this server, and stamped (HeaderTimestamp) so it can
// refuse a replay. The receiver answers 2xx when it took the message, 422
// when it will never serve the number, 408, 429 or 5xx when it cannot
// take the message now (Retry-After in seconds is honoured); anything else
// is taken for a configuration problem.
type Webhook struct {
	url    string
	secret []byte
	now    func() time.Time
	client *http.Client
}

// NewWebhook returns a Webhook gateway, or an error naming every problem
// with cfg.
func NewWebhook(cfg WebhookConfig) (*Webhook, error) {
	var errs []error
	if cfg.URL == "" {
		errs = append(errs, errors.New("no URL"))
	} else if _, err := checkURL(cfg.URL); err != nil {
		errs = append(errs, err)
	}
	if len(cfg.Secret) < MinSecret {
		errs = append(errs, fmt.Errorf("a secret of %d bytes, want at least %d", len(cfg.Secret), MinSecret))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("sms: webhook: %w", err)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = newHTTPClient(DefaultWorkers)
	}
	return &Webhook{url: cfg.URL, secret: bytes.Clone(cfg.Secret), now: cfg.Now, client: cfg.HTTPClient}, nil
}

// Name returns "webhook".
func (w *Webhook) Name() string { return "webhook" }

// Send implements Gateway.
func (w *Webhook) Send(ctx context.Context, m Message) error {
	ts := w.now().Unix()
	body, err := json.Marshal(WebhookBody{ID: m.ID, Phone: m.Phone, Code: m.Code, Text: m.Text, Timestamp: ts})
	if err != nil {
		return fmt.Errorf("sms: webhook: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("sms: webhook: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	hooksig.SetHeaders(req.Header, w.secret, ts, body)
	req.Header.Set(HeaderIdempotencyKey, m.ID)
	status, header, answer, err := roundTrip(w.client, req)
	if err != nil {
		return fmt.Errorf("sms: webhook: %w", err)
	}
	if status/100 == 2 {
		return nil
	}
	ge := &GatewayError{Status: status, RetryAfter: retryAfter(header)}
	var e struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	if json.Unmarshal(answer, &e) == nil {
		ge.Code, ge.Message = cut(e.Code), cut(e.Message)
	}
	ge.Class = classify(status, status == http.StatusUnprocessableEntity)
	return ge
}

// Errors of VerifyWebhook.
var (
	ErrBadSignature = errors.New("sms: webhook signature does not match")
	ErrStale        = errors.New("sms: webhook timestamp too old or in the future")
)

// VerifyWebhook checks a webhook request as its receiver should: the
// signature over the timestamp and the body under secret, and a timestamp
// within maxAge of now either way. A receiver also remembers the ids
// (HeaderIdempotencyKey) it served for maxAge, so that a replayed or
// repeated request sends no second message.
func VerifyWebhook(secret []byte, h http.Header, body []byte, now time.Time, maxAge time.Duration) error {
	stamp := h.Get(HeaderTimestamp)
	ts, err := strconv.ParseInt(stamp, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %s %q", ErrBadSignature, HeaderTimestamp, stamp)
	}
	sig, ok := strings.CutPrefix(h.Get(HeaderSignature), "v1=")
	got, err := hex.DecodeString(sig)
	if !ok || err != nil || !hmac.Equal(got, hooksig.Sign(secret, stamp, body)) {
		return ErrBadSignature
	}
	if d := now.Sub(time.Unix(ts, 0)); d > maxAge || d < -maxAge {
		return ErrStale
	}
	return nil
}
