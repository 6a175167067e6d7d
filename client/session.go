package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// session is one connection. Its reader is the Run goroutine; its writer
// is a goroutine started on demand (writeLoop) that exits when there is
// nothing to write. Fields below mu are guarded by Client.mu.
type session struct {
	conn  net.Conn  // TLS or plain; read by Run, written by the writer
	raw   net.Conn  // the TCP connection under conn; closing it stops both
	start time.Time // on the client's clock
	wg    sync.WaitGroup

	// lastRead is when bytes last arrived, as an offset from start on the
	// client's clock. Updated by every Read, so it is atomic.
	lastRead atomic.Int64

	wbuf []byte // owned by the writer goroutine

	// drained is closed when a draining session has written its last Ack,
	// or when the session ends.
	drained chan struct{}

	// Guarded by Client.mu.
	closed       bool
	err          error // why the session ended; the first cause wins
	draining     bool  // the client is stopping: write the last Ack, nothing else
	drainedShut  bool  // drained is closed
	loginWritten bool
	loggedIn     bool      // LoginOk received
	loggedInAt   time.Time // when LoginOk arrived
	pipelined    int       // bytes written after Login before LoginOk
	goAway       error     // the GoAway received, if any: the session ends with it
	pingEvery    time.Duration
	pongTimeout  time.Duration
	window       int
	writing      bool // a writer goroutine is running
	lastWrite    time.Time
	pingOut      bool // a Ping awaits its Pong
	pingAt       time.Time
	recvHigh     uint64   // highest entry seq received on this connection
	ackSent      uint64   // highest Ack written
	unacked      []uint64 // seqs received above ackSent, in order: what the server counts against the window
	flushAt      uint64   // ack without delay once the cursor reaches this
	ackNow       bool     // write an Ack at the next opportunity
	ackDue       time.Time
	inflight     int                 // sends and requests written and not answered
	reqs         map[uint32]*request // requests written and not answered, by rid
	timerStop    func() bool         // the writer's wake-up timer
	timerAt      time.Time
	timerGen     uint64
}

// activityReader records when bytes arrive, for dead-connection
// detection.
type activityReader struct {
	c *Client
	s *session
}

func (r activityReader) Read(p []byte) (int, error) {
	n, err := r.s.conn.Read(p)
	if n > 0 {
		r.s.lastRead.Store(int64(r.c.cfg.Clock.Now().Sub(r.s.start)))
	}
	return n, err
}

// lastReadTime returns when bytes last arrived on s.
func (s *session) lastReadTime() time.Time {
	return s.start.Add(time.Duration(s.lastRead.Load()))
}

// runSession makes one connection and serves it until it ends. It returns
// why it ended and whether it stayed logged in for BackoffMax, which resets
// the backoff ([S-6-13]).
func (c *Client) runSession(ctx context.Context) (err error, stable bool) {
	dctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	conn, raw, err := c.cfg.dial(dctx)
	cancel()
	if err != nil {
		return err, false
	}
	s := &session{conn: conn, raw: raw, start: c.cfg.Clock.Now(), reqs: make(map[uint32]*request), drained: make(chan struct{})}
	s.lastWrite = s.start

	c.mu.Lock()
	if c.stopErr != nil {
		c.mu.Unlock()
		_ = raw.Close()
		return c.stopErr, false
	}
	c.startSessionLocked(s)
	c.mu.Unlock()

	stop := context.AfterFunc(ctx, func() { c.drain(s, ctx.Err()) })
	_ = conn.SetReadDeadline(time.Now().Add(c.cfg.DialTimeout))
	r := codec.NewReader(activityReader{c, s}, protocol.MaxFrameBody, c.dec)
	for {
		f, err := r.ReadFrame()
		if err != nil {
			if errors.Is(err, codec.ErrMalformed) || errors.Is(err, codec.ErrTooLarge) {
				err = fmt.Errorf("%w: %w", ErrProtocol, err)
			} else if err == io.EOF {
				err = fmt.Errorf("client: connection closed by server: %w", err)
			} else {
				err = fmt.Errorf("client: read: %w", err)
			}
			c.fail(s, err)
			break
		}
		if err := c.handleFrame(s, f, false); err != nil {
			c.fail(s, err)
			break
		}
	}
	stop()
	s.wg.Wait() // the writer has exited
	c.endSession(s)
	c.mu.Lock()
	defer c.mu.Unlock()
	err = s.err
	var se *ServerError
	if s.goAway != nil && !errors.As(err, &se) && ctx.Err() == nil {
		err = s.goAway // the server closed after GoAway, as announced
	}
	stable = s.loggedIn && c.cfg.Clock.Now().Sub(s.loggedInAt) >= c.cfg.BackoffMax
	return err, stable
}

