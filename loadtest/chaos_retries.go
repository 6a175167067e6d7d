package loadtest

import (
	"maps"
	"sync"

	"github.com/parley-im/parley/client"
	"github.com/parley-im/parley/protocol"
)

// retryCounter counts the chaos clients' retries of sends and requests
// the server refused with a retriable code (client.Config.OnRetry), by
// what and code: what a client saw of the faults. Safe for concurrent
// use.
type retryCounter struct {
	mu     sync.Mutex
	counts map[string]int // guarded by mu: "send OVERLOADED" → retries
}

func newRetryCounter() *retryCounter {
	return &retryCounter{counts: map[string]int{}}
}

// count is the clients' Config.OnRetry.
func (h *retryCounter) count(r client.Retry) {
	what := "send "
	if r.Request != 0 {
		what = "request "
	}
	code := "unknown"
	if r.Err != nil {
		code = r.Err.Code.String()
		if info, ok := protocol.LookupCode(r.Err.Code); ok {
			code = info.Name
		}
	}
	h.mu.Lock()
	h.counts[what+code]++
	h.mu.Unlock()
}

// snapshot returns the counts so far.
func (h *retryCounter) snapshot() map[string]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return maps.Clone(h.counts)
}
