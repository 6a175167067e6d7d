package client

import "slices"

// A conversation's sends go out in the order they were made, also across
// retries ([S-8-13]): once the server refused a send with a code that is
// retried, it refuses the connection's later sends to the same user or
// group until the refused one comes again, and a new connection knows
// nothing of the refusal. So the client writes no send of a conversation
// while an earlier send of it waits for its retry, and a send whose retry
// is due goes back into the queue ahead of every later send. A send
// refused DEVICES_CHANGED, being encrypted again ([S-17-9]), waits the
// same way: the server holds its conversation back until it comes again.

// conversation names the user or group a send goes to.
type conversation struct {
	to, group uint64
}

// conversationOf returns the conversation of o.
func conversationOf(o *outgoing) conversation { return conversation{o.To, o.Group} }

// armRetryLocked records that o waits: for its retry timer, which stop
// cancels, or, with stop nil, for its new encryption after
// DEVICES_CHANGED (the reseal queues it when done).
func (c *Client) armRetryLocked(o *outgoing, stop func() bool) {
	if !o.waits {
		o.waits = true
		c.waiting++
	}
	o.retry = stop
}

// stopRetryLocked ends o's wait, cancelling its retry timer if one is
// armed.
func (c *Client) stopRetryLocked(o *outgoing) {
	if !o.waits {
		return
	}
	if o.retry != nil {
		o.retry()
		o.retry = nil
	}
	o.waits = false
	c.waiting--
}

// waitingLocked returns, per conversation, the lowest cmid of a send that
// waits for its retry, or nil when no send waits. It reads the whole
// outbox, and only while some send waits for its retry timer or is being
// encrypted again.
func (c *Client) waitingLocked() map[conversation]uint64 {
	if c.waiting == 0 {
		return nil
	}
	var m map[conversation]uint64
	for _, o := range c.outbox {
		if o.state != sendWaiting {
			continue
		}
		if m == nil {
			m = make(map[conversation]uint64)
		}
		k := conversationOf(o)
		if low, ok := m[k]; !ok || o.CMID < low {
			m[k] = o.CMID
		}
	}
	return m
}

// heldByRetry reports whether o must wait for an earlier send of its
// conversation that waits for its retry; waiting is waitingLocked's.
func heldByRetry(waiting map[conversation]uint64, o *outgoing) bool {
	if waiting == nil || o.internal {
		return false
	}
	low, ok := waiting[conversationOf(o)]
	return ok && low < o.CMID
}

// requeueLocked puts o, whose retry is due, back in the queue ahead of
// every send made after it, so that a conversation's sends keep their
// order.
func (c *Client) requeueLocked(o *outgoing) {
	i := slices.IndexFunc(c.queue, func(q *outgoing) bool { return q.CMID > o.CMID })
	if i < 0 {
		i = len(c.queue)
	}
	c.queue = slices.Insert(c.queue, i, o)
}
