package loadtest

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/parley-im/parley/client"
	"github.com/parley-im/parley/protocol"
)

// A chaos run's setup (registering, linking companions, creating groups)
// runs before the faults, but a loaded cluster still refuses some of it
// retriably: a shard whose node's fence lapsed for a moment answers
// SHARD_UNAVAILABLE, a gateway that cannot reach a shard's node answers
// OVERLOADED, and a group's shard refuses members whose shards did not
// answer in time with OVERLOADED. The SDK retries its in-session
// requests itself, but not the one-shot exchanges (REQUEST_CODE, VERIFY,
// LINK_REQUEST) nor a group's refused members; the setup retries those,
// as spec.md's error table says a client does ([S-11-3]).

// Bounds of the setup's retries.
const (
	// setupAttempts is the most times one setup call is made.
	setupAttempts = 12
	// setupBackoffMin and setupBackoffMax bound the wait between two
	// attempts when the server names no retry_after_ms.
	setupBackoffMin = 100 * time.Millisecond
	setupBackoffMax = 2 * time.Second
)

// setupRetried reports whether err is a refusal the client retries: a
// code protocol.Retried names ([S-11-3]), or a GOAWAY SHUTTING_DOWN
// (reconnect after reconnect_after_ms), which a one-shot exchange meets
// as its answer.
func setupRetried(err error) bool {
	var se *client.ServerError
	if !errors.As(err, &se) {
		return false
	}
	if se.GoAway {
		return se.Code == protocol.CodeShuttingDown
	}
	return protocol.Retried(se.Code)
}

// setupDelay returns the wait before attempt n+1 (n from 1) after err: the
// server's retry_after_ms (or reconnect_after_ms) when it names one, else
// a backoff doubling from setupBackoffMin up to setupBackoffMax.
func setupDelay(err error, n int) time.Duration {
	var se *client.ServerError
	if errors.As(err, &se) && se.RetryAfter > 0 {
		return se.RetryAfter
	}
	d := setupBackoffMin << min(n-1, 8)
	return min(d, setupBackoffMax)
}

// retrySetup calls f until it succeeds, fails with an error setupRetried
// does not take, has been called setupAttempts times, or ctx ends; wait
// waits between attempts (sleepCtx; tests pass their own). Every error
// it returns names what (and the attempts made, when they ran out).
func retrySetup(ctx context.Context, what string, wait func(context.Context, time.Duration) error, f func(context.Context) error) error {
	var err error
	for n := 1; ; n++ {
		if err = f(ctx); err == nil {
			return nil
		}
		if !setupRetried(err) {
			return fmt.Errorf("chaos: %s: %w", what, err)
		}
		if n == setupAttempts {
			return fmt.Errorf("chaos: %s: refused %d times, the last: %w", what, n, err)
		}
		if werr := wait(ctx, setupDelay(err, n)); werr != nil {
			return fmt.Errorf("chaos: %s: %w after %d refusals, the last: %w", what, werr, n, err)
		}
	}
}

// addRefused adds again, with add, the members a group refused with a
// code the client retries ([S-16-3]: OVERLOADED when a member's shard did
// not answer in time), until none is refused, setupAttempts times at
// most; wait waits between attempts. A refusal with another code is an
// error. add returns the refusals of its own call.
func addRefused(ctx context.Context, group int, refused []client.GroupRefusal, wait func(context.Context, time.Duration) error,
	add func(context.Context, []uint64) ([]client.GroupRefusal, error)) error {
	for n := 1; len(refused) > 0; n++ {
		ids := make([]uint64, 0, len(refused))
		for _, r := range refused {
			if !protocol.Retried(r.Code) {
				return fmt.Errorf("chaos: group %d refused %d members (first: user %d, %v)", group, len(refused), r.User, r.Code)
			}
			ids = append(ids, r.User)
		}
		if n == setupAttempts {
			return fmt.Errorf("chaos: group %d refused %d members %d times (first: user %d, %v)", group, len(refused), n, refused[0].User, refused[0].Code)
		}
		if err := wait(ctx, setupDelay(nil, n)); err != nil {
			return fmt.Errorf("chaos: group %d: adding refused members: %w", group, err)
		}
		err := retrySetup(ctx, fmt.Sprintf("add refused members to group %d", group), wait, func(ctx context.Context) error {
			var err error
			refused, err = add(ctx, ids)
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}
