package sms

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/parley-im/parley/internal/clock"
)

// MaxDeadline is the longest a Sender may work on one code: spec.md
// [S-9-16] promises the client its answer within 10 seconds.
const MaxDeadline = 10 * time.Second

// CodePlaceholder is replaced by the code in Config.Text.
const CodePlaceholder = "{code}"

// Defaults of Config.
const (
	DefaultText           = "Your Parley code is " + CodePlaceholder
	DefaultWorkers        = 16
	DefaultQueue          = 1024
	DefaultAttempts       = 3
	DefaultAttemptTimeout = 3 * time.Second
	DefaultDeadline       = 8 * time.Second
	DefaultBackoffMin     = 250 * time.Millisecond
	DefaultBackoffMax     = 2 * time.Second
)

// Clock is a source of time (package internal/clock). Tests implement
// it to drive timeouts and backoff without sleeping.
type Clock = clock.Clock

// Config configures a Sender. The zero value of each optional field means
// its default.
type Config struct {
	// Gateway receives the messages: a *Twilio or a *Webhook. Required.
	Gateway Gateway
	// Text is the message, with CodePlaceholder where the code goes (at
	// least once). Default DefaultText.
	Text string
	// Workers is how many messages are handed to the gateway at once.
	// Default 16.
	Workers int
	// Queue is how many messages may wait for a worker; SendCode refuses
	// more at once (CODE_DELIVERY_FAILED). Default 1024.
	Queue int
	// Attempts is the most attempts per message, the first included.
	// Default 3.
	Attempts int
	// AttemptTimeout bounds one attempt (connection, request and answer).
	// Default 3 s.
	AttemptTimeout time.Duration
	// Deadline bounds all the work on one message from SendCode on, its
	// wait in the queue included; at most MaxDeadline. Default 8 s.
	Deadline time.Duration
	// BackoffMin and BackoffMax bound the wait before a retry: the n-th
	// retry waits a random time up to min(BackoffMax, BackoffMin·2ⁿ⁻¹)
	// ("full jitter"), or the gateway's Retry-After if longer. Defaults
	// 250 ms and 2 s.
	BackoffMin, BackoffMax time.Duration
	// Logger receives one line per message that failed and per retry,
	// without the code, the text or any credential. nil discards them.
	Logger *slog.Logger
	// Clock is the source of time; nil means the time package's.
	Clock Clock
	// Rand returns a number in [0, 1) for jitter; it may be called from
	// several goroutines. nil means math/rand/v2.Float64.
	Rand func() float64
}

func (c *Config) setDefaults() {
	if c.Text == "" {
		c.Text = DefaultText
	}
	c.Workers = cmp.Or(c.Workers, DefaultWorkers)
	c.Queue = cmp.Or(c.Queue, DefaultQueue)
	c.Attempts = cmp.Or(c.Attempts, DefaultAttempts)
	c.AttemptTimeout = cmp.Or(c.AttemptTimeout, DefaultAttemptTimeout)
	c.Deadline = cmp.Or(c.Deadline, DefaultDeadline)
	c.BackoffMin = cmp.Or(c.BackoffMin, DefaultBackoffMin)
	c.BackoffMax = cmp.Or(c.BackoffMax, DefaultBackoffMax)
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
	if c.Gateway == nil {
		errs = append(errs, errors.New("no gateway"))
	}
	if !strings.Contains(c.Text, CodePlaceholder) {
		errs = append(errs, fmt.Errorf("message text %q has no %s", c.Text, CodePlaceholder))
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
	}{{"attempt timeout", c.AttemptTimeout}, {"deadline", c.Deadline}, {"minimum backoff", c.BackoffMin}, {"maximum backoff", c.BackoffMax}} {
		if v.d < 0 {
			errs = append(errs, fmt.Errorf("negative %s %v", v.name, v.d))
		}
	}
	if c.Deadline > MaxDeadline {
		errs = append(errs, fmt.Errorf("deadline %v above %v (spec.md [S-9-16])", c.Deadline, MaxDeadline))
	}
	if c.BackoffMax < c.BackoffMin {
		errs = append(errs, fmt.Errorf("maximum backoff %v below the minimum %v", c.BackoffMax, c.BackoffMin))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("sms: config: %w", err)
	}
	return nil
}
