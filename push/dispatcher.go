package push

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parley-im/parley/protocol/pb"
	"github.com/parley-im/parley/storage"
)

// Stats are a Dispatcher's counters since New. The maps are keyed by
// provider name ("apns", "fcm", "webhook"), each configured one present.
type Stats struct {
	Sent          map[string]uint64 // pushes the provider took
	Failed        map[string]uint64 // pushes given up on after every attempt, or refused (rejected)
	TokensInvalid map[string]uint64 // pushes whose token the provider refused ([S-19-2])
	Retries       uint64            // attempts after a first one
	Dropped       uint64            // jobs not taken: Queue devices were pending
	Pending       int               // devices with a push pending now
	InFlight      int               // pushes being sent now
}

// Dispatcher sends the pushes the shards decide; it implements
// storage.Pusher. See the package doc.
type Dispatcher struct {
	cfg       Config
	log       *slog.Logger
	providers [4]Provider // by pb.PushProvider
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	idBase    string

	mu      sync.Mutex
	pending map[deviceKey]*pendingPush // guarded by mu
	work    chan deviceKey             // sent to under mu only; closed by Close
	closed  bool                       // guarded by mu

	ids      atomic.Uint64
	sent     [4]atomic.Uint64
	failed   [4]atomic.Uint64
	invalid  [4]atomic.Uint64
	retries  atomic.Uint64
	dropped  atomic.Uint64
	inFlight atomic.Int64
}

// deviceKey names one device.
type deviceKey struct {
	user   uint64
	device uint32
}

// pendingPush is one device's push, from PushDue to its report.
type pendingPush struct {
	job     storage.PushJob
	id      string
	state   pushState
	attempt int         // attempts made
	stop    func() bool // the timer of a waiting push
}

type pushState uint8

const (
	stateWaiting pushState = iota // for its time or its retry
	stateQueued                   // for a worker
	stateSending                  // a worker has it
)

var _ storage.Pusher = (*Dispatcher)(nil)

// New returns a Dispatcher with its workers started. Close stops them.
func New(cfg Config) (*Dispatcher, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &Dispatcher{
		cfg:     cfg,
		log:     cfg.Logger,
		ctx:     ctx,
		cancel:  cancel,
		idBase:  strconv.FormatInt(cfg.Clock.Now().UnixNano(), 36),
		pending: make(map[deviceKey]*pendingPush),
		work:    make(chan deviceKey, cfg.Queue),
	}
	d.providers[pb.PushProvider_PUSH_APNS] = cfg.APNs
	d.providers[pb.PushProvider_PUSH_FCM] = cfg.FCM
	d.providers[pb.PushProvider_PUSH_WEBHOOK] = cfg.Webhook
	d.wg.Add(cfg.Workers)
	for range cfg.Workers {
		go d.worker()
	}
	return d, nil
}

// provider returns the provider of p, or nil.
func (d *Dispatcher) provider(p pb.PushProvider) Provider {
	if p <= 0 || int(p) >= len(d.providers) {
		return nil
	}
	return d.providers[p]
}

// Offers implements storage.Pusher.
func (d *Dispatcher) Offers(p pb.PushProvider) bool { return d.provider(p) != nil }

// PushDue implements storage.Pusher: it keeps j until j.NotBefore, then
// sends it. A job for a device whose push waits replaces it; one for a
// device whose push is being sent is dropped (the shard hands it back
// once that push is reported).
func (d *Dispatcher) PushDue(j storage.PushJob) {
	k := deviceKey{j.User, j.Device}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	if p := d.pending[k]; p != nil {
		if p.state == stateSending {
			return
		}
		moved := !j.NotBefore.Equal(p.job.NotBefore)
		p.job = j
		if p.state == stateWaiting && moved && p.stop() {
			d.scheduleLocked(k, p, j.NotBefore.Sub(d.cfg.Clock.Now()))
		}
		return
	}
	if len(d.pending) >= d.cfg.Queue {
		d.dropped.Add(1)
		return
	}
	p := &pendingPush{job: j, id: d.idBase + "-" + strconv.FormatUint(d.ids.Add(1), 36)}
	d.pending[k] = p
	d.scheduleLocked(k, p, j.NotBefore.Sub(d.cfg.Clock.Now()))
}

// PushCancel implements storage.Pusher. A push being sent goes on; its
// report finds nothing owed.
func (d *Dispatcher) PushCancel(user uint64, device uint32) {
	k := deviceKey{user, device}
	d.mu.Lock()
	defer d.mu.Unlock()
	p := d.pending[k]
	if p == nil || p.state == stateSending {
		return
	}
	if p.state == stateWaiting {
		p.stop()
	}
	delete(d.pending, k) // a queued one: the worker finds nothing
}

// scheduleLocked queues p for a worker after delay (at once when it is not
// positive). d.mu must be held.
func (d *Dispatcher) scheduleLocked(k deviceKey, p *pendingPush, delay time.Duration) {
	if delay <= 0 {
		p.state = stateQueued
		d.work <- k // never blocks: the channel holds Queue keys, pending at most Queue
		return
	}
	p.state = stateWaiting
	p.stop = d.cfg.Clock.AfterFunc(delay, func() { d.fire(k, p) })
}

// fire queues a waiting push whose time has come.
func (d *Dispatcher) fire(k deviceKey, p *pendingPush) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed || d.pending[k] != p || p.state != stateWaiting {
		return
	}
	p.state = stateQueued
	d.work <- k
}

