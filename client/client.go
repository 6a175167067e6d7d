package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
)

// Client is one logged-in device. New prepares it, Run connects and keeps
// it connected, Close stops it. Its methods are safe for concurrent use.
type Client struct {
	cfg    settings    // immutable
	creds  Credentials // immutable
	store  Store
	log    *slog.Logger
	dec    *codec.Decompressor
	ownDec bool       // dec was made by New and is closed by Close
	decEnd sync.Once  // closes dec once
	events chan Event // unbuffered; nil when cfg.OnEvent is set
	sec    *secure    // end-to-end encryption; nil on the plain path

	ctx     context.Context // cancelled by Close
	cancel  context.CancelFunc
	running atomic.Bool   // Run has been called
	runDone chan struct{} // closed when Run returns
	wg      sync.WaitGroup

	mu sync.Mutex // guards the fields below; see doc.go for the lock order

	// stopErr is non-nil once the client has stopped: ErrClosed, or the
	// fatal server error that ended Run.
	stopErr  error
	closed   bool     // Close was called
	runEnded bool     // Run has returned
	sess     *session // the current connection; nil between connections

	// The inbox stream. received ≥ delivered ≥ … and processed is the
	// cursor; all three only grow.
	received    uint64 // highest seq accepted for delivery: the dedupe mark
	delivered   uint64 // highest seq handed to the application
	processed   uint64 // highest seq the application is done with
	savedCursor uint64 // cursor last written to the store

	// The outbox.
	lastCMID uint64
	outbox   map[uint64]*outgoing // every unanswered send, by cmid
	queue    []*outgoing          // sends to write on the current connection, in order
	waiting  int                  // sends waiting for their retry timer or new encryption (send_order.go)
	// sealing: a send queued unencrypted is being encrypted (send_seal.go);
	// sealAfter: the next attempt waits until then.
	sealing   bool
	sealAfter time.Time

	// Requests (Read, Lookup) waiting to be written; written ones are in
	// session.reqs.
	nextRID  uint32
	requests []*request

	// subscribed is the user list of the last Subscribe call, nil before
	// the first; every new connection subscribes to it again.
	subscribed []uint64

	// Events not yet delivered, and whether a dispatcher goroutine runs.
	evq         []queued
	dispatching bool
	evClosed    bool // events has been closed
}

// New returns a Client for the device named by creds, keeping its state in
// store (nil means a new MemoryStore). If the store is empty, creds are
// saved in it; if it holds another device's state, New fails with
// ErrStoreMismatch. Sends found in the store are resent once Run connects;
// their outcome arrives as SendDone events. New does no network I/O.
func New(cfg Config, creds Credentials, store Store) (*Client, error) {
	st, err := cfg.resolve()
	if err != nil {
		return nil, err
	}
	if err := creds.validate(); err != nil {
		return nil, err
	}
	if store == nil {
		store = NewMemoryStore()
	}
	state, err := store.Load()
	if err != nil {
		return nil, fmt.Errorf("client: load state: %w", err)
	}
	switch have := state.Credentials; {
	case have.User == 0:
		if err := store.SaveCredentials(creds); err != nil {
			return nil, fmt.Errorf("client: save credentials: %w", err)
		}
	case have.User != creds.User || have.Device != creds.Device || !bytes.Equal(have.Secret, creds.Secret):
		return nil, fmt.Errorf("%w: store has user %d device %d, credentials name user %d device %d",
			ErrStoreMismatch, have.User, have.Device, creds.User, creds.Device)
	}
	c := &Client{
		cfg:         st,
		creds:       creds.clone(),
		store:       store,
		log:         st.Logger,
		dec:         st.Decompressor,
		runDone:     make(chan struct{}),
		received:    state.Cursor,
		delivered:   state.Cursor,
		processed:   state.Cursor,
		savedCursor: state.Cursor,
		lastCMID:    state.LastCMID,
		outbox:      make(map[uint64]*outgoing, len(state.Outbox)),
	}
	if c.dec == nil {
		if c.dec, err = codec.NewDecompressor(protocol.MaxFrameBody); err != nil {
			return nil, fmt.Errorf("client: %w", err)
		}
		c.ownDec = true
	}
	if st.OnEvent == nil {
		c.events = make(chan Event)
	}
	for _, o := range state.Outbox {
		c.lastCMID = max(c.lastCMID, o.CMID)
		c.outbox[o.CMID] = &outgoing{Outgoing: o, state: sendQueued}
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	if ks, ok := store.(KeyStore); ok && !st.Plain {
		if c.sec, err = newSecure(c, ks); err != nil {
			c.cancel()
			if c.ownDec {
				c.dec.Close()
			}
			return nil, err
		}
	}
	return c, nil
}

// Encrypted reports whether the client encrypts end to end (Config.Plain).
func (c *Client) Encrypted() bool { return c.sec != nil }

// User returns the user id the client logs in as.
func (c *Client) User() uint64 { return c.creds.User }

// Device returns the device id the client logs in as.
func (c *Client) Device() uint32 { return c.creds.Device }

// Events returns the channel on which events are delivered, in order, when
// Config.OnEvent is nil (otherwise it returns nil). The channel is
// unbuffered and the application must keep receiving: an entry is
// acknowledged only after it has been received (unless ManualAck), and
// events queue inside the client until they are. The channel is closed
// after Run has returned and the remaining events (such as Fatal) have
// been received, or when Close is called.
func (c *Client) Events() <-chan Event { return c.events }

// Run connects to the server, logs in and streams the inbox, reconnecting
// with backoff whenever the connection is lost, until ctx is done, Close is
// called, or the server says to stop (see Fatal); when it stops it first
// writes the Ack it was holding back, as Close does. It returns ctx.Err(),
// ErrClosed, or the fatal *ServerError. Run may be called once; when it
// returns the client has stopped and pending Send, MarkRead and Lookup
// calls fail (sends stay in the Store).
func (c *Client) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer close(c.runDone)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(c.ctx, cancel)
	defer stop()

	err := c.loop(ctx)

	c.mu.Lock()
	defer c.mu.Unlock()
	var se *ServerError
	fatal := errors.As(err, &se) && se.Fatal()
	switch {
	case c.closed:
		err = ErrClosed
	case fatal:
		c.enqueueLocked(queued{ev: Fatal{Err: err}})
	}
	stopErr := err
	if !fatal {
		stopErr = ErrClosed
	}
	c.stopLocked(stopErr)
	c.runEnded = true
	c.maybeCloseEventsLocked()
	return err
}