// startSessionLocked makes s the current session and starts its writer,
// which writes Login and then, pipelined, every unanswered send (up to
// MaxInFlight) and pending request.
func (c *Client) startSessionLocked(s *session) {
	c.sess = s
	c.queue = c.queue[:0]
	for _, o := range c.outbox {
		if o.state == sendQueued {
			c.queue = append(c.queue, o)
		}
	}
	sortByCMID(c.queue)
	c.kickLocked(s)
}

// fail ends session s with err unless it has already ended. It closes the
// TCP connection, which stops the reader and any blocked write.
func (c *Client) fail(s *session, err error) {
	c.mu.Lock()
	if s.closed {
		c.mu.Unlock()
		return
	}
	s.closed = true
	s.err = err
	if s.timerStop != nil {
		s.timerStop()
		s.timerStop = nil
	}
	s.shutDrainedLocked()
	c.mu.Unlock()
	_ = s.raw.Close()
}

// drainTimeout bounds how long a stopping client waits for its last Ack
// to be written.
const drainTimeout = time.Second

// drain ends session s because the client is stopping, after writing an
// Ack for what the application has processed, so the server does not
// deliver it again next time. It waits at most drainTimeout.
func (c *Client) drain(s *session, err error) {
	c.mu.Lock()
	if s.closed {
		c.mu.Unlock()
		return
	}
	s.draining, s.ackNow = true, true
	c.kickLocked(s) // a running writer sees draining on its next pass
	c.mu.Unlock()
	t := time.NewTimer(min(drainTimeout, c.cfg.WriteTimeout))
	select {
	case <-s.drained:
	case <-t.C:
	}
	t.Stop()
	c.fail(s, err)
}

// shutDrainedLocked closes s.drained once.
func (s *session) shutDrainedLocked() {
	if !s.drainedShut {
		s.drainedShut = true
		close(s.drained)
	}
}

// endSession detaches the ended session s: its unanswered sends and
// requests go back to the queue for the next connection.
func (c *Client) endSession(s *session) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess == s {
		c.sess = nil
	}
	for _, o := range c.outbox {
		if o.state == sendInFlight && o.sess == s {
			o.state, o.sess = sendQueued, nil
		}
	}
	c.queue = c.queue[:0]
	for rid, r := range s.reqs {
		r.rid, r.sess, r.state = 0, nil, requestQueued
		delete(s.reqs, rid)
	}
}

