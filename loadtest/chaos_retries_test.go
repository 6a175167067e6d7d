package loadtest

import (
	"bytes"
	"log/slog"
	"maps"
	"testing"

	"github.com/parley-im/parley/client"
	"github.com/parley-im/parley/protocol"
)

// TestRetryCounter: the SDK's retry records are counted by what and code,
// through loggers with attributes too, and a record reaches the next
// handler only at a level it takes.
func TestRetryCounter(t *testing.T) {
	var out bytes.Buffer
	h := newRetryCounter(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelWarn}))
	log := slog.New(h)
	over := &client.ServerError{Code: protocol.CodeOverloaded}
	log.Debug("client: send will be retried", "cmid", 3, "err", over)
	log.With("device", 1).Debug("client: send will be retried", "cmid", 4, "err", over)
	log.Debug("client: request will be retried", "kind", "read", "err", &client.ServerError{Code: protocol.CodeShardUnavailable})
	log.Debug("client: disconnected")
	log.Warn("client: request failed")
	want := map[string]int{"send OVERLOADED": 2, "request SHARD_UNAVAILABLE": 1}
	if got := h.snapshot(); !maps.Equal(got, want) {
		t.Errorf("counts %v, want %v", got, want)
	}
	if s := out.String(); bytes.Count(out.Bytes(), []byte("\n")) != 1 || !bytes.Contains(out.Bytes(), []byte("request failed")) {
		t.Errorf("passed on %q, want the warning alone", s)
	}
}
