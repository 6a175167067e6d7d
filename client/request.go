package client

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"google.golang.org/protobuf/proto"

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

// request is a frame with a rid that the server answers (spec [S-6-7]):
// READ, LOOKUP and kinds 10–19, 32 and 33. Most requests are idempotent,
// so they are written again (with a new rid) after a reconnect or a
// retryable error; one marked once is never written twice on connections
// that were logged in, since repeating it could do it twice. Guarded by
// Client.mu.
type request struct {
	kind protocol.Kind
	// body returns the frame's body with the given rid. It is called with
	// Client.mu held and must not call the Client.
	body func(rid uint32) proto.Message
	// once marks a request that is not safe to repeat (GROUP_CREATE,
	// REMOVE, LEAVE, LINK_APPROVE, REVOKE_DEVICE): when the connection is
	// lost after it was written, it fails with ErrNoAnswer.
	once bool
	// detach keeps the request going when its caller stops waiting (a
	// presence subscription is still wanted); otherwise the request is
	// dropped with the caller.
	detach   bool
	state    requestState
	rid      uint32   // while requestInFlight
	sess     *session // while requestInFlight
	attempts int
	retry    func() bool
	reply    chan requestResult // capacity 1
	// limitFinal hands RATE_LIMITED to the caller instead of waiting it
	// out (a REPORT's limit is per hour).
	limitFinal bool
}

type requestResult struct {
	// answer is the parsed answer frame: *pb.Ok, *pb.LookupResult,
	// *pb.GroupInfo, … nil when err is set.
	answer proto.Message
	err    error
}

// appendFrame appends the request's frame with its current rid.
func (r *request) appendFrame(buf []byte) ([]byte, error) {
	return codec.AppendProto(buf, r.kind, r.body(r.rid))
}

// MarkRead tells the server that this user has read every message from
// peer with an id up to upTo, and waits until the read receipt is durable
// in peer's inbox (OK; spec [S-10-3]). Like Send it survives reconnects;
// unlike Send it is not stored, so an application that restarts marks
// again. A mark not above an earlier one for peer is answered OK and
// changes nothing.
func (c *Client) MarkRead(ctx context.Context, peer, upTo uint64) error {
	if peer == 0 || upTo == 0 {
		return fmt.Errorf("%w: mark read needs a peer and a message id", ErrInvalid)
	}
	_, err := doAs[*pb.Ok](ctx, c, c.readRequest(0, peer, upTo))
	return err
}