// handleFrame applies one frame from the server. inBatch is true for the
// frames inside a Batch. A returned error ends the session.
func (c *Client) handleFrame(s *session, f codec.Frame, inBatch bool) error {
	// Only this goroutine (the reader) writes s.loggedIn, so it may read
	// it without the lock.
	if !s.loggedIn {
		switch f.Kind {
		case protocol.KindLoginOK, protocol.KindError, protocol.KindGoAway, protocol.KindPong:
		default:
			return fmt.Errorf("%w: %v before LoginOk", ErrProtocol, f.Kind)
		}
	}
	switch f.Kind {
	case protocol.KindLoginOK:
		return c.handleLoginOK(s, f.Body)
	case protocol.KindMessage:
		m, err := codec.ParseMessage(f.Body)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		return c.handleEntry(s, m.Seq, Message{
			Seq: m.Seq, ID: m.ID, Time: protocol.MessageTime(m.ID), From: m.From,
			FromDevice: m.FromDevice, Body: append([]byte(nil), m.Body...), Type: m.Type,
		})
	case protocol.KindReceipt:
		r, err := codec.ParseReceipt(f.Body)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		var ev Event = Receipt{Seq: r.Seq, Peer: r.Peer, Type: r.Type, UpTo: r.UpTo}
		if _, known := pb.ReceiptType_name[int32(r.Type)]; !known {
			ev = nil // acknowledged and otherwise ignored ([S-12-5])
		}
		return c.handleEntry(s, r.Seq, ev)
	case protocol.KindBatch:
		if inBatch {
			return fmt.Errorf("%w: nested batch", ErrProtocol)
		}
		return c.handleBatch(s, f.Body)
	case protocol.KindSynced:
		var m pb.Synced
		if err := codec.ParseProto(f.Body, &m); err != nil {
			return fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		c.mu.Lock()
		s.flushAt = max(s.flushAt, s.recvHigh)
		c.enqueueLocked(queued{ev: Synced{Seq: m.Seq}})
		c.ackLocked(s)
		c.mu.Unlock()
		return nil
	case protocol.KindSent:
		var m pb.Sent
		if err := codec.ParseProto(f.Body, &m); err != nil {
			return fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		c.handleSent(s, m.Cmid, m.Id)
		return nil
	case protocol.KindError:
		var m pb.Error
		if err := codec.ParseProto(f.Body, &m); err != nil {
			return fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		return c.handleError(s, &m)
	case protocol.KindGoAway:
		var m pb.GoAway
		if err := codec.ParseProto(f.Body, &m); err != nil {
			return fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		se := &ServerError{Code: m.Code, GoAway: true, RetryAfter: time.Duration(m.ReconnectAfterMs) * time.Millisecond}
		if se.Fatal() {
			return se
		}
		// The server sends what it has queued, then closes; those frames
		// count ([S-6-10]). Stop writing anything but acks, and stop waiting
		// if the close does not come.
		c.mu.Lock()
		s.goAway = se
		c.mu.Unlock()
		_ = s.conn.SetReadDeadline(time.Now().Add(c.cfg.DialTimeout))
		return nil
	case protocol.KindPong:
		c.mu.Lock()
		s.pingOut = false
		c.armLocked(s, c.cfg.Clock.Now()) // the next Ping is due sooner than the Pong deadline
		c.mu.Unlock()
		return nil
	case protocol.KindOK:
		var m pb.Ok
		if err := codec.ParseProto(f.Body, &m); err != nil {
			return fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		c.handleReply(s, m.Rid, requestResult{})
		return nil
	case protocol.KindLookupResult:
		var m pb.LookupResult
		if err := codec.ParseProto(f.Body, &m); err != nil {
			return fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		contacts := make([]Contact, len(m.Contacts))
		for i, ct := range m.Contacts {
			contacts[i] = Contact{Phone: ct.Phone, User: ct.User}
		}
		c.handleReply(s, m.Rid, requestResult{contacts: contacts})
		return nil
	}
	// A kind this version does not know, or one that makes no sense here
	// (CODE_SENT after Login): a newer server may send more; ignore it.
	c.log.Debug("client: ignoring frame", "kind", f.Kind)
	return nil
}

// handleLoginOK starts the authenticated phase.
func (c *Client) handleLoginOK(s *session, body []byte) error {
	var m pb.LoginOk
	if err := codec.ParseProto(body, &m); err != nil {
		return fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	_ = s.conn.SetReadDeadline(time.Time{}) // liveness is the writer's job now
	heartbeat := time.Duration(m.HeartbeatS) * time.Second
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.loggedIn {
		return fmt.Errorf("%w: second LoginOk", ErrProtocol)
	}
	s.loggedIn = true
	s.loggedInAt = c.cfg.Clock.Now()
	s.window = int(m.Window)
	if s.window <= 0 {
		s.window = defaultWindow
	}
	s.pingEvery, s.pongTimeout = c.cfg.PingInterval, c.cfg.PongTimeout
	if heartbeat > 0 { // [S-6-8]
		if limit := heartbeat * 3 / 4; s.pingEvery == 0 || s.pingEvery > limit {
			s.pingEvery = limit
		}
		if s.pongTimeout == 0 {
			s.pongTimeout = min(defaultPongTimeout, heartbeat/2)
		}
	} else if s.pongTimeout == 0 {
		s.pongTimeout = defaultPongTimeout
	}
	now := c.cfg.Clock.Now()
	s.lastWrite = now
	s.lastRead.Store(int64(now.Sub(s.start)))
	c.adoptCursorLocked(m.Cursor)
	c.enqueueLocked(queued{ev: Connected{
		ServerTime: time.UnixMilli(int64(m.ServerTimeMs)),
		Heartbeat:  heartbeat,
		Window:     s.window,
		Cursor:     m.Cursor,
	}})
	c.armLocked(s, now)
	c.kickLocked(s) // sends held back until LoginOk
	return nil
}

// adoptCursorLocked takes the server's cursor L as the device's cursor
// ([S-8-7]). Normally L is the cursor the client logged in with. Above it,
// the entries in between are gone (acknowledged through a lost copy of
// this state, or expired): the client moves on. Below it, the server's
// inbox has never reached the client's cursor (the client's state belongs
// to an earlier life of the account): the client goes back to L, and
// entries above L still waiting for delivery are dropped, since the
// server will send its own.
func (c *Client) adoptCursorLocked(cursor uint64) {
	switch {
	case cursor > c.processed:
		if cursor > c.received {
			c.log.Warn("client: server cursor ahead of local cursor", "server", cursor, "local", c.processed)
		}
		c.received = max(c.received, cursor)
		c.delivered = max(c.delivered, cursor)
		c.processed = cursor
	case cursor < c.processed:
		c.log.Warn("client: server cursor behind local cursor", "server", cursor, "local", c.processed)
		c.received, c.delivered, c.processed = cursor, cursor, cursor
		kept := c.evq[:0]
		for _, q := range c.evq {
			if q.seq <= cursor {
				kept = append(kept, q)
			}
		}
		clear(c.evq[len(kept):])
		c.evq = kept
	}
}

// handleBatch applies the frames of a Batch body, then lets the
// acknowledgement go out as soon as the application has them.
func (c *Client) handleBatch(s *session, body []byte) error {
	for len(body) > 0 {
		f, rest, err := codec.NextFrame(body, protocol.MaxFrameBody)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		if err := c.handleFrame(s, f, true); err != nil {
			return err
		}
		body = rest
	}
	c.mu.Lock()
	s.flushAt = max(s.flushAt, s.recvHigh)
	c.ackLocked(s)
	c.mu.Unlock()
	return nil
}

// handleEntry takes an inbox entry: it is queued for the application
// unless this device has already had it, and acknowledged once processed.
func (c *Client) handleEntry(s *session, seq uint64, ev Event) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if seq <= s.recvHigh {
		return fmt.Errorf("%w: entry seq %d after %d", ErrProtocol, seq, s.recvHigh)
	}
	s.recvHigh = seq
	s.unacked = append(s.unacked, seq)
	if len(s.unacked) > 2*s.window {
		return fmt.Errorf("%w: %d entries unacknowledged, window %d", ErrProtocol, len(s.unacked), s.window)
	}
	if seq <= c.received {
		// Already delivered, or queued for delivery, on an earlier
		// connection: drop it, but it must still be acknowledged here.
		c.ackLocked(s)
		return nil
	}
	c.received = seq
	c.enqueueLocked(queued{ev: ev, seq: seq})
	return nil
}

// handleError applies an Error frame. A connection-scope error ends the
// session (the server closes it); a message-scope one fails the send or
// request it names.
func (c *Client) handleError(s *session, m *pb.Error) error {
	se := &ServerError{Code: m.Code, Message: m.Message, RetryAfter: time.Duration(m.RetryAfterMs) * time.Millisecond}
	switch {
	case protocol.ScopeOf(m.Code) == protocol.ScopeConnection:
		return se
	case !s.loggedIn:
		// The answer to Login: OVERLOADED (retry after retry_after_ms) or
		// INTERNAL (reconnect with backoff) ([S-7-3]). Either way this
		// connection is done; pipelined frames would be refused.
		return se
	case m.Cmid != 0:
		c.handleSendError(s, m.Cmid, se)
	case m.Rid != 0:
		c.handleReply(s, m.Rid, requestResult{err: se})
	default:
		c.log.Warn("client: server error names no send or request", "err", se)
	}
	return nil
}
