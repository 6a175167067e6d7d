package server

import (
	"sync"
	"sync/atomic"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/time/rate"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/internal/sendorder"
	"github.com/parley-im/parley/internal/tls13"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
	"github.com/parley-im/parley/storage"
)

// connState is where a connection is in spec.md's state machine.
type connState uint8

const (
	stateOpen          connState = iota // TLS done (or plaintext), not logged in
	stateLoggingIn                      // Login submitted, answer pending
	stateAuthenticated                  // Login succeeded
)

// Connection phases before OPEN, for the timer: a TLS connection must get
// through each by its deadline ([S-5-5]).
const (
	phaseHello     uint32 = iota // waiting for the whole ClientHello
	phaseHandshake               // TLS handshake waiting for a slot or running
	phaseOpen                    // TLS done, or plaintext
)

// closeReserve is the room Config.MaxOutbound keeps for the frame that
// announces a close (ERROR or GOAWAY) and close_notify, sealed, so that
// frame always fits behind what is already queued ([S-6-14]).
const closeReserve = 256

// conn is one client connection. Fields without a note are owned by the
// connection's event loop.
type conn struct {
	srv *Server
	ip  *ipCount  // the admission's address count; nil when not limited; immutable
	gc  gnet.Conn // set in OnOpen
	// ref names the connection in ops (Registry); set in OnOpen, before
	// any op is submitted, then immutable.
	ref storage.ConnRef
	tc  *tls13.Conn // nil in plaintext mode
	// plain holds decrypted bytes not yet parsed into frames (TLS only);
	// nil when empty, so idle connections hold no buffer.
	plain *buffer

	state        connState
	compactSent  bool          // the Login asked for compact SENTs ([S-7-16])
	linkRequests int           // LINK_REQUESTs read on this connection ([S-9-12])
	codes        *rate.Limiter // REQUEST_CODEs that cost an SMS ([S-9-17]); nil until the first
	user         uint64        // once logging in: the Login's user and device
	device       uint32
	maxCMID      uint64 // the highest Send.cmid read, recorded at logout ([S-8-19])
	// held is, per conversation, the SEND this connection refused with a
	// retriable code whose retry the conversation waits for ([S-8-13],
	// session_order.go); it keeps no map when none.
	held sendorder.Set[sendorder.Conversation]
	// sentTo names each shard, other than the user's, that the
	// connection handed a SEND to: a refusal there may have raised a
	// barrier that the logout must lower too (session_order.go); nil
	// when none.
	sentTo []sentShard
	// sent is the state compact SENTs are encoded against ([S-7-16]),
	// advanced as frames are written.
	sent codec.SentState

	typingTokens float64  // typing-indicator rate limiter
	typingAt     int64    // unix nanos of the last refill
	watching     []uint64 // users whose presence this connection watches

	// registered: OnOpen accepted the connection (OnClose must undo it).
	registered bool
	// draining: the close frame is written; the loop reads nothing more
	// and closes once the client has received everything, or at drainUntil
	// (unix nanos).
	draining bool
	// heartbeatS is the heartbeat agreed at LOGIN, in seconds ([S-6-8]):
	// written by the loop before the LOGIN goes to the shard, read by the
	// shard's Authenticated and, once authed is set, by the timer.
	heartbeatS uint16
	drainUntil int64

	// openedAt is the unix nanos the connection opened; immutable.
	openedAt int64
	// opened is set by OnOpen; the acceptor reads it.
	opened atomic.Bool
	// phase is where a TLS connection is before OPEN; the timer reads it.
	phase atomic.Uint32
	// closing mirrors draining for the timer.
	closing atomic.Bool
	// lastActive is the unix nanos of the last inbound traffic; the timer
	// goroutine reads it.
	lastActive atomic.Int64
	// pending counts requests in flight to shards; shards decrement it.
	pending atomic.Int32
	// trim asks the loop to release idle TLS state; set by the timer.
	trim atomic.Bool
	// authed mirrors state == stateAuthenticated for the timer.
	authed atomic.Bool
	// home is the user the connection's Login names, 0 before one and
	// after a Login the node could not take: set by the loop before it
	// submits the Login (the shard authenticates that user or closes the
	// connection), read by CloseUsers.
	home atomic.Uint64
	// linking: a companion waiting for its link code to be approved, which
	// may take longer than LoginTimeout.
	linking atomic.Bool

	mu        sync.Mutex
	out       *buffer          // guarded by mu: frames queued by other goroutines; nil when none
	session   *storage.Session // guarded by mu: a Login answer to apply
	closeCode protocol.Code    // guarded by mu: set once; the loop closes after flushing out
	woken     bool             // guarded by mu: a Wake is on its way
	stopped   bool             // guarded by mu: the loop is closing the connection; nothing more is queued
	closed    bool             // guarded by mu: OnClose ran
	lookups   *lookupMerge     // guarded by mu: lookups waiting for shards' parts, a list; nil when none

	// Timer wheel state, guarded by wheel.mu.
	wnext, wprev *conn
	wslot        int32 // -1 when off the wheel
	trimmedAt    int64 // lastActive when last trimmed
}

var _ storage.Endpoint = (*conn)(nil)

// newConn returns the state of a connection the acceptor admitted from ip.
func newConn(s *Server, ip *ipCount) *conn {
	return &conn{srv: s, ip: ip, wslot: -1}
}

