package loadtest

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parley-im/parley/client"
	"github.com/parley-im/parley/protocol"
)

// waits records the waits between attempts instead of waiting.
type waits []time.Duration

func (w *waits) wait(ctx context.Context, d time.Duration) error {
	*w = append(*w, d)
	return ctx.Err()
}

// TestRetrySetup: a setup call refused with a code the client retries is
// made again, after the server's retry_after_ms or a growing backoff;
// another error ends it at once, and so do setupAttempts refusals.
func TestRetrySetup(t *testing.T) {
	ctx := context.Background()
	over := &client.ServerError{Code: protocol.CodeOverloaded, RetryAfter: 500 * time.Millisecond}
	fenced := &client.ServerError{Code: protocol.CodeShardUnavailable}
	away := &client.ServerError{Code: protocol.CodeShuttingDown, GoAway: true, RetryAfter: time.Second}
	answers := []error{over, fenced, away, nil}
	var w waits
	calls := 0
	err := retrySetup(ctx, "request a code", w.wait, func(context.Context) error {
		calls++
		return answers[calls-1]
	})
	if err != nil || calls != 4 {
		t.Fatalf("err %v after %d calls, want nil after 4", err, calls)
	}
	if want := []time.Duration{500 * time.Millisecond, 2 * setupBackoffMin, time.Second}; !slices.Equal(w, want) {
		t.Errorf("waited %v, want %v", w, want)
	}

	for _, final := range []error{&client.ServerError{Code: protocol.CodeNotFound}, &client.ServerError{Code: protocol.CodeAuthFailed, GoAway: true}, errors.New("dial: refused")} {
		calls, w = 0, nil
		err = retrySetup(ctx, "verify", w.wait, func(context.Context) error { calls++; return final })
		if !errors.Is(err, final) || calls != 1 || len(w) != 0 {
			t.Errorf("%v: err %v after %d calls and %d waits, want it after 1 call", final, err, calls, len(w))
		}
	}

	calls, w = 0, nil
	err = retrySetup(ctx, "link", w.wait, func(context.Context) error { calls++; return fenced })
	if !errors.Is(err, fenced) || calls != setupAttempts || !strings.Contains(err.Error(), "link") {
		t.Errorf("err %v after %d calls, want SHARD_UNAVAILABLE after %d", err, calls, setupAttempts)
	}
	if w[len(w)-1] != setupBackoffMax {
		t.Errorf("last wait %v, want the cap %v", w[len(w)-1], setupBackoffMax)
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	calls = 0
	err = retrySetup(cctx, "link", (&waits{}).wait, func(context.Context) error { calls++; return over })
	if !errors.Is(err, context.Canceled) || calls != 1 {
		t.Errorf("cancelled: err %v after %d calls", err, calls)
	}
}

// TestAddRefused: members a new group refused with a code the client
// retries are added again until none is refused; a refusal with another
// code is an error.
func TestAddRefused(t *testing.T) {
	ctx := context.Background()
	var w waits
	var asked [][]uint64
	rounds := [][]client.GroupRefusal{
		{{User: 7, Code: protocol.CodeShardUnavailable}}, // of the first add
		nil,
	}
	err := addRefused(ctx, 1, []client.GroupRefusal{{User: 5, Code: protocol.CodeOverloaded}, {User: 7, Code: protocol.CodeOverloaded}}, w.wait,
		func(_ context.Context, ids []uint64) ([]client.GroupRefusal, error) {
			asked = append(asked, ids)
			return rounds[len(asked)-1], nil
		})
	if err != nil || len(asked) != 2 || !slices.Equal(asked[0], []uint64{5, 7}) || !slices.Equal(asked[1], []uint64{7}) {
		t.Fatalf("err %v, adds asked %v: want [5 7] then [7]", err, asked)
	}
	if len(w) != 2 {
		t.Errorf("waited %v, want once before each add", w)
	}

	asked = nil
	err = addRefused(ctx, 2, []client.GroupRefusal{{User: 9, Code: protocol.CodeTooManyGroups}}, w.wait,
		func(_ context.Context, ids []uint64) ([]client.GroupRefusal, error) {
			asked = append(asked, ids)
			return nil, nil
		})
	if err == nil || len(asked) != 0 || !strings.Contains(err.Error(), "user 9") {
		t.Errorf("TOO_MANY_GROUPS: err %v, adds %v: want an error naming user 9 and no add", err, asked)
	}

	if err := addRefused(ctx, 3, nil, w.wait, nil); err != nil {
		t.Errorf("nothing refused: %v", err)
	}
}
