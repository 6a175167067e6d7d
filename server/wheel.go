package server

import (
	"sync"
	"time"

	"github.com/parley-im/parley/protocol"
)

// wheelSlots is the number of one-second slots of the timer wheel. A
// connection whose next check is further away is visited early and put
// back, so the size only trades memory for revisits.
const wheelSlots = 256

// wheel is a hashed timer wheel that closes silent connections and trims
// idle ones (gnet has no per-connection deadlines). Each connection sits
// in the slot of the second of its next check; activity does not move it
// (the check reads lastActive), so the hot path never takes the wheel's
// lock.
type wheel struct {
	srv   *Server
	mu    sync.Mutex
	slots [wheelSlots]*conn // guarded by mu: list heads
	last  int64             // guarded by mu: the last second ticked
	count int               // guarded by mu
}

func newWheel(s *Server) *wheel {
	return &wheel{srv: s, last: s.cfg.Now().Unix()}
}

// add puts a new connection on the wheel.
func (w *wheel) add(c *conn) {
	w.mu.Lock()
	w.insertLocked(c, c.lastActive.Load()/int64(time.Second)+1)
	w.count++
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

func (w *wheel) insertLocked(c *conn, second int64) {
	slot := int32(second % wheelSlots)
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

// tick checks the connections due in the seconds since the last tick.
func (w *wheel) tick(now time.Time) {
	sec := now.Unix()
	nowNS := now.UnixNano()
	var expired []*conn
	var trims []*conn
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
			due, trim, expire := w.check(c, nowNS)
			switch {
			case expire:
				c.wslot = -1
				w.count--
				expired = append(expired, c)
			default:
				if trim {
					trims = append(trims, c)
				}
				w.insertLocked(c, max(due, sec+1))
			}
			c = next
		}
	}
	w.last = sec
	w.mu.Unlock()
	for _, c := range expired {
		c.Close(protocol.CodeIdleTimeout)
	}
	for _, c := range trims {
		c.trim.Store(true)
		c.poke()
	}
}

// check decides what to do with c now: the second of its next check,
// whether to trim it, whether it has been silent too long. w.mu is held.
func (w *wheel) check(c *conn, nowNS int64) (due int64, trim, expire bool) {
	cfg := &w.srv.cfg
	last := c.lastActive.Load()
	// [S-6-9] a connection must log in within LoginTimeout of opening,
	// and then send something every 1.5 heartbeats.
	deadline := c.openedAt + int64(cfg.LoginTimeout)
	if c.authed.Load() {
		deadline = last + int64(cfg.Heartbeat*3/2)
	}
	if nowNS >= deadline {
		return 0, false, true
	}
	next := deadline
	if c.trimmedAt != last {
		trimAt := last + int64(cfg.IdleTrim)
		if nowNS >= trimAt {
			c.trimmedAt = last
			trim = true
		} else {
			next = min(next, trimAt)
		}
	}
	return (next + int64(time.Second) - 1) / int64(time.Second), trim, false
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