// wakeLocked arranges for the loop to look at the connection. c.mu must be
// held; the Wake itself is issued after unlocking by the caller when the
// result is true.
func (c *conn) wakeLocked() bool {
	if c.woken {
		return false
	}
	c.woken = true
	return true
}

func (c *conn) wake() { _ = c.gc.Wake(nil) }

// Post implements storage.Endpoint.
func (c *conn) Post(frames []byte) bool {
	c.mu.Lock()
	if c.refusingLocked() {
		c.mu.Unlock()
		return false
	}
	// [S-6-14] a backstop between two loop runs; the loop's bound checks
	// what it writes against what gnet still holds.
	if c.out.len()+len(frames) > c.srv.cfg.MaxOutbound-closeReserve {
		c.closeLocked(protocol.CodeSlowConsumer)
		w := c.wakeLocked()
		c.mu.Unlock()
		if w {
			c.wake()
		}
		return false
	}
	if c.out == nil {
		c.out = c.srv.bufs.get()
	}
	c.out.b = append(c.out.b, frames...)
	w := c.wakeLocked()
	c.mu.Unlock()
	if w {
		c.wake()
	}
	return true
}

// Reply implements storage.Endpoint.
func (c *conn) Reply(frames []byte) {
	c.pending.Add(-1)
	if !c.Post(frames) {
		c.poke() // let the loop see the lower pending count
	}
}

// Authenticated implements storage.Endpoint.
func (c *conn) Authenticated(s storage.Session) {
	c.pending.Add(-1)
	c.mu.Lock()
	if c.refusingLocked() {
		c.mu.Unlock()
		return
	}
	c.session = &s
	// LoginOk goes out ahead of every entry the shard posts after it.
	if c.out == nil {
		c.out = c.srv.bufs.get()
	}
	c.out.b, _ = codec.AppendProto(c.out.b, protocol.KindLoginOK, &pb.LoginOk{
		ServerTimeMs: uint64(c.srv.cfg.Now().UnixMilli()),
		HeartbeatS:   uint32(c.heartbeatS),
		Window:       s.Window,
		Cursor:       s.Cursor,
		MaxCmid:      s.MaxCMID,
	})
	w := c.wakeLocked()
	c.mu.Unlock()
	if w {
		c.wake()
	}
}

// Fail implements storage.Endpoint.
func (c *conn) Fail(code protocol.Code) {
	c.pending.Add(-1)
	c.Close(code)
}

// Close implements storage.Endpoint: it queues the Error (or GoAway for
// SHUTTING_DOWN) frame and has the loop close the connection after
// flushing.
func (c *conn) Close(code protocol.Code) {
	c.mu.Lock()
	if c.refusingLocked() {
		c.mu.Unlock()
		return
	}
	c.closeLocked(code)
	w := c.wakeLocked()
	c.mu.Unlock()
	if w {
		c.wake()
	}
}

// refusingLocked reports whether nothing more may be queued: a close is
// decided or done. c.mu must be held.
func (c *conn) refusingLocked() bool {
	return c.closed || c.stopped || c.closeCode != 0
}

// stopQueuing makes Post, Authenticated and Close refuse from now on and
// drops what they queued: the loop has decided to close. It reports
// whether OnClose has already run (gnet runs it inside a Write that
// fails), after which the gnet.Conn must not be touched. Loop only.
func (c *conn) stopQueuing() (closed bool) {
	c.mu.Lock()
	c.stopped = true
	out := c.out
	c.out, c.session = nil, nil
	closed = c.closed
	c.mu.Unlock()
	c.srv.bufs.put(out)
	return closed
}

// closeLocked records code and queues its frame. c.mu must be held.
func (c *conn) closeLocked(code protocol.Code) {
	c.closeCode = code
	if c.out == nil {
		c.out = c.srv.bufs.get()
	}
	c.out.b = c.srv.appendCloseFrame(c.out.b, code)
}

// poke wakes the loop without queuing anything.
func (c *conn) poke() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	w := c.wakeLocked()
	c.mu.Unlock()
	if w {
		c.wake()
	}
}

// queued is what other goroutines left for the loop.
type queued struct {
	out     *buffer // nil when nothing was queued
	session *storage.Session
	code    protocol.Code
}

// take collects what other goroutines queued, on the loop.
func (c *conn) take() queued {
	c.mu.Lock()
	q := queued{out: c.out, session: c.session, code: c.closeCode}
	c.out, c.session, c.woken = nil, nil, false
	c.mu.Unlock()
	return q
}

// buffer is a pooled byte slice.
type buffer struct{ b []byte }

func (b *buffer) len() int {
	if b == nil {
		return 0
	}
	return len(b.b)
}

// bufPool recycles buffers between connections, so an idle connection
// holds none.
type bufPool struct{ p sync.Pool }

func (p *bufPool) get() *buffer {
	if b, ok := p.p.Get().(*buffer); ok {
		return b
	}
	return &buffer{b: make([]byte, 0, 4096)}
}

// put returns b to the pool; oversized buffers are dropped.
func (p *bufPool) put(b *buffer) {
	if b == nil || cap(b.b) > 256<<10 {
		return
	}
	b.b = b.b[:0]
	p.p.Put(b)
}
