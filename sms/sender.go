package sms

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parley-im/parley/storage"
)

// Errors a Sender reports to done.
var (
	// ErrQueueFull: Config.Queue messages were waiting for a worker.
	ErrQueueFull = errors.New("sms: queue full")
	// ErrClosed: the Sender was closed before the message went out.
	ErrClosed = errors.New("sms: sender closed")
	// ErrTimeout: the message's Deadline passed, or its last attempt
	// timed out.
	ErrTimeout = errors.New("sms: gateway did not answer in time")
)

// Reasons a message failed, as Stats.Failed counts them.
const (
	ReasonRefused     = "refused"     // the gateway refused the number
	ReasonRejected    = "rejected"    // the gateway refused our request: configuration
	ReasonUnavailable = "unavailable" // throttled, server or network errors, to the last attempt
	ReasonTimeout     = "timeout"     // no answer within the deadline
	ReasonQueueFull   = "queue_full"  // refused at once: the queue was full
	ReasonClosed      = "closed"      // the Sender closed first
)

var reasons = [...]string{ReasonRefused, ReasonRejected, ReasonUnavailable, ReasonTimeout, ReasonQueueFull, ReasonClosed}

// Stats are a Sender's counters since New.
type Stats struct {
	Sent    uint64 // messages the gateway took
	Retries uint64 // attempts after a first one
	// Failed counts the messages not taken, by reason (the Reason
	// constants; every reason is present).
	Failed   map[string]uint64
	Queued   int // messages waiting for a worker now
	InFlight int // messages a worker is on now
}

// Sender sends verification codes through a Gateway; it implements
// storage.CodeSender. See the package doc.
type Sender struct {
	cfg    Config
	log    *slog.Logger
	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	queue  chan *job
	wg     sync.WaitGroup
	idBase string

	mu     sync.Mutex
	closed bool // guarded by mu

	ids      atomic.Uint64
	sent     atomic.Uint64
	retries  atomic.Uint64
	failed   [len(reasons)]atomic.Uint64 // by index in reasons
	inFlight atomic.Int64
}

// job is one message and whom to tell what became of it.
type job struct {
	m        Message
	done     func(error)
	deadline time.Time
}

// New returns a Sender with its workers started. Close stops them.
func New(cfg Config) (*Sender, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Sender{
		cfg:    cfg,
		log:    cfg.Logger.With("gateway", cfg.Gateway.Name()),
		ctx:    ctx,
		cancel: cancel,
		queue:  make(chan *job, cfg.Queue),
		idBase: strconv.FormatInt(cfg.Clock.Now().UnixNano(), 36),
	}
	s.wg.Add(cfg.Workers)
	for range cfg.Workers {
		go s.work()
	}
	return s, nil
}

// SendCode implements storage.CodeSender: it queues code for phone and
// returns at once. done is called exactly once: nil when the gateway took
// the message; an error wrapping storage.ErrCodeUndeliverable when the
// gateway refused the number; another error otherwise (ErrQueueFull,
// ErrClosed, ErrTimeout, a *GatewayError, a network error).
func (s *Sender) SendCode(phone, code string, done func(error)) {
	j := &job{
		m: Message{
			Phone: phone,
			Code:  code,
			Text:  strings.ReplaceAll(s.cfg.Text, CodePlaceholder, code),
			ID:    s.idBase + "-" + strconv.FormatUint(s.ids.Add(1), 36),
		},
		done:     done,
		deadline: s.cfg.Clock.Now().Add(s.cfg.Deadline),
	}
	s.mu.Lock()
	closed := s.closed
	queued := false
	if !closed {
		select {
		case s.queue <- j:
			queued = true
		default:
		}
	}
	s.mu.Unlock()
	switch {
	case closed:
		s.fail(j, ReasonClosed, ErrClosed, 0)
	case !queued:
		s.fail(j, ReasonQueueFull, ErrQueueFull, 0)
	}
}

// Close stops taking messages, ends the attempts in progress and reports
// every message not yet taken as failed (ErrClosed), then waits for the
// workers to exit. Later calls do nothing.
func (s *Sender) Close() {
	s.mu.Lock()
	already := s.closed
	s.closed = true
	s.mu.Unlock()
	if already {
		return
	}
	s.cancel()
	s.wg.Wait()
	for {
		select {
		case j := <-s.queue:
			s.fail(j, ReasonClosed, ErrClosed, 0)
		default:
			return
		}
	}
}

// Stats returns the Sender's counters. It may be called from any
// goroutine.
func (s *Sender) Stats() Stats {
	st := Stats{
		Sent:     s.sent.Load(),
		Retries:  s.retries.Load(),
		Failed:   make(map[string]uint64, len(reasons)),
		Queued:   len(s.queue),
		InFlight: int(s.inFlight.Load()),
	}
	for i, r := range reasons {
		st.Failed[r] = s.failed[i].Load()
	}
	return st
}

