package nodetest

import (
	"sync"
	"time"
)

// Clock is the wall clock moved forward by what Advance added: a node
// given its Now (node.Config.Storage.Now, for example) reaches its time
// limits without the test waiting for them. Its methods are safe for
// concurrent use. The zero value is the wall clock; FrozenClock's stands
// still but for Advance.
type Clock struct {
	mu     sync.Mutex
	shift  time.Duration // guarded by mu
	frozen time.Time     // when not zero, the time instead of the wall clock's
}

// FrozenClock returns a Clock that stands at the present and moves only by
// Advance: what a test measures against it (a rate limit's refill, say)
// does not depend on how long the machine took.
func FrozenClock() *Clock { return &Clock{frozen: time.Now()} }

// Now returns the wall clock's time (or the frozen time) plus the shift.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.frozen.IsZero() {
		return c.frozen.Add(c.shift)
	}
	return time.Now().Add(c.shift)
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.shift += d
	c.mu.Unlock()
}
