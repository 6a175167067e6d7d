package push

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// Provider hands one notification to a push service.
type Provider interface {
	// Name returns the provider's name for logs and metrics: "apns",
	// "fcm" or "webhook".
	Name() string
	// Send delivers n, within ctx. It returns nil when the service took
	// n, a *Error when it answered otherwise, and any other error for a
	// network failure (retried).
	Send(ctx context.Context, n Notification) error
}

// Notification is what one push carries ([S-19-5]): never content.
type Notification struct {
	// ID identifies the push, the same on every attempt.
	ID string
	// Token is the device's token: an APNs device token, an FCM
	// registration token, or a webhook URL.
	Token string
	// Count is the device's waking entries since its last session.
	Count uint64
	// ShowSender allows Sender and Group (0: a 1:1 message) in the push.
	ShowSender    bool
	Sender, Group uint64
}

// Class says what a provider's refusal means for the push.
type Class uint8

// Classes of refusals.
const (
	// ClassInvalidToken: the token is no longer valid; the registration
	// is deleted ([S-19-2]).
	ClassInvalidToken Class = iota + 1
	// ClassThrottled: too many pushes; retried after RetryAfter or a
	// backoff.
	ClassThrottled
	// ClassUnavailable: the service failed (5xx); retried.
	ClassUnavailable
	// ClassRejected: the service refused our request (credentials, topic,
	// payload): not retried, logged as an error.
	ClassRejected
)

// String returns the class's name.
func (c Class) String() string {
	switch c {
	case ClassInvalidToken:
		return "invalid_token"
	case ClassThrottled:
		return "throttled"
	case ClassUnavailable:
		return "unavailable"
	case ClassRejected:
		return "rejected"
	}
	return fmt.Sprintf("Class(%d)", uint8(c))
}

// Error is a push service's refusal.
type Error struct {
	Provider string
	Status   int    // HTTP status
	Reason   string // the service's reason, as it words it (short)
	Class    Class
	// RetryAfter is the wait the service asked for; 0 when it named none.
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	s := fmt.Sprintf("push: %s answered %d", e.Provider, e.Status)
	if e.Reason != "" {
		s += " " + e.Reason
	}
	return s + " (" + e.Class.String() + ")"
}

// ErrNoProvider: the job's provider is not configured on this node.
var ErrNoProvider = errors.New("push: provider not configured")

// classify returns the class of an HTTP status that is not a success,
// given whether the answer said the token is invalid.
func classify(status int, invalidToken bool) Class {
	switch {
	case invalidToken:
		return ClassInvalidToken
	case status == http.StatusTooManyRequests:
		return ClassThrottled
	case status == http.StatusRequestTimeout || status >= 500:
		return ClassUnavailable
	}
	return ClassRejected
}

// retryAfter parses a Retry-After header: seconds, or an HTTP date.
func retryAfter(h http.Header, now time.Time) time.Duration {
	v := h.Get("Retry-After")
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// maxAnswer bounds what is read of a service's answer.
const maxAnswer = 16 << 10

// readAnswer reads at most maxAnswer bytes of an answer's body.
func readAnswer(r io.Reader) []byte {
	b, _ := io.ReadAll(io.LimitReader(r, maxAnswer))
	return b
}

// cut shortens a service's text for logs.
func cut(s string) string {
	if len(s) > 120 {
		return s[:120]
	}
	return s
}

// tokenPrefix is what logs show of a token.
func tokenPrefix(t string) string {
	if len(t) > 8 {
		return t[:8] + "…"
	}
	return t
}