// loop runs connections until ctx is done or a fatal error.
func (c *Client) loop(ctx context.Context) error {
	failures := 0
	for {
		err, stable := c.runSession(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var se *ServerError
		if errors.As(err, &se) && se.Fatal() {
			c.log.Debug("client: stopping", "err", err)
			return err
		}
		if stable {
			failures = 0
		}
		delay := c.cfg.backoff(failures)
		if errors.As(err, &se) && se.RetryAfter > 0 {
			delay = c.cfg.serverDelay(se.RetryAfter)
		}
		failures++
		c.log.Debug("client: disconnected", "err", err, "retry_in", delay)
		c.mu.Lock()
		c.enqueueLocked(queued{ev: Disconnected{Err: err, RetryIn: delay}})
		c.mu.Unlock()
		if err := c.sleep(ctx, delay); err != nil {
			return err
		}
	}
}

// sleep waits d on the client's clock, or until ctx is done.
func (c *Client) sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	fired := make(chan struct{})
	stop := c.cfg.Clock.AfterFunc(d, func() { close(fired) })
	select {
	case <-fired:
		return nil
	case <-ctx.Done():
		stop()
		return ctx.Err()
	}
}

// Close stops the client: the connection writes a last Ack for the entries
// the application has processed (waiting at most a second), Run returns,
// pending calls fail with ErrClosed, undelivered events are dropped (their
// entries are not acknowledged, so the server delivers them again next
// time), and every goroutine of the client has exited when Close returns. Sends stay in the Store. Close does
// not close the Store. It is safe to call more than once, but not from
// Config.OnEvent or a SendAsync callback.
func (c *Client) Close() error {
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		c.stopLocked(ErrClosed)
		c.evq = nil
	}
	c.mu.Unlock()
	c.cancel()
	if c.running.Load() {
		<-c.runDone
	}
	c.wg.Wait()
	c.mu.Lock()
	c.maybeCloseEventsLocked()
	c.mu.Unlock()
	if c.ownDec {
		c.decEnd.Do(c.dec.Close)
	}
	return nil
}

// stopLocked marks the client stopped with err, failing every pending
// operation. The first call wins.
func (c *Client) stopLocked(err error) {
	if c.stopErr != nil {
		return
	}
	c.stopErr = err
	for _, o := range c.outbox {
		c.stopRetryLocked(o)
		if o.wait != nil || o.done != nil {
			c.completeSendLocked(o, Sent{CMID: o.CMID}, err)
		}
	}
	c.queue = nil
	for _, r := range slices.Clone(c.requests) {
		c.completeRequestLocked(r, requestResult{err: err})
	}
}

// Ack tells the client that the application is done with every inbox
// entry up to seq, so the server may forget them. It is needed only with
// Config.ManualAck; otherwise entries are acknowledged once delivered.
// seq beyond the last delivered entry is clamped to it. The Ack frame is
// coalesced like automatic ones.
func (c *Client) Ack(seq uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	seq = min(seq, c.delivered)
	if seq <= c.processed {
		return
	}
	c.processed = seq
	if s := c.sess; s != nil {
		c.ackLocked(s)
	}
}
