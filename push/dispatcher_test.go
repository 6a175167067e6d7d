package push_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/parley-im/parley/internal/pushtest"
	"github.com/parley-im/parley/protocol/pb"
	"github.com/parley-im/parley/push"
	"github.com/parley-im/parley/storage"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeProvider answers each Send with the next scripted result (nil when
// none is left) and records what it was sent.
type fakeProvider struct {
	mu      sync.Mutex
	results []error
	sent    []push.Notification
	block   chan struct{} // when set, Send waits for it (or ctx)
	called  chan struct{} // signalled on every Send
}

func newFakeProvider(results ...error) *fakeProvider {
	return &fakeProvider{results: results, called: make(chan struct{}, 1)}
}

func (p *fakeProvider) Name() string { return "apns" }

func (p *fakeProvider) Send(ctx context.Context, n push.Notification) error {
	p.mu.Lock()
	block := p.block
	p.sent = append(p.sent, n)
	var err error
	if len(p.results) > 0 {
		err, p.results = p.results[0], p.results[1:]
	}
	p.mu.Unlock()
	select {
	case p.called <- struct{}{}:
	default:
	}
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return err
}

func (p *fakeProvider) sends() []push.Notification {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]push.Notification(nil), p.sent...)
}

// reports collects the OpPushDone a Dispatcher submits.
type reports chan storage.Op

func (r reports) submit(op storage.Op) error {
	r <- op
	return nil
}

// next returns the next report, failing after a deadline.
func (r reports) next(t *testing.T) storage.Op {
	t.Helper()
	select {
	case op := <-r:
		return op
	case <-time.After(10 * time.Second):
		t.Fatal("no report within 10 s")
		return storage.Op{}
	}
}

// none proves that no report is waiting.
func (r reports) none(t *testing.T) {
	t.Helper()
	select {
	case op := <-r:
		t.Fatalf("unexpected report %+v", op.Push)
	default:
	}
}

func newDispatcher(t *testing.T, p push.Provider, clock *pushtest.Clock, tweak func(*push.Config)) (*push.Dispatcher, reports) {
	t.Helper()
	r := make(reports, 64)
	cfg := push.Config{APNs: p, Submit: r.submit, Clock: clock, Rand: func() float64 { return 1 }, Workers: 2}
	if tweak != nil {
		tweak(&cfg)
	}
	d, err := push.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d, r
}

func job(count uint64, notBefore time.Time) storage.PushJob {
	return storage.PushJob{User: 4101, Device: 1, Provider: pb.PushProvider_PUSH_APNS, Token: "tok", Count: count, NotBefore: notBefore}
}

// TestDispatchSendsAndReports: a job due now is sent and reported with the
// end of the device's interval; a job for later waits for its time, and a
// newer job replaces the one waiting (one push for both).
func TestDispatchSendsAndReports(t *testing.T) {
	clock := pushtest.NewClock()
	p := newFakeProvider()
	d, r := newDispatcher(t, p, clock, nil)

	d.PushDue(job(1, time.Time{}))
	op := r.next(t)
	if op.Kind != storage.OpPushDone || op.Push.Outcome != storage.PushSent || op.Push.Sent != 1 || op.Push.Token != "tok" ||
		op.Push.NextMS != uint64(clock.Now().Add(push.DefaultInterval).UnixMilli()) {
		t.Fatalf("report %+v, want sent 1 with the next time an interval on", op.Push)
	}

	later := clock.Now().Add(push.DefaultInterval)
	d.PushDue(job(2, later))
	d.PushDue(job(3, later))
	timers := len(clock.Pending())
	clock.Advance(push.DefaultInterval - time.Second)
	// A timer fires in its own goroutine (clock.Manual): one that fired
	// early might not have reported yet, but it is no longer pending.
	if n := len(clock.Pending()); n != timers {
		t.Fatalf("%d timers pending a second before the interval ends, want %d: one fired early", n, timers)
	}
	r.none(t)
	clock.Advance(time.Second)
	if op := r.next(t); op.Push.Sent != 3 {
		t.Fatalf("report %+v, want the newer job (3) sent", op.Push)
	}
	if sends := p.sends(); len(sends) != 2 || sends[1].Count != 3 {
		t.Fatalf("sends %+v, want two, the second with count 3", sends)
	}
	if st := d.Stats(); st.Sent["apns"] != 2 || st.Pending != 0 {
		t.Errorf("stats %+v, want 2 sent, none pending", st)
	}
}

