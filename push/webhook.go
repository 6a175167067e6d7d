package push

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"syscall"
	"time"

	"github.com/parley-im/parley/internal/hooksig"
)

// Webhook request headers ([S-19-5]); the signature is the SMS webhook's
// (docs/operations.md).
const (
	HeaderTimestamp = hooksig.HeaderTimestamp
	HeaderSignature = hooksig.HeaderSignature
)

// MinSecret is the shortest webhook secret accepted, in bytes.
const MinSecret = hooksig.MinSecret

// WebhookConfig configures the webhook provider.
type WebhookConfig struct {
	// Secret signs each request; at least MinSecret bytes. Required; never
	// logged.
	Secret []byte
	// AllowPrivate lets registered URLs reach loopback, private and
	// link-local addresses. Off by default: the URLs come from clients,
	// and must not turn the server into a way into its own network. Tests
	// turn it on.
	AllowPrivate bool
	// TLS is the TLS configuration towards the endpoints; nil means the
	// system's roots.
	TLS *tls.Config
	// Now stamps the requests; nil means time.Now.
	Now func() time.Time
}

// Webhook pushes to a UnifiedPush-compatible endpoint, which the device
// registered as its token: an HTTPS POST of a small signed JSON body. The
// endpoint answers 2xx when it took the push; 404 or 410 when the
// endpoint is gone (the registration is deleted); 408, 429 or 5xx when it
// cannot take it now (Retry-After is honoured); anything else is refused.
type Webhook struct {
	secret []byte
	client *http.Client
	now    func() time.Time
}

// NewWebhook returns the webhook provider, or an error naming every
// problem with cfg.
func NewWebhook(cfg WebhookConfig) (*Webhook, error) {
	if len(cfg.Secret) < MinSecret {
		return nil, fmt.Errorf("push: webhook: a secret of %d bytes, want at least %d", len(cfg.Secret), MinSecret)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	var control func(network, address string, c syscall.RawConn) error
	if !cfg.AllowPrivate {
		control = publicOnly
	}
	client := newHTTPClient(control)
	if cfg.TLS != nil {
		client.Transport.(*http.Transport).TLSClientConfig = cfg.TLS
	}
	return &Webhook{secret: bytes.Clone(cfg.Secret), client: client, now: cfg.Now}, nil
}

// Name returns "webhook".
func (w *Webhook) Name() string { return "webhook" }

// WebhookBody is the JSON body of a webhook push ([S-19-5]).
type WebhookBody struct {
	// ID identifies the push, the same on every attempt.
	ID string `json:"id"`
	// Count is the device's waking entries since its last session.
	Count uint64 `json:"count"`
	// Sender and Group are present only when the device allows it.
	Sender uint64 `json:"sender,omitempty"`
	Group  uint64 `json:"group,omitempty"`
	// Timestamp is the request's time, Unix seconds, as in
	// HeaderTimestamp.
	Timestamp int64 `json:"timestamp"`
}

// Send implements Provider.
func (w *Webhook) Send(ctx context.Context, n Notification) error {
	if _, err := checkURL(n.Token, false); err != nil {
		return &Error{Provider: "webhook", Reason: err.Error(), Class: ClassInvalidToken}
	}
	ts := w.now().Unix()
	d := dataOf(n)
	body, err := json.Marshal(WebhookBody{ID: n.ID, Count: d.Count, Sender: d.Sender, Group: d.Group, Timestamp: ts})
	if err != nil {
		return fmt.Errorf("push: webhook: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.Token, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("push: webhook: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("TTL", "86400")
	req.Header.Set("Urgency", "high")
	req.Header.Set("Topic", "parley")
	hooksig.SetHeaders(req.Header, w.secret, ts, body)
	res, err := w.client.Do(req)
	if err != nil {
		return fmt.Errorf("push: webhook: %w", errors.Unwrap(err)) // not the URL: it is the device's token
	}
	_ = readAnswer(res.Body)
	_ = res.Body.Close()
	if res.StatusCode/100 == 2 {
		return nil
	}
	gone := res.StatusCode == http.StatusNotFound || res.StatusCode == http.StatusGone
	return &Error{Provider: "webhook", Status: res.StatusCode, Class: classify(res.StatusCode, gone), RetryAfter: retryAfter(res.Header, w.now())}
}

// checkURL parses an endpoint: https with a host and no user information;
// plain http only to a loopback address when loopbackHTTP.
func checkURL(raw string, loopbackHTTP bool) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.User != nil || u.Opaque != "" {
		return nil, errors.New("not an absolute URL with a host")
	}
	switch u.Scheme {
	case "https":
		return u, nil
	case "http":
		if ip := net.ParseIP(u.Hostname()); loopbackHTTP && (u.Hostname() == "localhost" || ip != nil && ip.IsLoopback()) {
			return u, nil
		}
	}
	return nil, errors.New("not an https URL")
}

// publicOnly refuses to connect to loopback, private, link-local and
// unspecified addresses (a net.Dialer's Control, so it sees the address
// each name resolved to).
func publicOnly(network, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	ip := net.ParseIP(host)
	if ip == nil || ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsUnspecified() || ip.IsMulticast() {
		return fmt.Errorf("push: webhook: refusing a non-public address %s", host)
	}
	return nil
}

// newHTTPClient returns a client that follows no redirects, with control
// as its dialer's Control (nil: none).
func newHTTPClient(control func(network, address string, c syscall.RawConn) error) *http.Client {
	dialer := &net.Dialer{Timeout: 10 * time.Second, Control: control}
	return &http.Client{
		Transport: &http.Transport{
			DialContext:         dialer.DialContext,
			ForceAttemptHTTP2:   true,
			MaxIdleConnsPerHost: 16,
			IdleConnTimeout:     90 * time.Second,
			TLSHandshakeTimeout: 10 * time.Second,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
