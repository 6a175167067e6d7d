package client

import (
	"context"
	"fmt"
	"slices"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// Contact is a registered phone number and its user.
type Contact struct {
	// Phone is the number exactly as it was looked up.
	Phone string
	// User is the number's user id.
	User uint64
}

// requestState is where a request is.
type requestState uint8

const (
	requestQueued   requestState = iota + 1 // to be written on the current connection
	requestInFlight                         // written on sess with rid
	requestWaiting                          // failed with a retryable code; retry timer armed
	requestDone                             // answered, abandoned, or the client stopped
)

// request is a Read or Lookup: idempotent, so it is written again (with a
// new rid) after a reconnect or a retryable error. Guarded by Client.mu.
type request struct {
	kind     protocol.Kind
	peer     uint64   // Read
	upTo     uint64   // Read
	phones   []string // Lookup
	state    requestState
	rid      uint32   // while requestInFlight
	sess     *session // while requestInFlight
	attempts int
	retry    func() bool
	reply    chan requestResult // capacity 1
}

type requestResult struct {
	contacts []Contact // Lookup
	err      error
}

// appendFrame appends the request's frame with its current rid.
func (r *request) appendFrame(buf []byte) ([]byte, error) {
	if r.kind == protocol.KindRead {
		return codec.AppendProto(buf, protocol.KindRead, &pb.Read{Rid: r.rid, Peer: r.peer, UpTo: r.upTo})
	}
	return codec.AppendProto(buf, protocol.KindLookup, &pb.Lookup{Rid: r.rid, Phones: r.phones})
}

// MarkRead tells the server that this user has read every message from
// peer with an id up to upTo, and waits until the read receipt is durable
// in peer's inbox (OK). Like Send it survives reconnects; unlike Send it is
// not stored, so an application that restarts marks again.
func (c *Client) MarkRead(ctx context.Context, peer, upTo uint64) error {
	if peer == 0 || upTo == 0 {
		return fmt.Errorf("%w: mark read needs a peer and a message id", ErrInvalid)
	}
	_, err := c.do(ctx, &request{kind: protocol.KindRead, peer: peer, upTo: upTo})
	return err
}

// Lookup returns the registered users among phones (E.164, at most
// protocol.MaxLookupPhones), in the server's order; numbers that are not
// registered are left out. It waits across reconnects until ctx is done.
func (c *Client) Lookup(ctx context.Context, phones []string) ([]Contact, error) {
	if len(phones) == 0 || len(phones) > protocol.MaxLookupPhones {
		return nil, fmt.Errorf("%w: lookup of %d numbers, want 1 to %d", ErrInvalid, len(phones), protocol.MaxLookupPhones)
	}
	for _, p := range phones {
		if err := ValidatePhone(p); err != nil {
			return nil, err
		}
	}
	return c.do(ctx, &request{kind: protocol.KindLookup, phones: slices.Clone(phones)})
}

// do queues r and waits for its answer.
func (c *Client) do(ctx context.Context, r *request) ([]Contact, error) {
	r.state = requestQueued
	r.reply = make(chan requestResult, 1)
	c.mu.Lock()
	if c.stopErr != nil {
		err := c.stopErr
		c.mu.Unlock()
		return nil, err
	}
	c.requests = append(c.requests, r)
	if s := c.sess; s != nil {
		c.kickLocked(s)
	}
	c.mu.Unlock()

	select {
	case res := <-r.reply:
		return res.contacts, res.err
	case <-ctx.Done():
	}
	c.mu.Lock()
	if r.state != requestDone {
		c.dropRequestLocked(r)
		c.mu.Unlock()
		return nil, fmt.Errorf("client: %v request: %w", r.kind, ctx.Err())
	}
	c.mu.Unlock()
	res := <-r.reply
	return res.contacts, res.err
}

// handleReply completes (or, for a retryable error, reschedules) the
// request written on s with rid. Replies to unknown rids are ignored.
func (c *Client) handleReply(s *session, rid uint32, res requestResult) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := s.reqs[rid]
	if r == nil {
		c.log.Debug("client: reply for unknown rid", "rid", rid)
		return
	}
	delete(s.reqs, rid)
	s.inflight--
	c.kickLocked(s)
	r.rid, r.sess = 0, nil
	if se, ok := res.err.(*ServerError); ok && se.retryable() && c.stopErr == nil {
		r.state = requestWaiting
		delay := c.cfg.backoff(r.attempts)
		if se.RetryAfter > 0 {
			delay = c.cfg.serverDelay(se.RetryAfter)
		}
		r.attempts++
		r.retry = c.cfg.Clock.AfterFunc(delay, func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			if r.state != requestWaiting {
				return
			}
			r.retry = nil
			r.state = requestQueued
			if s := c.sess; s != nil {
				c.kickLocked(s)
			}
		})
		return
	}
	c.completeRequestLocked(r, res)
}

// completeRequestLocked removes r and hands res to its caller.
func (c *Client) completeRequestLocked(r *request, res requestResult) {
	if r.state == requestDone {
		return
	}
	c.dropRequestLocked(r)
	r.reply <- res // capacity 1, sent once
}

// dropRequestLocked removes r from the client and its session.
func (c *Client) dropRequestLocked(r *request) {
	if r.retry != nil {
		r.retry()
		r.retry = nil
	}
	if r.state == requestInFlight && r.sess != nil {
		delete(r.sess.reqs, r.rid)
		r.sess.inflight--
	}
	r.state, r.sess = requestDone, nil
	if i := slices.Index(c.requests, r); i >= 0 {
		c.requests = slices.Delete(c.requests, i, i+1)
	}
}

// ValidatePhone reports whether p is an E.164 number as the protocol
// takes it: "+" followed by 8 to 15 digits, the first not 0 (spec [S-2-6]).
// The error wraps ErrInvalid.
func ValidatePhone(p string) error {
	ok := len(p) >= 9 && len(p) <= 16 && p[0] == '+' && p[1] != '0'
	for i := 1; ok && i < len(p); i++ {
		ok = p[i] >= '0' && p[i] <= '9'
	}
	if !ok {
		return fmt.Errorf("%w: phone number %q is not E.164 (+ and 8 to 15 digits)", ErrInvalid, p)
	}
	return nil
}