// MarkGroupRead marks read messages of group: upTo maps each sender to
// the highest id of that sender's group messages this user has read. The
// client sends one READ per sender (spec [S-7-5], [S-10-7]), all at once,
// and waits until every receipt is durable. The errors of the senders
// that failed are joined. Marks are idempotent, like MarkRead's.
func (c *Client) MarkGroupRead(ctx context.Context, group uint64, upTo map[uint64]uint64) error {
	if group == 0 || len(upTo) == 0 {
		return fmt.Errorf("%w: mark group read needs a group and at least one sender", ErrInvalid)
	}
	peers := slices.Sorted(maps.Keys(upTo)) // a stable order, for tests and logs
	reqs := make([]*request, 0, len(peers))
	for _, peer := range peers {
		if peer == 0 || upTo[peer] == 0 {
			return fmt.Errorf("%w: mark group read: sender %d, message id %d", ErrInvalid, peer, upTo[peer])
		}
		reqs = append(reqs, c.readRequest(group, peer, upTo[peer]))
	}
	for _, r := range reqs {
		if err := c.start(r); err != nil {
			for _, q := range reqs {
				c.abandon(q)
			}
			return err
		}
	}
	var errs []error
	for _, r := range reqs {
		if _, err := c.await(ctx, r); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (c *Client) readRequest(group, peer, upTo uint64) *request {
	return &request{kind: protocol.KindRead, body: func(rid uint32) proto.Message {
		return &pb.Read{Rid: rid, Peer: peer, UpTo: upTo, Group: group}
	}}
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
	phones = slices.Clone(phones)
	res, err := doAs[*pb.LookupResult](ctx, c, &request{kind: protocol.KindLookup, body: func(rid uint32) proto.Message {
		return &pb.Lookup{Rid: rid, Phones: phones}
	}})
	if err != nil {
		return nil, err
	}
	contacts := make([]Contact, len(res.Contacts))
	for i, ct := range res.Contacts {
		contacts[i] = Contact{Phone: ct.Phone, User: ct.User}
	}
	return contacts, nil
}

// doAs runs r and returns its answer, which must be a T: another kind of
// answer to r's rid is a protocol violation, reported as ErrProtocol.
func doAs[T proto.Message](ctx context.Context, c *Client, r *request) (T, error) {
	var zero T
	if err := c.start(r); err != nil {
		return zero, err
	}
	m, err := c.await(ctx, r)
	if err != nil {
		return zero, err
	}
	t, ok := m.(T)
	if !ok {
		return zero, fmt.Errorf("%w: %v answered with %T", ErrProtocol, r.kind, m)
	}
	return t, nil
}

// start queues r to be written.
func (c *Client) start(r *request) error {
	r.state = requestQueued
	r.reply = make(chan requestResult, 1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopErr != nil {
		r.state = requestDone
		return c.stopErr
	}
	c.requests = append(c.requests, r)
	if s := c.sess; s != nil {
		c.kickLocked(s)
	}
	return nil
}

// await waits for the answer to the started request r. If ctx ends first,
// r is dropped (or left to finish on its own, if detach).
func (c *Client) await(ctx context.Context, r *request) (proto.Message, error) {
	select {
	case res := <-r.reply:
		return res.answer, res.err
	case <-ctx.Done():
	}
	c.mu.Lock()
	if r.state != requestDone {
		if !r.detach {
			c.dropRequestLocked(r)
		}
		c.mu.Unlock()
		return nil, fmt.Errorf("client: %v request: %w", r.kind, ctx.Err())
	}
	c.mu.Unlock()
	res := <-r.reply
	return res.answer, res.err
}

// abandon drops the started request r, if it is still pending.
func (c *Client) abandon(r *request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r.state != requestDone && r.state != 0 {
		c.dropRequestLocked(r)
	}
}

// handleReply completes (or, for a retryable error, reschedules) the
// request written on s with rid. Replies to unknown rids are ignored
// ([S-6-6]).
func (c *Client) handleReply(s *session, rid uint32, res requestResult) {
	if retry, ok := c.takeReply(s, rid, res); ok {
		c.tellRetry(retry)
	}
}

// takeReply is handleReply under the client's lock; it returns the Retry
// to tell Config.OnRetry of, if the request will be retried.
func (c *Client) takeReply(s *session, rid uint32, res requestResult) (Retry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := s.reqs[rid]
	if r == nil {
		c.log.Debug("client: reply for unknown rid", "rid", rid)
		return Retry{}, false
	}
	delete(s.reqs, rid)
	s.inflight--
	c.kickLocked(s)
	r.rid, r.sess = 0, nil
	if se, ok := res.err.(*ServerError); ok && se.retryable() && !(r.limitFinal && se.Code == protocol.CodeRateLimited) && c.stopErr == nil {
		r.state = requestWaiting
		delay := c.cfg.backoff(r.attempts)
		if se.RetryAfter > 0 {
			delay = c.cfg.serverDelay(se.RetryAfter)
		}
		r.attempts++
		c.log.Debug("client: request will be retried", "kind", r.kind, "err", se, "retry_in", delay)
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
		return Retry{Request: r.kind, Err: se, In: delay}, true
	}
	if res.err != nil && r.detach {
		c.log.Warn("client: request failed", "kind", r.kind, "err", res.err)
	}
	c.completeRequestLocked(r, res)
	return Retry{}, false
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
