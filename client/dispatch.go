package client

// queued is an event waiting to be delivered, or a SendAsync callback
// waiting to be called (done non-nil), in order with the events.
type queued struct {
	ev   Event
	seq  uint64 // for an inbox entry: its seq, acknowledged once delivered
	done func(Sent, error)
	sent Sent
	err  error
}

// enqueueLocked queues q for the application and makes sure a dispatcher
// goroutine runs. The queue never blocks the connection: inbox entries in
// it are bounded by the server's window (unacknowledged entries are not
// sent more), the rest by the outbox and the reconnection rate.
func (c *Client) enqueueLocked(q queued) {
	if c.closed || c.evClosed {
		return
	}
	c.evq = append(c.evq, q)
	if !c.dispatching {
		c.dispatching = true
		c.wg.Add(1)
		go c.dispatch()
	}
}

// dispatch delivers queued events one at a time until the queue is empty,
// then exits. After an entry is delivered it is processed (unless
// ManualAck) and may be acknowledged.
func (c *Client) dispatch() {
	defer c.wg.Done()
	for {
		c.mu.Lock()
		if len(c.evq) == 0 || c.closed {
			c.dispatching = false
			c.evq = nil
			c.maybeCloseEventsLocked()
			c.mu.Unlock()
			return
		}
		q := c.evq[0]
		c.evq[0] = queued{}
		c.evq = c.evq[1:]
		c.mu.Unlock()

		if !c.deliver(q) {
			continue // closing: the loop ends at the top
		}
		if q.seq != 0 {
			c.mu.Lock()
			c.delivered = max(c.delivered, q.seq)
			if !c.cfg.ManualAck {
				c.processed = max(c.processed, q.seq)
			}
			if s := c.sess; s != nil {
				c.ackLocked(s)
			}
			c.mu.Unlock()
		}
	}
}

// deliver hands q to the application. It reports false if the client
// closed before the application took it.
func (c *Client) deliver(q queued) bool {
	if c.sec != nil && q.ev != nil {
		q.ev = c.sec.observe(q.ev) // decrypts; nil: the entry was for the client itself
	}
	switch {
	case q.ev == nil && q.done == nil:
		// An entry the application does not see (a receipt of an unknown
		// type): processed by being skipped.
	case q.done != nil:
		q.done(q.sent, q.err)
	case c.cfg.OnEvent != nil:
		c.cfg.OnEvent(q.ev)
	default:
		select {
		case c.events <- q.ev:
		case <-c.ctx.Done():
			return false
		}
	}
	return true
}

// maybeCloseEventsLocked closes the Events channel once nothing more can
// be sent on it: the client has stopped and the queue is drained.
func (c *Client) maybeCloseEventsLocked() {
	if c.events == nil || c.evClosed || c.dispatching || len(c.evq) > 0 {
		return
	}
	if c.runEnded || c.closed {
		c.evClosed = true
		close(c.events)
	}
}