// worker sends queued pushes until Close.
func (d *Dispatcher) worker() {
	defer d.wg.Done()
	for k := range d.work {
		d.mu.Lock()
		p := d.pending[k]
		if p == nil || p.state != stateQueued {
			d.mu.Unlock()
			continue
		}
		p.state = stateSending
		p.attempt++
		j, id, attempt := p.job, p.id, p.attempt
		d.mu.Unlock()
		d.inFlight.Add(1)
		d.attempt(k, p, j, id, attempt)
		d.inFlight.Add(-1)
	}
}

// attempt makes one attempt at p and settles what follows.
func (d *Dispatcher) attempt(k deviceKey, p *pendingPush, j storage.PushJob, id string, attempt int) {
	prov := d.provider(j.Provider)
	if prov == nil {
		d.log.Error("push for a provider this node does not offer", "provider", j.Provider, "user", j.User, "device", j.Device)
		d.finish(k, p, j, storage.PushFailed)
		return
	}
	ctx, cancel := context.WithTimeout(d.ctx, d.cfg.AttemptTimeout)
	err := prov.Send(ctx, Notification{ID: id, Token: j.Token, Count: j.Count, ShowSender: j.ShowSender, Sender: j.Sender, Group: j.Group})
	cancel()
	if err == nil {
		d.sent[j.Provider].Add(1)
		d.finish(k, p, j, storage.PushSent)
		return
	}
	if d.ctx.Err() != nil {
		d.forget(k, p) // closing: the shard replays what it is owed at its next start
		return
	}
	var pe *Error
	isPE := errors.As(err, &pe)
	switch {
	case isPE && pe.Class == ClassInvalidToken:
		d.invalid[j.Provider].Add(1)
		d.log.Info("push token refused by the provider", "provider", prov.Name(), "user", j.User, "device", j.Device,
			"token", tokenPrefix(j.Token), "status", pe.Status, "reason", pe.Reason)
		d.finish(k, p, j, storage.PushTokenInvalid)
		return
	case isPE && pe.Class == ClassRejected:
		d.failed[j.Provider].Add(1)
		d.log.Error("push refused: check the provider's configuration", "provider", prov.Name(), "status", pe.Status, "reason", pe.Reason)
		d.finish(k, p, j, storage.PushFailed)
		return
	}
	if attempt >= d.cfg.Attempts {
		d.failed[j.Provider].Add(1)
		d.log.Warn("push failed after every attempt", "provider", prov.Name(), "user", j.User, "device", j.Device, "attempts", attempt, "err", err)
		d.finish(k, p, j, storage.PushFailed)
		return
	}
	delay := d.backoff(attempt)
	if isPE && pe.RetryAfter > delay {
		delay = min(pe.RetryAfter, d.cfg.MaxRetryAfter)
	}
	d.retries.Add(1)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed || d.pending[k] != p {
		return
	}
	d.scheduleLocked(k, p, delay)
}

// backoff returns the wait before retry n (1 for the first): full jitter
// up to min(BackoffMax, BackoffMin·2ⁿ⁻¹), at least a millisecond.
func (d *Dispatcher) backoff(n int) time.Duration {
	ceiling := d.cfg.BackoffMin << min(n-1, 30)
	if ceiling > d.cfg.BackoffMax || ceiling <= 0 {
		ceiling = d.cfg.BackoffMax
	}
	return max(time.Duration(d.cfg.Rand()*float64(ceiling)), time.Millisecond)
}

// finish ends p and reports its outcome to the device's shard, with the
// end of the device's interval.
func (d *Dispatcher) finish(k deviceKey, p *pendingPush, j storage.PushJob, outcome storage.PushOutcome) {
	d.forget(k, p)
	next := d.cfg.Clock.Now().Add(d.cfg.Interval)
	err := d.cfg.Submit(storage.Op{Kind: storage.OpPushDone, User: j.User, Device: j.Device, Push: &storage.PushOp{
		Token: j.Token, Sent: j.Count, NextMS: uint64(next.UnixMilli()), Outcome: outcome,
	}})
	if err != nil {
		// The shard keeps the push owed and hands it over at its next start.
		d.log.Warn("push report not taken by the shard", "user", j.User, "device", j.Device, "err", err)
	}
}

// forget drops p from the pending pushes.
func (d *Dispatcher) forget(k deviceKey, p *pendingPush) {
	d.mu.Lock()
	if d.pending[k] == p {
		delete(d.pending, k)
	}
	d.mu.Unlock()
}

// Stats returns the Dispatcher's counters. Any goroutine may call it.
func (d *Dispatcher) Stats() Stats {
	st := Stats{Sent: map[string]uint64{}, Failed: map[string]uint64{}, TokensInvalid: map[string]uint64{},
		Retries: d.retries.Load(), Dropped: d.dropped.Load(), InFlight: int(d.inFlight.Load())}
	for i, p := range d.providers {
		if p != nil {
			st.Sent[p.Name()] = d.sent[i].Load()
			st.Failed[p.Name()] = d.failed[i].Load()
			st.TokensInvalid[p.Name()] = d.invalid[i].Load()
		}
	}
	d.mu.Lock()
	st.Pending = len(d.pending)
	d.mu.Unlock()
	return st
}

// Providers returns the names of the providers the Dispatcher offers.
func (d *Dispatcher) Providers() []string {
	var names []string
	for _, p := range d.providers {
		if p != nil {
			names = append(names, p.Name())
		}
	}
	return names
}

// Close stops the Dispatcher: waiting pushes are dropped (their shards
// hand them over again at their next start), sends in progress are
// cancelled, and the workers exit before Close returns. Later calls do
// nothing.
func (d *Dispatcher) Close() {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return
	}
	d.closed = true
	for k, p := range d.pending {
		if p.state == stateWaiting {
			p.stop()
		}
		delete(d.pending, k)
	}
	close(d.work)
	d.mu.Unlock()
	d.cancel()
	d.wg.Wait()
}
