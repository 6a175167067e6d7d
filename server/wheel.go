package server

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/parley-im/parley/protocol"
)

// linkWait is how long a companion device waiting for its link code to be
// approved may stay unauthenticated: the code's lifetime and a margin.
const linkWait = 3 * time.Minute

// wheelSlots is the number of slots of the timer wheel, each one tick
// long. A connection whose next check is further away is visited early and
// put back, so the size only trades memory for revisits.
const wheelSlots = 512

// wheel is a hashed timer wheel that closes silent connections and trims
// idle ones (gnet has no per-connection deadlines). Each connection sits
// in the slot of the second of its next check; activity does not move it
// (the check reads lastActive), so the hot path never takes the wheel's
// lock. Only the login, which may bring the deadline nearer, moves it.
type wheel struct {
	srv   *Server
	unit  int64 // nanoseconds per slot: the timers' resolution
	mu    sync.Mutex
	slots [wheelSlots]*conn // guarded by mu: list heads
	last  int64             // guarded by mu: the last tick processed
	count int               // guarded by mu
}

// newWheel returns a wheel whose resolution is an eighth of the shortest
// heartbeat a client may get, between 50 ms and 1 s, so an idle timeout
// of 1.5 heartbeats fires well within two ([S-6-8]).
func newWheel(s *Server) *wheel {
	unit := min(max(s.cfg.MinHeartbeat/8, 50*time.Millisecond), time.Second)
	return &wheel{srv: s, unit: int64(unit), last: s.cfg.Now().UnixNano() / int64(unit)}
}

// add puts a new connection on the wheel.
func (w *wheel) add(c *conn) {
	w.mu.Lock()
	w.insertLocked(c, c.lastActive.Load()/w.unit+1)
	w.count++
	w.mu.Unlock()
}

// keep puts a connection back on the wheel if an expiry took it off, for
// the ticks a draining connection needs.
func (w *wheel) keep(c *conn) {
	w.mu.Lock()
	if c.wslot < 0 {
		w.insertLocked(c, w.last+1)
		w.count++
	}
	w.mu.Unlock()
}

// authenticated brings a connection that has just logged in to the next
// tick: its deadline is now 1.5 heartbeats after its last activity
// ([S-6-8]), which may come before the pre-login one (the handshake or
// login deadline, or the idle trim) it was slotted for when the timer
// looked at it during the handshake.
func (w *wheel) authenticated(c *conn) {
	w.mu.Lock()
	if c.wslot >= 0 {
		w.unlinkLocked(c)
		w.insertLocked(c, w.last+1)
	}
	w.mu.Unlock()
}

// remove takes a closed connection off the wheel; it may be called for a
// connection already off it.
func (w *wheel) remove(c *conn) {
	w.mu.Lock()
	if c.wslot >= 0 {
		w.unlinkLocked(c)
		c.wslot = -1
		w.count--
	}
	w.mu.Unlock()
}

func (w *wheel) insertLocked(c *conn, tick int64) {
	slot := int32(tick % wheelSlots)
	c.wslot = slot
	c.wprev = nil
	c.wnext = w.slots[slot]
	if c.wnext != nil {
		c.wnext.wprev = c
	}
	w.slots[slot] = c
}

func (w *wheel) unlinkLocked(c *conn) {
	if c.wprev != nil {
		c.wprev.wnext = c.wnext
	} else {
		w.slots[c.wslot] = c.wnext
	}
	if c.wnext != nil {
		c.wnext.wprev = c.wprev
	}
	c.wnext, c.wprev = nil, nil
}

// wheelAction is what the timer does to a connection it checks.
type wheelAction uint8

const (
	wheelKeep      wheelAction = iota // nothing yet
	wheelTrim                         // idle: release its TLS state on the loop
	wheelExpire                       // silent too long: close with IDLE_TIMEOUT
	wheelHello                        // no whole ClientHello in time: close without a word
	wheelHandshake                    // TLS handshake not done in time: close without a word
	wheelDrain                        // closing: wake the loop to see whether it is done
)

// tick checks the connections due in the ticks since the last one.
func (w *wheel) tick(now time.Time) {
	nowNS := now.UnixNano()
	sec := nowNS / w.unit
	var due [wheelDrain + 1][]*conn
	w.mu.Lock()
	from := w.last + 1
	if sec-from >= wheelSlots {
		from = sec - wheelSlots + 1
	}
	for s := from; s <= sec; s++ {
		slot := s % wheelSlots
		c := w.slots[slot]
		w.slots[slot] = nil
		for c != nil {
			next := c.wnext
			c.wnext, c.wprev = nil, nil
			at, act := w.check(c, nowNS)
			switch act {
			case wheelExpire, wheelHello, wheelHandshake:
				c.wslot = -1
				w.count--
			default:
				w.insertLocked(c, max(at, sec+1))
			}
			due[act] = append(due[act], c)
			c = next
		}
	}
	w.last = sec
	w.mu.Unlock()
	st := &w.srv.stats
	for _, c := range due[wheelExpire] {
		c.Close(protocol.CodeIdleTimeout)
	}
	for _, t := range []struct {
		act wheelAction
		n   *atomic.Uint64
	}{{wheelHello, &st.HelloTimeouts}, {wheelHandshake, &st.HandshakeTimeouts}} {
		for _, c := range due[t.act] {
			t.n.Add(1)
			st.HandshakeFails.Add(1)
			_ = c.gc.Close() // before TLS there is no frame to send
		}
	}
	for _, c := range due[wheelTrim] {
		c.trim.Store(true)
		c.poke()
	}
	for _, c := range due[wheelDrain] {
		c.poke()
	}
}

// check decides what to do with c now, and the tick of its next check
// when it stays on the wheel. w.mu is held.
func (w *wheel) check(c *conn, nowNS int64) (due int64, act wheelAction) {
	cfg := &w.srv.cfg
	if c.closing.Load() {
		return 0, wheelDrain // every tick until the loop closes it
	}
	last := c.lastActive.Load()
	// [S-6-9] a connection must log in within LoginTimeout of opening,
	// and then send something every 1.5 heartbeats (its own, [S-6-8]).
	deadline, expire := c.openedAt+int64(cfg.LoginTimeout), wheelExpire
	if c.linking.Load() {
		deadline = c.openedAt + int64(linkWait)
	}
	if c.authed.Load() {
		deadline = last + int64(c.heartbeatS)*int64(time.Second)*3/2
	}
	// [S-5-5] and before that, send its whole ClientHello and complete
	// the TLS handshake, each within its time of the accept.
	switch c.phase.Load() {
	case phaseHello:
		if d := c.openedAt + int64(cfg.ClientHelloTimeout); d < deadline {
			deadline, expire = d, wheelHello
		}
	case phaseHandshake:
		if d := c.openedAt + int64(cfg.HandshakeTimeout); d < deadline {
			deadline, expire = d, wheelHandshake
		}
	}
	if nowNS >= deadline {
		return 0, expire
	}
	next := deadline
	if c.trimmedAt != last {
		trimAt := last + int64(cfg.IdleTrim)
		if nowNS >= trimAt {
			c.trimmedAt = last
			act = wheelTrim
		} else {
			next = min(next, trimAt)
		}
	}
	return (next + w.unit - 1) / w.unit, act
}

// all returns the connections on the wheel.
func (w *wheel) all() []*conn {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]*conn, 0, w.count)
	for _, c := range w.slots {
		for ; c != nil; c = c.wnext {
			out = append(out, c)
		}
	}
	return out
}
