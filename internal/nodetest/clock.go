package nodetest

import (
	"sync"
	"time"
)

// Clock is the wall clock moved forward by what Advance added: a node
// given its Now (node.Config.Storage.Now, for example) reaches its time
// limits without the test waiting for them. Its methods are safe for
// concurrent use. The zero value is the wall clock.
type Clock struct {
	mu    sync.Mutex
	shift time.Duration // guarded by mu
}

// Now returns the wall clock's time plus the shift.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.shift)
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.shift += d
	c.mu.Unlock()
}
