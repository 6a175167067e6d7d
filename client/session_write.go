package client

import (
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

const (
	// maxKeptWriteBuffer is the largest write buffer a session keeps for
	// reuse.
	maxKeptWriteBuffer = 64 << 10
	// maxCollect is about the most bytes of sends one pass of the writer
	// collects, so acks and pings are not held up behind a long pipeline.
	maxCollect = 256 << 10
	// writeChunk is how much is written under one deadline: WriteTimeout
	// bounds a write that makes no progress, not a long one on a slow link.
	writeChunk = 32 << 10
)

// kickLocked makes sure a writer goroutine runs for s. The writer writes
// whatever is due and exits when nothing is; everything it looks at is
// guarded by c.mu, so a kick under the lock is never lost.
func (c *Client) kickLocked(s *session) {
	if s.writing || s.closed {
		return
	}
	s.writing = true
	s.wg.Add(1)
	go c.writeLoop(s)
}

// writeLoop is the writer of session s. It is the only goroutine that
// writes to s.conn, so frames keep the order in which collectLocked picked
// them, and all frames due at one moment go out in one Write (one TLS
// record).
func (c *Client) writeLoop(s *session) {
	defer s.wg.Done()
	for {
		c.mu.Lock()
		if s.closed {
			s.writing = false
			c.mu.Unlock()
			return
		}
		now := c.cfg.Clock.Now()
		buf, cursor, save, err := c.collectLocked(s, now, s.wbuf[:0])
		if err != nil || len(buf) == 0 {
			s.writing = false
			if err == nil {
				c.armLocked(s, now)
			}
			if s.draining {
				s.shutDrainedLocked()
			}
			c.mu.Unlock()
			if err != nil {
				c.fail(s, err)
			}
			return
		}
		c.mu.Unlock()

		if save {
			// The cursor is durable before the Ack that covers it leaves.
			if err := c.store.SaveCursor(cursor); err != nil {
				c.log.Warn("client: save cursor", "err", err)
			} else {
				c.mu.Lock()
				c.savedCursor = cursor
				c.mu.Unlock()
			}
		}
		if err := c.write(s, buf); err != nil {
			c.fail(s, fmt.Errorf("client: write: %w", err))
			c.mu.Lock()
			s.writing = false
			c.mu.Unlock()
			return
		}
		if cap(buf) <= maxKeptWriteBuffer {
			s.wbuf = buf[:0]
		} else {
			s.wbuf = nil
		}
	}
}

// write writes buf to s in chunks, each with its own deadline.
func (c *Client) write(s *session, buf []byte) error {
	for len(buf) > 0 {
		n := min(len(buf), writeChunk)
		_ = s.conn.SetWriteDeadline(time.Now().Add(c.cfg.WriteTimeout))
		if _, err := s.conn.Write(buf[:n]); err != nil {
			return err
		}
		buf = buf[n:]
	}
	return nil
}

// collectLocked appends to buf every frame due on s at now: Login first,
// then sends and requests (at most MaxInFlight unanswered, at most
// maxPipelined bytes before LoginOk, none after GoAway), a cumulative Ack
// and a Ping. It returns the cursor to persist before writing, if save,
// or ErrDeadConnection when a Ping went unanswered.
func (c *Client) collectLocked(s *session, now time.Time, buf []byte) (_ []byte, cursor uint64, save bool, _ error) {
	if s.draining {
		return c.collectAckLocked(s, now, buf)
	}
	if !s.loginWritten {
		var err error
		buf, err = codec.AppendProto(buf, protocol.KindLogin, &pb.Login{
			Version:    protocol.Version,
			User:       c.creds.User,
			Device:     c.creds.Device,
			Credential: c.creds.Secret,
			Cursor:     c.processed,
			// [S-7-16] SENTs after the first in about 5 bytes instead of 14.
			CompactSent: true,
			HeartbeatS:  uint32(min(c.cfg.Heartbeat/time.Second, math.MaxUint32)),
		})
		if err != nil {
			return nil, 0, false, err
		}
		s.loginWritten = true
	}
	// fits reports whether the frame appended after mark may go out now,
	// and removes it if not.
	fits := func(mark int) bool {
		if s.loggedIn {
			return true
		}
		if n := len(buf) - mark; s.pipelined+n <= maxPipelined {
			s.pipelined += n
			return true
		}
		buf = buf[:mark]
		return false
	}
	// take removes c.queue[i].
	take := func(i int) {
		if i == 0 {
			c.queue[0] = nil
			c.queue = c.queue[1:]
			return
		}
		c.queue = slices.Delete(c.queue, i, i+1)
	}
	held := false // an unsealed send holds the application's later ones back (send_seal.go)
	// [S-8-13] a send waiting for its retry holds its conversation's
	// later sends back (send_order.go).
	waiting := c.waitingLocked()
	for i := 0; s.goAway == nil && i < len(c.queue) && s.inflight < c.cfg.MaxInFlight && len(buf) < maxCollect; {
		o := c.queue[i]
		switch {
		case o.state != sendQueued:
			take(i)
			continue
		case c.sec != nil && !o.sealed():
			c.startSealLocked(o)
			held = true
			i++
			continue
		case held && !o.internal:
			i++
			continue
		case heldByRetry(waiting, o):
			i++
			continue
		}
		mark := len(buf)
		buf = o.appendFrame(buf)
		if !fits(mark) {
			break
		}
		take(i)
		o.state, o.sess = sendInFlight, s
		s.inflight++
	}
	for _, r := range c.requests {
		if s.goAway != nil || s.inflight >= c.cfg.MaxInFlight {
			break
		}
		if r.state != requestQueued || (r.once && !s.loggedIn) {
			// A request that must not be repeated waits for LoginOk: if
			// the login fails, the server closes without telling which
			// pipelined frames it had read.
			continue
		}
		rid := c.nextRID + 1
		if rid == 0 {
			rid = 1
		}
		r.rid = rid
		mark := len(buf)
		var err error
		if buf, err = r.appendFrame(buf); err != nil {
			return nil, 0, false, err
		}
		if !fits(mark) {
			break
		}
		c.nextRID = rid
		r.sess, r.state = s, requestInFlight
		s.reqs[rid] = r
		s.inflight++
	}

	if s.loggedIn && s.goAway == nil {
		for i, m := range s.typingOut {
			var err error
			if buf, err = codec.AppendProto(buf, protocol.KindTyping, m); err != nil {
				return nil, 0, false, err
			}
			s.typingOut[i] = nil
		}
		s.typingOut = s.typingOut[:0]
	}
	if s.loggedIn {
		buf, cursor, save, _ = c.collectAckLocked(s, now, buf)

		lastRead := s.lastReadTime()
		switch {
		case s.pingOut:
			if s.pongTimeout > 0 && now.Sub(later(s.pingAt, lastRead)) >= s.pongTimeout {
				return nil, 0, false, ErrDeadConnection
			}
		case s.pingEvery > 0 && s.goAway == nil:
			if now.Sub(lastRead) >= s.pingEvery || (len(buf) == 0 && now.Sub(s.lastWrite) >= s.pingEvery) {
				buf = codec.AppendFrame(buf, protocol.KindPing, nil)
				s.pingOut, s.pingAt = true, now
			}
		}
	}
	if len(buf) > 0 {
		s.lastWrite = now
	}
	return buf, cursor, save, nil
}

// covered returns how many of s.unacked an Ack of seq covers.
func (s *session) covered(seq uint64) int {
	n, _ := slices.BinarySearch(s.unacked, seq+1)
	return n
}

// collectAckLocked appends the cumulative Ack to buf if one is due: asked
// for (ackNow), delayed long enough, or riding along with other frames.
func (c *Client) collectAckLocked(s *session, now time.Time, buf []byte) (_ []byte, cursor uint64, save bool, _ error) {
	if !s.loggedIn {
		return buf, 0, false, nil
	}
	ack := min(c.processed, s.recvHigh)
	due := s.ackNow || len(buf) > 0 || (!s.ackDue.IsZero() && !now.Before(s.ackDue))
	switch {
	case ack > s.ackSent && due:
		buf = codec.AppendAck(buf, ack)
		s.ackSent, s.ackNow, s.ackDue = ack, false, time.Time{}
		n := s.covered(ack)
		s.unacked = append(s.unacked[:0], s.unacked[n:]...)
		n, _ = slices.BinarySearch(s.waited, ack+1)
		s.waited = append(s.waited[:0], s.waited[n:]...)
		if c.processed != c.savedCursor {
			cursor, save = c.processed, true
		}
	case ack <= s.ackSent:
		s.ackNow, s.ackDue = false, time.Time{}
	}
	return buf, cursor, save, nil
}

// ackLocked is called when more entries may be acknowledged on s. It asks
// the writer for an Ack now when the Ack would cover a quarter of the
// window, when the server's window is full, or when a Batch or the backlog
// has been delivered; otherwise the Ack waits up to AckDelay, or up to
// LazyAckDelay while it would newly cover no one-to-one Message from
// another user.
func (c *Client) ackLocked(s *session) {
	if s.closed || !s.loggedIn {
		return
	}
	ack := min(c.processed, s.recvHigh)
	if ack <= s.ackSent {
		return
	}
	if s.covered(ack) >= max(1, s.window/4) || len(s.unacked) >= s.window ||
		(s.flushAt > s.ackSent && ack >= s.flushAt) {
		s.ackNow = true
		c.kickLocked(s)
		return
	}
	delay := c.cfg.AckDelay
	if len(s.waited) == 0 || s.waited[0] > ack {
		// Every entry this Ack newly covers may wait; one received but
		// not processed yet is not covered.
		delay = c.cfg.LazyAckDelay
	}
	now := c.cfg.Clock.Now()
	if due := now.Add(delay); s.ackDue.IsZero() || due.Before(s.ackDue) {
		s.ackDue = due
		c.armLocked(s, now)
	}
}

// armLocked sets the writer's wake-up timer for the earliest of: the
// delayed Ack, the next Ping, the Pong deadline. An already armed timer
// that fires sooner is kept; the writer re-arms when it wakes.
func (c *Client) armLocked(s *session, now time.Time) {
	if s.closed {
		return
	}
	next := s.ackDue
	if s.loggedIn {
		var t time.Time
		switch {
		case s.pingOut && s.pongTimeout > 0:
			t = later(s.pingAt, s.lastReadTime()).Add(s.pongTimeout)
		case !s.pingOut && s.pingEvery > 0 && s.goAway == nil:
			t = earlier(s.lastWrite, s.lastReadTime()).Add(s.pingEvery)
		}
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	if next.IsZero() {
		return
	}
	if s.timerStop != nil {
		if !next.Before(s.timerAt) {
			return
		}
		s.timerStop()
	}
	s.timerGen++
	gen := s.timerGen
	s.timerAt = next
	// Measure the delay from the clock's present, not from now, which may
	// be stale by the time of a write.
	s.timerStop = c.cfg.Clock.AfterFunc(max(next.Sub(c.cfg.Clock.Now()), 0), func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if s.timerGen == gen {
			s.timerStop, s.timerAt = nil, time.Time{}
		}
		c.kickLocked(s)
	})
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func earlier(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
