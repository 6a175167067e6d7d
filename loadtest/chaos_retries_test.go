package loadtest

import (
	"maps"
	"testing"

	"github.com/parley-im/parley/client"
	"github.com/parley-im/parley/protocol"
)

// TestRetryCounter: the SDK's retries are counted by what and code.
func TestRetryCounter(t *testing.T) {
	h := newRetryCounter()
	over := &client.ServerError{Code: protocol.CodeOverloaded}
	h.count(client.Retry{CMID: 3, Err: over})
	h.count(client.Retry{CMID: 4, Err: over})
	h.count(client.Retry{Request: protocol.KindRead, Err: &client.ServerError{Code: protocol.CodeShardUnavailable}})
	want := map[string]int{"send OVERLOADED": 2, "request SHARD_UNAVAILABLE": 1}
	if got := h.snapshot(); !maps.Equal(got, want) {
		t.Errorf("counts %v, want %v", got, want)
	}
}
