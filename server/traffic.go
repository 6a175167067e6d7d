package server

import (
	"errors"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/internal/tls13"
	"github.com/parley-im/parley/protocol"
)

// alertProtocolVersion is the TLS alert sent to a client that does not
// speak TLS (RFC 8446 §6.2).
const alertProtocolVersion = 70

// verdict is what reading a connection's input decided.
type verdict struct {
	close bool          // close the connection after writing
	code  protocol.Code // the Error frame already queued for it; 0 to close silently
}

// OnTraffic runs when a connection has input or was woken: it applies what
// shards queued, parses and handles input frames, and writes everything
// produced, encrypted as one run of TLS records.
func (s *Server) OnTraffic(gc gnet.Conn) gnet.Action {
	c, ok := gc.Context().(*conn)
	if !ok {
		return gnet.None // a datagram on the engine's idle UDP socket (see serve)
	}
	if c.draining {
		return c.drain(gc)
	}
	q := c.take()
	if q.session != nil && c.state == stateLoggingIn {
		c.state = stateAuthenticated
		c.authed.Store(true)
		s.wheel.authenticated(c)
		s.stats.Authenticated.Add(1)
	}
	if gc.InboundBuffered() > 0 {
		c.lastActive.Store(s.cfg.Now().UnixNano())
	}

	w := s.bufs.get() // frames the loop produces now
	v := verdict{close: q.code != 0, code: q.code}
	if !v.close {
		v = c.readInput(gc, w)
	}

	out := q.out
	switch {
	case out == nil:
		out, w = w, nil
	case len(w.b) > 0:
		out.b = append(out.b, w.b...)
	}
	s.bufs.put(w)
	v = c.bound(gc, out, v)
	if len(out.b) > 0 || (v.close && c.tc != nil && c.tc.Ready()) {
		s.write(c, out.b, v.close)
	}
	// A heartbeat (PINGs in, PONGs out, nothing from the shards) leaves an
	// idle connection as idle as it was: its AEADs, rebuilt for it, go at
	// once instead of at the next trim (a connection idle for good pings
	// every heartbeat, and would otherwise hold them for a fifth of it).
	heartbeat := q.out == nil && len(out.b) > 0 && onlyPongs(out.b)
	s.bufs.put(out)

	if v.close {
		if int(v.code) < len(s.stats.Closed) {
			s.stats.Closed[v.code].Add(1)
		}
		return c.startDrain(gc)
	}
	if (c.trim.Swap(false) || heartbeat) && c.tc != nil && c.tc.Ready() && gc.OutboundBuffered() == 0 {
		c.tc.Idle()
	}
	return gnet.None
}

// onlyPongs reports whether frames holds PONG frames and nothing else.
func onlyPongs(frames []byte) bool {
	for len(frames) > 0 {
		f, size, _, err := codec.Parse(frames, protocol.MaxFrameBody)
		if err != nil || size == 0 || f.Kind != protocol.KindPong {
			return false
		}
		frames = frames[size:]
	}
	return true
}

// bound keeps the output within MaxOutbound ([S-6-14]): when out does not
// fit behind what gnet still holds, less the room kept for the close frame,
// the client reads too slowly, and out is replaced by ERROR SLOW_CONSUMER.
// When the connection is closing anyway and out does not fit, only its
// last frame, the close frame, is kept; it always fits in the room kept.
// Frames dropped here were never acknowledged as delivered: the client
// resumes from its cursor and resends unanswered SENDs.
func (c *conn) bound(gc gnet.Conn, out *buffer, v verdict) verdict {
	s := c.srv
	room := s.cfg.MaxOutbound - gc.OutboundBuffered()
	switch size := c.sealedLen(len(out.b)); {
	case !v.close && size > room-closeReserve:
		v = verdict{close: true, code: protocol.CodeSlowConsumer}
		c.stopQueuing()
		out.b = s.appendCloseFrame(out.b[:0], v.code)
	case v.close && v.code != 0 && size > room:
		out.b = s.appendCloseFrame(out.b[:0], v.code)
	}
	return v
}

// sealedLen is what n bytes of frames take on the wire.
func (c *conn) sealedLen(n int) int {
	if c.tc == nil {
		return n
	}
	return tls13.SealedSize(n)
}

// startDrain begins the close of a connection whose last frames (the
// close frame among them) are written: from now on the loop reads and
// sends nothing more. The connection closes once the client has
// received every byte, when it closes its side, or after CloseLinger,
// whichever comes first; so a client that reads gets the close frame
// whole and then EOF, and one that does not read cannot hold the
// connection ([S-6-12], [S-6-14]).
func (c *conn) startDrain(gc gnet.Conn) gnet.Action {
	if c.stopQueuing() {
		return gnet.None // closed inside the write: its descriptor may be another's now
	}
	c.srv.releasePlain(c)
	c.draining = true
	c.drainUntil = c.srv.cfg.Now().Add(c.srv.cfg.CloseLinger).UnixNano()
	c.closing.Store(true)
	c.srv.wheel.keep(c)
	return c.drain(gc)
}

// drain runs on a closing connection: it throws away input and anything
// queued, half-closes the socket once gnet has handed every byte to the
// kernel (the client then reads EOF after the last frame), and closes it
// once the kernel has no byte left unacknowledged, or at drainUntil.
func (c *conn) drain(gc gnet.Conn) gnet.Action {
	if q := c.take(); q.out != nil {
		c.srv.bufs.put(q.out)
	}
	if n := gc.InboundBuffered(); n > 0 {
		_, _ = gc.Discard(n)
	}
	if c.srv.cfg.Now().UnixNano() >= c.drainUntil {
		return gnet.Close
	}
	if gc.OutboundBuffered() > 0 {
		return gnet.None // gnet writes the rest as the socket drains; the timer looks again
	}
	fd := gc.Fd()
	_ = unix.Shutdown(fd, unix.SHUT_WR) // again after the first time: ENOTCONN, harmless
	if unacked(fd) > 0 {
		return gnet.None
	}
	return gnet.Close
}

