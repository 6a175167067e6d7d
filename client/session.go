package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

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

	// sent resolves compact SENTs ([S-7-16]); owned by the reader (Run).
	sent codec.SentState

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
	waited       []uint64 // seqs above ackSent of the entries whose Ack may not wait LazyAckDelay ([S-8-5]), in order
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

	// Typing indicators ([S-15-8]): a token bucket like the server's, the
	// indicators it lets through and not yet written, and those held
	// back until it has a token (at most one per chat; the latest wins).
	typingTokens float64
	typingAt     time.Time
	typingOut    []*pb.Typing
	typingHeld   []*pb.Typing
	typingTimer  func() bool
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
	s.typingTokens, s.typingAt = typingBurst, s.start

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
	// Subscriptions end with the connection: subscribe again ([S-15-2]),
	// unless a Subscribe call's request is still to be written anyway.
	if len(c.subscribed) > 0 && !slices.ContainsFunc(c.requests, func(r *request) bool { return r.kind == protocol.KindPresenceSubscribe }) {
		r := c.subscribeRequest(c.subscribed)
		r.state, r.reply = requestQueued, make(chan requestResult, 1)
		c.requests = append(c.requests, r)
	}
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
	if s.typingTimer != nil {
		s.typingTimer()
		s.typingTimer = nil
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
		delete(s.reqs, rid)
		r.rid, r.sess, r.state = 0, nil, requestQueued
		if r.once {
			// Written on a logged-in connection and not answered: the
			// server may have carried it out. Repeating it could do it
			// twice, so the caller decides.
			c.completeRequestLocked(r, requestResult{err: fmt.Errorf("%w (%v)", ErrNoAnswer, r.kind)})
		}
	}
	s.typingHeld, s.typingOut = nil, nil
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
			Group: m.Group, GSeq: m.GSeq, To: m.To, Cipher: m.Cipher,
			TTL: time.Duration(m.TTL) * time.Second, Expires: expiry(m.ID, m.TTL),
			Ref: m.Ref, Forwarded: m.Forwarded,
		})
	case protocol.KindReceipt:
		r, err := codec.ParseReceipt(f.Body)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		var ev Event = Receipt{Seq: r.Seq, Peer: r.Peer, Type: r.Type, UpTo: r.UpTo, Group: r.Group}
		if !knownReceiptType(r.Type) {
			ev = nil // acknowledged and otherwise ignored ([S-12-5])
		}
		return c.handleEntry(s, r.Seq, ev)
	case protocol.KindReceipts:
		var m pb.Receipts
		if err := codec.ParseProto(f.Body, &m); err != nil {
			return fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		var ev Event
		if knownReceiptType(m.Type) { // else acknowledged and ignored ([S-12-5])
			items := make([]ReceiptItem, len(m.Items))
			for i, it := range m.Items {
				items[i] = ReceiptItem{Peer: it.Peer, UpTo: it.UpTo}
			}
			ev = Receipts{Seq: m.Seq, Group: m.Group, Type: m.Type, Items: items}
		}
		return c.handleEntry(s, m.Seq, ev)
	case protocol.KindGroupEvent:
		var m pb.GroupEvent
		if err := codec.ParseProto(f.Body, &m); err != nil {
			return fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		return c.handleEntry(s, m.Seq, GroupEvent{
			Seq: m.Seq, ID: m.Id, Time: protocol.MessageTime(m.Id), Group: m.Group, GSeq: m.Gseq,
			Actor: m.Actor, Op: m.Op, Members: m.Members, Name: m.Name, Avatar: m.Avatar,
		})
	case protocol.KindPresence:
		var m pb.Presence
		if err := codec.ParseProto(f.Body, &m); err != nil {
			return fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		p := Presence{User: m.User, Online: m.Online}
		if m.LastSeenMs != 0 {
			p.LastSeen = time.UnixMilli(int64(m.LastSeenMs))
		}
		c.mu.Lock()
		c.enqueueLocked(queued{ev: p})
		c.mu.Unlock()
		return nil
	case protocol.KindIsTyping:
		var m pb.IsTyping
		if err := codec.ParseProto(f.Body, &m); err != nil {
			return fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		if _, known := pb.TypingState_name[int32(m.State)]; !known {
			return nil // ignored ([S-12-5])
		}
		c.mu.Lock()
		c.enqueueLocked(queued{ev: IsTyping{From: m.From, Group: m.Group, State: m.State}})
		c.mu.Unlock()
		return nil
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
		cmid, id, err := s.sent.ParseSent(f.Body)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		c.handleSent(s, cmid, id)
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
		return handleAnswer(c, s, f.Body, &pb.Ok{}, (*pb.Ok).GetRid)
	case protocol.KindLookupResult:
		return handleAnswer(c, s, f.Body, &pb.LookupResult{}, (*pb.LookupResult).GetRid)
	case protocol.KindGroupInfo:
		return handleAnswer(c, s, f.Body, &pb.GroupInfo{}, (*pb.GroupInfo).GetRid)
	case protocol.KindGroupListResult:
		return handleAnswer(c, s, f.Body, &pb.GroupListResult{}, (*pb.GroupListResult).GetRid)
	case protocol.KindDeviceList:
		return handleAnswer(c, s, f.Body, &pb.DeviceList{}, (*pb.DeviceList).GetRid)
	case protocol.KindMediaUploadSlot:
		return handleAnswer(c, s, f.Body, &pb.MediaUploadSlot{}, (*pb.MediaUploadSlot).GetRid)
	case protocol.KindMediaDownloadURL:
		return handleAnswer(c, s, f.Body, &pb.MediaDownloadUrl{}, (*pb.MediaDownloadUrl).GetRid)
	case protocol.KindKeyBundles:
		return handleAnswer(c, s, f.Body, &pb.KeyBundles{}, (*pb.KeyBundles).GetRid)
	case protocol.KindKeysChanged:
		var m pb.KeysChanged
		if err := codec.ParseProto(f.Body, &m); err != nil {
			return fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		return c.handleEntry(s, m.Seq, KeysChanged{Seq: m.Seq, User: m.User, Devices: m.Devices})
	case protocol.KindPreKeysLow:
		var m pb.PreKeysLow
		if err := codec.ParseProto(f.Body, &m); err != nil {
			return fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		return c.handleEntry(s, m.Seq, PreKeysLow{Seq: m.Seq, Device: m.Device, Count: m.Count})
	}
	if handled, err := c.handleControl(s, f); handled {
		return err
	}
	if info, known := f.Kind.Info(); (known && info.Entry) || (!known && f.Kind >= protocol.FirstReservedEntryKind) {
		// An entry kind this client has no event for, or one of a later
		// revision ([S-12-6]): acknowledged like any other entry, so the
		// stream never stalls on it.
		return c.handleEntry(s, entrySeq(f.Body), nil)
	}
	// A kind this version does not know ([S-12-4]), or one that makes no
	// sense here (CODE_SENT, LINKED after Login): ignore it.
	c.log.Debug("client: ignoring frame", "kind", f.Kind)
	return nil
}

// handleAnswer parses the answer to a request into m and completes the
// request named by its rid.
func handleAnswer[M proto.Message](c *Client, s *session, body []byte, m M, rid func(M) uint32) error {
	if err := codec.ParseProto(body, m); err != nil {
		return fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	c.handleReply(s, rid(m), requestResult{answer: m})
	return nil
}

// knownReceiptType reports whether t is a ReceiptType of this version.
func knownReceiptType(t pb.ReceiptType) bool {
	_, known := pb.ReceiptType_name[int32(t)]
	return known
}

// entrySeq returns the seq of an entry body: field 1, as in every entry
// kind ([S-8-1]). A body without it yields 0, which handleEntry refuses.
func entrySeq(body []byte) uint64 {
	var seq uint64
	for len(body) > 0 {
		num, typ, n := protowire.ConsumeTag(body)
		if n < 0 {
			return 0
		}
		body = body[n:]
		if num == 1 && typ == protowire.VarintType {
			v, n := protowire.ConsumeVarint(body)
			if n < 0 {
				return 0
			}
			seq = v
			body = body[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, body)
		if n < 0 {
			return 0
		}
		body = body[n:]
	}
	return seq
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
	// [S-8-19] a device whose store lost its counter continues above what
	// the server recorded; the next AddOutgoing stores the new height.
	c.lastCMID = max(c.lastCMID, m.MaxCmid)
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
		switch {
		case c.processed == 0:
			// A new device (or one whose store was lost) starts where the
			// server places it: a companion at the moment it was linked
			// ([S-9-13]). Nothing the user can act on.
			c.log.Debug("client: starting at the server's cursor", "server", cursor)
		case cursor > c.received:
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
	if m, ok := ev.(Message); ok && protocol.AckIsAwaited(m.Group, m.From, c.creds.User, len(m.Body)) {
		s.waited = append(s.waited, seq) // its sender waits for the delivered receipt the Ack makes, or it is large ([S-8-5])
	}
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
	for _, d := range m.Devices {
		se.Devices = append(se.Devices, UserDevices{User: d.User, Devices: d.Devices})
	}
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
