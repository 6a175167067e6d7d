package push

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/parley-im/parley/internal/clock"
	"github.com/parley-im/parley/storage"
)

// Defaults of Config.
const (
	DefaultInterval       = 30 * time.Second
	DefaultWorkers        = 64
	DefaultQueue          = 100_000
	DefaultAttempts       = 4
	DefaultAttemptTimeout = 10 * time.Second
	DefaultBackoffMin     = 500 * time.Millisecond
	DefaultBackoffMax     = 30 * time.Second
	DefaultMaxRetryAfter  = 10 * time.Minute
)

// Clock is a source of time (package internal/clock). Tests implement
// it to drive intervals and backoff without sleeping.
type Clock = clock.Clock

// Config configures a Dispatcher. The zero value of each optional field
// means its default.
type Config struct {
	// APNs, FCM and Webhook are the providers the node offers; nil: not
	// offered (PUSH_REGISTER with it is refused PUSH_UNAVAILABLE). Each is
	// a Provider, so tests may plug in their own.
	APNs, FCM, Webhook Provider
	// Submit hands an OpPushDone to the device's shard (the router's
	// Submit). Required.
	Submit func(storage.Op) error
	// Interval is the least time between two pushes to one device
	// ([S-19-4]). Default 30 s.
	Interval time.Duration
	// Workers is how many pushes are handed to providers at once. A
	// provider's round trip bounds each worker (at 50 ms, 20 pushes/s),
	// so throughput is about Workers / round trip; HTTP/2 carries them on
	// few connections. Default 64.
	Workers int
	// Queue bounds the devices with a push pending (waiting for their
	// time, for a worker, or being sent). Beyond it a job is dropped and
	// counted; its device stays owed on its shard. Default 100,000.
	Queue int
	// Attempts is the most attempts per push, the first included, before
	// it is reported failed (and tried again an Interval later). Default 4.
	Attempts int
	// AttemptTimeout bounds one attempt. Default 10 s.
	AttemptTimeout time.Duration
	// BackoffMin and BackoffMax bound the wait before a retry: the n-th
	// retry waits a random time up to min(BackoffMax, BackoffMin·2ⁿ⁻¹),
	// or the provider's Retry-After if longer (at most MaxRetryAfter).
	// Defaults 500 ms and 30 s.
	BackoffMin, BackoffMax time.Duration
	// MaxRetryAfter caps the wait a provider may ask for. Default 10
	// minutes.
	MaxRetryAfter time.Duration
	// Logger receives a line per push that failed or whose token was
	// refused, without credentials and with a token's first characters
	// only. nil discards them.
	Logger *slog.Logger
	// Clock is the source of time; nil means the time package's.
	Clock Clock
	// Rand returns a number in [0, 1) for jitter; it may be called from
	// several goroutines. nil means math/rand/v2.Float64.
	Rand func() float64
}

func (c *Config) setDefaults() {
	c.Interval = cmp.Or(c.Interval, DefaultInterval)
	c.Workers = cmp.Or(c.Workers, DefaultWorkers)
	c.Queue = cmp.Or(c.Queue, DefaultQueue)
	c.Attempts = cmp.Or(c.Attempts, DefaultAttempts)
	c.AttemptTimeout = cmp.Or(c.AttemptTimeout, DefaultAttemptTimeout)
	c.BackoffMin = cmp.Or(c.BackoffMin, DefaultBackoffMin)
	c.BackoffMax = cmp.Or(c.BackoffMax, DefaultBackoffMax)
	c.MaxRetryAfter = cmp.Or(c.MaxRetryAfter, DefaultMaxRetryAfter)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Clock == nil {
		c.Clock = clock.System{}
	}
	if c.Rand == nil {
		c.Rand = rand.Float64
	}
}

// validate reports every problem with c at once.
func (c *Config) validate() error {
	var errs []error
	if c.Submit == nil {
		errs = append(errs, errors.New("no submit"))
	}
	for _, v := range []struct {
		name string
		n    int
	}{{"workers", c.Workers}, {"queue", c.Queue}, {"attempts", c.Attempts}} {
		if v.n < 0 {
			errs = append(errs, fmt.Errorf("negative %s %d", v.name, v.n))
		}
	}
	for _, v := range []struct {
		name string
		d    time.Duration
	}{{"interval", c.Interval}, {"attempt timeout", c.AttemptTimeout}, {"minimum backoff", c.BackoffMin},
		{"maximum backoff", c.BackoffMax}, {"maximum retry-after", c.MaxRetryAfter}} {
		if v.d < 0 {
			errs = append(errs, fmt.Errorf("negative %s %v", v.name, v.d))
		}
	}
	if c.BackoffMax < c.BackoffMin {
		errs = append(errs, fmt.Errorf("maximum backoff %v below the minimum %v", c.BackoffMax, c.BackoffMin))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("push: config: %w", err)
	}
	return nil
}