// work is a worker: it delivers queued messages until Close.
func (s *Sender) work() {
	defer s.wg.Done()
	for {
		select {
		case <-s.ctx.Done():
			return
		case j := <-s.queue:
			s.inFlight.Add(1)
			s.deliver(j)
			s.inFlight.Add(-1)
		}
	}
}

// deliver makes the attempts for j and reports the outcome.
func (s *Sender) deliver(j *job) {
	for n := 1; ; n++ {
		if s.ctx.Err() != nil {
			s.fail(j, ReasonClosed, ErrClosed, n-1)
			return
		}
		left := j.deadline.Sub(s.cfg.Clock.Now())
		if left <= 0 {
			s.fail(j, ReasonTimeout, ErrTimeout, n-1)
			return
		}
		err := s.attempt(j, min(s.cfg.AttemptTimeout, left))
		if err == nil {
			s.sent.Add(1)
			j.done(nil)
			return
		}
		var ge *GatewayError
		isGateway := errors.As(err, &ge)
		switch {
		case s.ctx.Err() != nil:
			s.fail(j, ReasonClosed, ErrClosed, n)
			return
		case isGateway && ge.Class == Refused:
			s.fail(j, ReasonRefused, fmt.Errorf("%w: %w", storage.ErrCodeUndeliverable, err), n)
			return
		case isGateway && ge.Class == Rejected:
			s.fail(j, ReasonRejected, err, n)
			return
		}
		reason := ReasonUnavailable
		if errors.Is(err, ErrTimeout) {
			reason = ReasonTimeout
		}
		if n >= s.cfg.Attempts {
			s.fail(j, reason, err, n)
			return
		}
		var retryAfter time.Duration
		if isGateway {
			retryAfter = ge.RetryAfter
		}
		wait := s.backoff(n, retryAfter)
		if !s.cfg.Clock.Now().Add(wait).Before(j.deadline) {
			s.fail(j, reason, err, n) // the next attempt could not finish in time
			return
		}
		s.retries.Add(1)
		s.log.Debug("sms: retrying", "phone", maskPhone(j.m.Phone), "attempt", n, "wait", wait, "err", err)
		if !s.sleep(wait) {
			s.fail(j, ReasonClosed, ErrClosed, n)
			return
		}
	}
}

// attempt makes one attempt within timeout.
func (s *Sender) attempt(j *job, timeout time.Duration) error {
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	var timedOut atomic.Bool
	stop := s.cfg.Clock.AfterFunc(timeout, func() {
		timedOut.Store(true)
		cancel()
	})
	err := s.cfg.Gateway.Send(ctx, j.m)
	stop()
	if err != nil && timedOut.Load() {
		return fmt.Errorf("%w (attempt timeout %v)", ErrTimeout, timeout)
	}
	return err
}

// backoff returns the wait before retry n (1 for the first retry): a
// random time up to min(BackoffMax, BackoffMin·2ⁿ⁻¹), or retryAfter if
// that is longer.
func (s *Sender) backoff(n int, retryAfter time.Duration) time.Duration {
	ceiling := s.cfg.BackoffMax
	if n-1 < 30 {
		ceiling = min(ceiling, s.cfg.BackoffMin<<(n-1))
	}
	wait := time.Duration(s.cfg.Rand() * float64(ceiling))
	return max(wait, retryAfter)
}

// sleep waits d on the Sender's clock; it reports false if Close came
// first.
func (s *Sender) sleep(d time.Duration) bool {
	if d <= 0 {
		return s.ctx.Err() == nil
	}
	fired := make(chan struct{})
	stop := s.cfg.Clock.AfterFunc(d, func() { close(fired) })
	select {
	case <-fired:
		return true
	case <-s.ctx.Done():
		stop()
		return false
	}
}

// fail counts, logs and reports a message not taken.
func (s *Sender) fail(j *job, reason string, err error, attempts int) {
	for i, r := range reasons {
		if r == reason {
			s.failed[i].Add(1)
		}
	}
	level := slog.LevelWarn
	msg := "sms: verification code not sent"
	if reason == ReasonRejected {
		level = slog.LevelError
		msg = "sms: the gateway rejected the request: check the gateway configuration"
	}
	s.log.Log(context.Background(), level, msg, "reason", reason, "phone", maskPhone(j.m.Phone), "attempts", attempts, "err", err)
	j.done(err)
}

// maskPhone hides the middle digits of a phone number in logs.
func maskPhone(p string) string {
	if len(p) <= 6 {
		return strings.Repeat("*", len(p))
	}
	return p[:3] + strings.Repeat("*", len(p)-5) + p[len(p)-2:]
}
