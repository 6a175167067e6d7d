package sms

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Gateway makes one attempt to hand a message to an SMS gateway. Twilio
// and Webhook implement it. Send must return once ctx is done; it returns
// nil when the gateway took the message and otherwise an error, a
// *GatewayError when the gateway answered.
type Gateway interface {
	Send(ctx context.Context, m Message) error
	// Name names the gateway in logs and errors ("twilio", "webhook").
	Name() string
}

// Message is one verification code to send.
type Message struct {
	// Phone is the destination, E.164.
	Phone string
	// Code is the verification code; Text holds it too.
	Code string
	// Text is the message as the phone shows it.
	Text string
	// ID identifies the message, the same across its attempts, so that a
	// receiver can recognise a repeated attempt.
	ID string
}

// Class says what a gateway's refusal means.
type Class uint8

// Classes of GatewayError.
const (
	// Unavailable: the gateway could not take the message now (throttled,
	// a server error); the Sender tries again.
	Unavailable Class = iota + 1
	// Refused: the gateway refused the phone number for good (invalid, not
	// a mobile, a country it does not serve, opted out). Not retried; the
	// client gets CODE_UNDELIVERABLE.
	Refused
	// Rejected: the gateway refused the request for a reason of the
	// server's own (credentials, sender number, account). Not retried,
	// logged as an error; the client gets CODE_DELIVERY_FAILED.
	Rejected
)

// String returns "unavailable", "refused" or "rejected".
func (c Class) String() string {
	switch c {
	case Unavailable:
		return "unavailable"
	case Refused:
		return "refused"
	case Rejected:
		return "rejected"
	}
	return "Class(" + strconv.Itoa(int(c)) + ")"
}

// GatewayError is a gateway's answer that did not take a message.
type GatewayError struct {
	Class  Class
	Status int // the HTTP status
	// Code and Message are the gateway's own error code and text, if its
	// answer carried them (Message cut to 200 bytes).
	Code    string
	Message string
	// RetryAfter is the gateway's Retry-After, 0 if it gave none.
	RetryAfter time.Duration
}

// Error describes the answer.
func (e *GatewayError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "sms: gateway answered %d (%v)", e.Status, e.Class)
	if e.Code != "" {
		fmt.Fprintf(&b, ", code %s", e.Code)
	}
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", e.Message)
	}
	return b.String()
}

// roundTrip makes req and reads at most 64 KiB of the answer's body.
func roundTrip(c *http.Client, req *http.Request) (int, http.Header, []byte, error) {
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, nil, redactURL(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil && resp.StatusCode/100 != 2 {
		return 0, nil, nil, fmt.Errorf("reading the answer: %w", err)
	}
	return resp.StatusCode, resp.Header, body, nil
}

// retryAfter returns a Retry-After header given in seconds, capped at
// MaxDeadline; 0 if there is none (or it is an HTTP date).
func retryAfter(h http.Header) time.Duration {
	n, err := strconv.Atoi(strings.TrimSpace(h.Get("Retry-After")))
	if err != nil || n <= 0 {
		return 0
	}
	return min(time.Duration(n)*time.Second, MaxDeadline)
}

// cut bounds a gateway's text kept in errors and logs.
func cut(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}

// checkURL checks the base URL of a gateway: https, or http to a loopback
// host (a local relay or a test gateway), so that credentials and codes
// never cross a network in the clear.
func checkURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("gateway URL: %w", err)
	}
	switch {
	case u.Host == "":
		return nil, fmt.Errorf("gateway URL %q has no host", raw)
	case u.User != nil:
		return nil, errors.New("gateway URL carries credentials: give them as credentials, not in the URL")
	case u.Scheme == "https":
	case u.Scheme == "http" && loopback(u.Hostname()):
	default:
		return nil, fmt.Errorf("gateway URL %q: want https (plain http only to a loopback address)", raw)
	}
	return u, nil
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// newHTTPClient returns the HTTP client of a gateway: no redirects
// (a gateway answers, it does not send us elsewhere with our
// credentials), connections kept for reuse, timeouts from the context.
func newHTTPClient(workers int) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = max(workers, 2)
	t.ResponseHeaderTimeout = MaxDeadline
	return &http.Client{
		Transport: t,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// classify returns the Class of a gateway's answer status that did not
// take a message; refusal says whether the gateway's protocol makes it a
// refusal of the number.
func classify(status int, refusal bool) Class {
	switch {
	case refusal:
		return Refused
	case status == http.StatusRequestTimeout || status == http.StatusTooManyRequests || status >= 500:
		return Unavailable
	}
	return Rejected
}

// redactURL drops the query and any user information from the URL a
// transport error names (before anything wraps its text): a webhook URL
// may carry a token.
func redactURL(err error) error {
	var ue *url.Error
	if err == nil || !errors.As(err, &ue) {
		return err
	}
	if u, perr := url.Parse(ue.URL); perr == nil {
		u.User, u.RawQuery, u.Fragment = nil, "", ""
		ue.URL = u.String()
	} else {
		ue.URL = "(gateway URL)"
	}
	return err
}
