package loadtest

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"sync"

	"github.com/parley-im/parley/client"
	"github.com/parley-im/parley/protocol"
)

// retryCounter is the chaos clients' slog.Handler: it counts the SDK's
// retries of sends and requests refused with a retriable code (the SDK
// logs each at debug, "client: send will be retried" and "client: request
// will be retried", with the *client.ServerError), by what and code, and
// passes every record its next handler takes to it. It is what a client
// saw of the faults. Safe for concurrent use; WithAttrs and WithGroup
// share the counts.
type retryCounter struct {
	next   slog.Handler
	mu     *sync.Mutex
	counts map[string]int // guarded by mu: "send OVERLOADED" → retries
}

func newRetryCounter(next slog.Handler) *retryCounter {
	return &retryCounter{next: next, mu: &sync.Mutex{}, counts: map[string]int{}}
}

// Enabled takes debug records, where the SDK logs its retries.
func (h *retryCounter) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelDebug
}

// Handle counts a retry record and passes the record on if the next
// handler takes its level.
func (h *retryCounter) Handle(ctx context.Context, r slog.Record) error {
	what := ""
	switch r.Message {
	case "client: send will be retried":
		what = "send "
	case "client: request will be retried":
		what = "request "
	}
	if what != "" {
		code := "unknown"
		r.Attrs(func(a slog.Attr) bool {
			var se *client.ServerError
			if err, ok := a.Value.Any().(error); ok && a.Key == "err" && errors.As(err, &se) {
				code = se.Code.String()
				if info, ok := protocol.LookupCode(se.Code); ok {
					code = info.Name
				}
				return false
			}
			return true
		})
		h.mu.Lock()
		h.counts[what+code]++
		h.mu.Unlock()
	}
	if !h.next.Enabled(ctx, r.Level) {
		return nil
	}
	return h.next.Handle(ctx, r)
}

// WithAttrs returns a handler with the next handler's attributes added
// and the same counts.
func (h *retryCounter) WithAttrs(as []slog.Attr) slog.Handler {
	return &retryCounter{next: h.next.WithAttrs(as), mu: h.mu, counts: h.counts}
}

// WithGroup returns a handler with the next handler's group and the same
// counts.
func (h *retryCounter) WithGroup(name string) slog.Handler {
	return &retryCounter{next: h.next.WithGroup(name), mu: h.mu, counts: h.counts}
}

// snapshot returns the counts so far.
func (h *retryCounter) snapshot() map[string]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return maps.Clone(h.counts)
}