// TestDispatchRetries: throttling and outages are retried, after the
// Retry-After the provider asks for when it is longer than the backoff;
// a refused token is reported at once; out of attempts, a failure.
func TestDispatchRetries(t *testing.T) {
	clock := pushtest.NewClock()
	p := newFakeProvider(
		&push.Error{Provider: "apns", Status: 429, Class: push.ClassThrottled, RetryAfter: 5 * time.Second},
		&push.Error{Provider: "apns", Status: 503, Class: push.ClassUnavailable},
	)
	d, r := newDispatcher(t, p, clock, func(c *push.Config) { c.Attempts = 3 })

	start := clock.Now()
	d.PushDue(job(1, time.Time{}))
	clock.WaitTimers(t, 1) // the retry
	if at := clock.NextAt(); !at.Equal(start.Add(5 * time.Second)) {
		t.Fatalf("retry at %v, want after the Retry-After of 5 s (%v)", at, start.Add(5*time.Second))
	}
	clock.Advance(5 * time.Second)
	clock.WaitTimers(t, 1)
	clock.Advance(push.DefaultBackoffMax)
	if op := r.next(t); op.Push.Outcome != storage.PushSent {
		t.Fatalf("report %+v, want sent on the third attempt", op.Push)
	}
	if st := d.Stats(); st.Retries != 2 {
		t.Errorf("retries %d, want 2", st.Retries)
	}

	p.mu.Lock()
	p.results = []error{&push.Error{Provider: "apns", Status: 410, Class: push.ClassInvalidToken}}
	p.mu.Unlock()
	d.PushDue(job(2, time.Time{}))
	if op := r.next(t); op.Push.Outcome != storage.PushTokenInvalid {
		t.Fatalf("report %+v, want token invalid", op.Push)
	}

	p.mu.Lock()
	down := &push.Error{Provider: "apns", Status: 503, Class: push.ClassUnavailable}
	p.results = []error{down, down, down}
	p.mu.Unlock()
	d.PushDue(job(3, time.Time{}))
	for i := 1; i <= 2; i++ {
		clock.WaitTimers(t, 1)
		clock.Advance(push.DefaultBackoffMax)
	}
	if op := r.next(t); op.Push.Outcome != storage.PushFailed {
		t.Fatalf("report %+v, want failed after 3 attempts", op.Push)
	}
	if st := d.Stats(); st.Failed["apns"] != 1 || st.TokensInvalid["apns"] != 1 {
		t.Errorf("stats %+v, want 1 failed, 1 token invalid", st)
	}
}

// TestDispatchCancelAndBound: a cancelled push is not sent; beyond Queue
// devices a job is dropped and counted; a job for a device being sent is
// dropped (its shard hands it back after the report).
func TestDispatchCancelAndBound(t *testing.T) {
	clock := pushtest.NewClock()
	p := newFakeProvider()
	d, r := newDispatcher(t, p, clock, func(c *push.Config) { c.Queue = 2 })

	later := clock.Now().Add(time.Minute)
	d.PushDue(job(1, later))
	d.PushCancel(4101, 1)
	for dev := uint32(2); dev <= 4; dev++ {
		j := job(1, later)
		j.Device = dev
		d.PushDue(j)
	}
	if st := d.Stats(); st.Pending != 2 || st.Dropped != 1 {
		t.Fatalf("stats %+v, want 2 pending, 1 dropped", st)
	}
	clock.Advance(time.Minute)
	for range 2 {
		if op := r.next(t); op.Device == 1 || op.Device == 4 {
			t.Fatalf("report for device %d, which was cancelled or dropped", op.Device)
		}
	}

	p.mu.Lock()
	p.block = make(chan struct{})
	p.mu.Unlock()
	d.PushDue(job(5, time.Time{}))
	waitSends(t, p, 3)
	d.PushDue(job(6, time.Time{})) // while 5 is being sent
	close(p.block)
	if op := r.next(t); op.Push.Sent != 5 {
		t.Fatalf("report %+v, want 5", op.Push)
	}
	r.none(t)
	if n := len(p.sends()); n != 3 {
		t.Fatalf("%d sends, want 3: the job that came during a send is the shard's to hand back", n)
	}
}

// TestDispatchCloseCancelsSends: Close ends a send in progress without a
// report (the shard replays what is owed at its next start).
func TestDispatchCloseCancelsSends(t *testing.T) {
	clock := pushtest.NewClock()
	p := newFakeProvider()
	p.block = make(chan struct{})
	d, r := newDispatcher(t, p, clock, nil)
	d.PushDue(job(1, time.Time{}))
	waitSends(t, p, 1)
	d.Close()
	r.none(t)
	d.PushDue(job(2, time.Time{})) // after Close: nothing
	r.none(t)
}

// waitSends waits until p was asked to send n pushes.
func waitSends(t *testing.T, p *fakeProvider, n int) {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for len(p.sends()) < n {
		select {
		case <-p.called:
		case <-deadline.C:
			t.Fatalf("%d sends within 10 s, want %d", len(p.sends()), n)
		}
	}
}