// write sends plaintext frames, sealing them into TLS records unless the
// connection is plaintext. closing adds close_notify.
func (s *Server) write(c *conn, frames []byte, closing bool) {
	if c.compactSent {
		// [S-7-16] in the order the client reads them, counting as it goes.
		n, count := c.sent.CompactSents(frames, func(f codec.Frame) { countError(f, &s.stats) })
		frames = frames[:n]
		s.stats.FramesOut.Add(count)
	} else {
		s.stats.FramesOut.Add(countFrames(frames, &s.stats))
	}
	var n int
	if c.tc == nil {
		n = len(frames)
		_, _ = c.gc.Write(frames)
	} else if c.tc.Ready() {
		enc := s.bufs.get()
		enc.b = c.tc.Seal(enc.b, frames)
		if closing {
			enc.b = c.tc.CloseNotify(enc.b)
		}
		n = len(enc.b)
		_, _ = c.gc.Write(enc.b)
		s.bufs.put(enc)
	}
	s.stats.BytesOut.Add(uint64(n))
}

// readInput reads and handles what the client sent, unless the connection
// is paused (login pending, too many requests in flight), in which case
// the input waits in gnet's buffer, up to MaxInbound.
func (c *conn) readInput(gc gnet.Conn, w *buffer) verdict {
	if c.tc == nil {
		return c.readPlain(gc, w)
	}
	// Frames already decrypted come first.
	if c.plain != nil {
		if v := c.handleBuffered(w); v.close || c.paused() {
			return c.checkOverflow(gc, w, v)
		}
	}
	if c.paused() {
		return c.checkOverflow(gc, w, verdict{})
	}
	wasReady := c.tc.Ready()
	if c.plain == nil {
		c.plain = c.srv.bufs.get()
	}
	before := gc.InboundBuffered()
	var err error
	c.plain.b, err = c.tc.Feed(gc, c.plain.b)
	c.srv.stats.BytesIn.Add(uint64(before - gc.InboundBuffered()))
	if err != nil {
		c.srv.releasePlain(c)
		if errors.Is(err, tls13.ErrNotTLS) {
			_, _ = gc.Write(tls13.AlertRecord(nil, alertProtocolVersion))
		}
		if errors.Is(err, tls13.ErrTooManyHandshakes) {
			c.srv.stats.RefusedHandshakesPerIP.Add(1)
		}
		if !wasReady {
			c.srv.stats.HandshakeFails.Add(1)
		}
		return verdict{close: true}
	}
	if !wasReady {
		switch {
		case c.tc.Ready():
			c.phase.Store(phaseOpen)
			c.srv.stats.Handshakes.Add(1)
		case c.tc.HelloReceived():
			c.phase.Store(phaseHandshake)
		}
	}
	v := c.handleBuffered(w)
	return c.checkOverflow(gc, w, v)
}

// handleBuffered handles the whole frames in c.plain and keeps the rest.
func (c *conn) handleBuffered(w *buffer) verdict {
	n, v := c.handleFrames(c.plain.b, w)
	rest := copy(c.plain.b, c.plain.b[n:])
	c.plain.b = c.plain.b[:rest]
	if rest == 0 {
		c.srv.releasePlain(c)
	}
	return v
}

// readPlain handles input on a plaintext connection, borrowing gnet's
// buffer.
func (c *conn) readPlain(gc gnet.Conn, w *buffer) verdict {
	if c.paused() {
		return c.checkOverflow(gc, w, verdict{})
	}
	buf, _ := gc.Peek(-1)
	n, v := c.handleFrames(buf, w)
	_, _ = gc.Discard(n)
	c.srv.stats.BytesIn.Add(uint64(n))
	return c.checkOverflow(gc, w, v)
}

// checkOverflow closes a connection whose unread input exceeds MaxInbound.
func (c *conn) checkOverflow(gc gnet.Conn, w *buffer, v verdict) verdict {
	if v.close {
		return v
	}
	if gc.InboundBuffered()+c.plain.len() > c.srv.cfg.MaxInbound {
		return c.fail(w, protocol.CodeInputOverflow)
	}
	return v
}

// paused reports whether the server is not reading the connection's input
// now: a Login is pending, or too many requests are in flight.
func (c *conn) paused() bool {
	return c.state == stateLoggingIn || int(c.pending.Load()) >= c.srv.cfg.MaxPending
}

// releasePlain returns c's decrypted-input buffer to the pool.
func (s *Server) releasePlain(c *conn) {
	s.bufs.put(c.plain)
	c.plain = nil
}

// countFrames counts the whole frames in b (a Batch counts once), walking
// only their headers, and the Error frames among them by code into st.
func countFrames(b []byte, st *Stats) uint64 {
	var n uint64
	for len(b) > 0 {
		f, size, _, err := codec.Parse(b, protocol.MaxFrameBody)
		if err != nil || size == 0 {
			break
		}
		countError(f, st)
		b = b[size:]
		n++
	}
	return n
}

// countError counts f in st.ErrorsSent if it is an Error frame.
func countError(f codec.Frame, st *Stats) {
	if f.Kind == protocol.KindError && !f.Compressed {
		st.ErrorsSent[min(errorCode(f.Body), len(st.ErrorsSent)-1)].Add(1)
	}
}
