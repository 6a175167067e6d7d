package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// Sent is the server's acknowledgement of a send: the message is durable
// in the recipient's inbox and will be delivered.
type Sent struct {
	// CMID is the client message id the send carried.
	CMID uint64
	// ID is the server's message id; receipts name messages by it. Zero
	// when the send failed.
	ID uint64
	// Time is when the server accepted the message (from ID).
	Time time.Time
}

// sendState is where an outgoing send is.
type sendState uint8

const (
	sendStoring  sendState = iota + 1 // being added to the store; not yet eligible
	sendQueued                        // waiting for a connection or for room in flight
	sendInFlight                      // written on sess, unanswered
	sendWaiting                       // failed with a retryable code (retry timer armed) or DEVICES_CHANGED (being encrypted again)
	sendDone                          // answered (or the client stopped); out of the outbox
)

// outgoing is an unanswered send. Guarded by Client.mu.
type outgoing struct {
	Outgoing
	state    sendState
	sess     *session          // while sendInFlight
	attempts int               // retryable failures so far
	waits    bool              // for its retry timer or its new encryption; counted in Client.waiting (send_order.go)
	retry    func() bool       // cancels the retry timer; nil when none is armed (being encrypted again)
	wait     chan sendResult   // a Send call waiting (capacity 1); nil otherwise
	done     func(Sent, error) // a SendAsync callback; nil otherwise
	// internal marks the client's own send (a sender key handover) that a
	// send being sealed waits for: never held back behind it (send_seal.go).
	internal bool
	// barrierOn is the connection whose DEVICES_CHANGED refusal holds the
	// send's conversation back on the server while it is encrypted again
	// ([S-8-13]): giving the send up ends that connection (giveUpSend).
	barrierOn *session
}

type sendResult struct {
	sent Sent
	err  error
}

// Send sends body to user to and waits until the server has stored it
// durably (SENT), across reconnects, or until it fails finally or ctx is
// done. The client assigns the send a new cmid, stores it (Store.AddOutgoing)
// before writing it, and resends it with the same cmid after every
// reconnect until it is answered; the server accepts it once. body is
// copied. If ctx ends first, Send returns ctx's error with the cmid in
// Sent, and the outcome arrives later as a SendDone event.
//
// A failure the server reports is a *ServerError with a final code
// (NOT_FOUND, INVALID_ARGUMENT, MESSAGE_TOO_LARGE); RATE_LIMITED,
// OVERLOADED and INTERNAL are retried, with the same cmid, after the delay
// the server names or with backoff. A conversation's sends (to one user
// or one group) reach the server in the order they were made, also across
// retries: while a send waits for its retry, the later sends of its
// conversation wait behind it ([S-8-13]). Answers are read independently
// of event delivery, so Send may be called from Config.OnEvent.
func (c *Client) Send(ctx context.Context, to uint64, body []byte, typ pb.ContentType) (Sent, error) {
	if to == 0 {
		return Sent{}, fmt.Errorf("%w: send to user 0", ErrInvalid)
	}
	return c.sendWait(ctx, Outgoing{To: to, Body: body, Type: typ})
}

// SendGroup sends body to group, as Send does to a user: a SEND with
// group set and to 0 ([S-7-4]), stored, numbered and resent with the same
// cmid until answered. SENT comes once every member's inbox holds the
// message ([S-16-6]), which may take longer than a 1:1 send; its id is
// the message's id in every inbox. NOT_MEMBER (no such group, or this
// user is not a member) is final.
func (c *Client) SendGroup(ctx context.Context, group uint64, body []byte, typ pb.ContentType) (Sent, error) {
	if group == 0 {
		return Sent{}, fmt.Errorf("%w: send to group 0", ErrInvalid)
	}
	return c.sendWait(ctx, Outgoing{Group: group, Body: body, Type: typ})
}

// sendWait sends m (its CMID unset) to a user or a group and waits for
// the outcome.
func (c *Client) sendWait(ctx context.Context, m Outgoing) (Sent, error) {
	wait := make(chan sendResult, 1)
	o, _, err := c.send(ctx, m, wait, nil)
	if err != nil {
		return Sent{}, err
	}
	select {
	case r := <-wait:
		return r.sent, r.err
	case <-ctx.Done():
	}
	c.mu.Lock()
	if o.wait != nil { // not answered yet: report it as a SendDone event instead
		o.wait = nil
		cmid := o.CMID
		c.mu.Unlock()
		return Sent{CMID: cmid}, fmt.Errorf("client: send %d: %w", cmid, ctx.Err())
	}
	c.mu.Unlock()
	r := <-wait
	return r.sent, r.err
}

// SendAsync is Send without waiting: it stores the send, queues it and
// returns its cmid. done, if not nil, is called once with the outcome, on
// the goroutine that delivers events and in order with them; it may block
// like Config.OnEvent. If done is nil the outcome arrives as a SendDone
// event. After Close, done is not called. SendAsync blocks only for
// Store.AddOutgoing.
func (c *Client) SendAsync(to uint64, body []byte, typ pb.ContentType, done func(Sent, error)) (cmid uint64, err error) {
	if to == 0 {
		return 0, fmt.Errorf("%w: send to user 0", ErrInvalid)
	}
	_, cmid, err = c.send(c.ctx, Outgoing{To: to, Body: body, Type: typ}, nil, done)
	return cmid, err
}

// SendGroupAsync is SendGroup without waiting, as SendAsync is Send
// without waiting.
func (c *Client) SendGroupAsync(group uint64, body []byte, typ pb.ContentType, done func(Sent, error)) (cmid uint64, err error) {
	if group == 0 {
		return 0, fmt.Errorf("%w: send to group 0", ErrInvalid)
	}
	_, cmid, err = c.send(c.ctx, Outgoing{Group: group, Body: body, Type: typ}, nil, done)
	return cmid, err
}

// send validates, encrypts (unless the client is plain), numbers,
// stores and queues m, a send to user m.To or to group m.Group (exactly
// one is set); m.CMID is assigned here and returned, since o.CMID may be
// read only under c.mu. ctx bounds the encryption's fetches and key
// handovers.
func (c *Client) send(ctx context.Context, m Outgoing, wait chan sendResult, done func(Sent, error)) (*outgoing, uint64, error) {
	switch {
	case (m.To == 0) == (m.Group == 0):
		return nil, 0, fmt.Errorf("%w: a send names a user or a group", ErrInvalid)
	case !validContent(m):
		return nil, 0, fmt.Errorf("%w: empty message body, or a reaction or edit without the message it refers to", ErrInvalid)
	case len(m.Body) > protocol.MaxMessageBody:
		return nil, 0, fmt.Errorf("%w: message body of %d bytes exceeds %d", ErrInvalid, len(m.Body), protocol.MaxMessageBody)
	}
	m.Body = bytes.Clone(m.Body)
	out := m
	if c.sec != nil {
		plain, err := proto.Marshal(&pb.Content{Body: m.Body})
		if err != nil {
			return nil, 0, fmt.Errorf("client: %w", err)
		}
		out.Body, out.Plain = nil, plain
		c.mu.Lock()
		now := c.sealNowLocked()
		c.mu.Unlock()
		if now {
			if err := c.seal(ctx, &out); err != nil {
				return nil, 0, err
			}
		} // else it is queued with its plaintext and encrypted once connected (send_seal.go)
	}
	return c.queueOutgoing(out, wait, done, false)
}

// seal encrypts out end to end ([S-17-8], [S-17-14]) and checks that the
// SEND fits a frame.
func (c *Client) seal(ctx context.Context, out *Outgoing) error {
	ctx, cancel := context.WithTimeout(ctx, secureTimeout)
	defer cancel()
	var err error
	if out.Group != 0 {
		err = c.sec.sealGroup(ctx, out)
	} else {
		err = c.sec.seal(ctx, out)
	}
	if err != nil {
		return err
	}
	if n := len(out.appendFrame(nil)); n > protocol.MaxClientFrameBody {
		return fmt.Errorf("%w: the message encrypted for every device takes %d bytes, over %d: send it as media", ErrInvalid, n, protocol.MaxClientFrameBody)
	}
	return nil
}

// sendContent sends content, a serialized pb.Content, to user to,
// encrypted end to end, and waits for its SENT: the client's own messages
// (sender keys, [S-17-14]).
func (c *Client) sendContent(ctx context.Context, to uint64, content []byte) (Sent, error) {
	out := Outgoing{To: to, Plain: content}
	if err := c.seal(ctx, &out); err != nil {
		return Sent{}, err
	}
	wait := make(chan sendResult, 1)
	if _, _, err := c.queueOutgoing(out, wait, nil, true); err != nil {
		return Sent{}, err
	}
	select {
	case r := <-wait:
		return r.sent, r.err
	case <-ctx.Done():
		return Sent{}, ctx.Err()
	}
}

// queueOutgoing numbers, stores and queues a send; internal marks the
// client's own (outgoing.internal). It returns the send and its cmid.
func (c *Client) queueOutgoing(out Outgoing, wait chan sendResult, done func(Sent, error), internal bool) (*outgoing, uint64, error) {
	o := &outgoing{
		Outgoing: out,
		state:    sendStoring,
		wait:     wait,
		done:     done,
		internal: internal,
	}
	c.mu.Lock()
	if c.stopErr != nil {
		err := c.stopErr
		c.mu.Unlock()
		return nil, 0, err
	}
	if len(c.outbox) >= c.cfg.MaxOutbox {
		c.mu.Unlock()
		return nil, 0, ErrOutboxFull
	}
	c.lastCMID++
	cmid := c.lastCMID
	o.CMID = cmid
	out.CMID = cmid
	c.outbox[cmid] = o
	c.mu.Unlock()

	if err := c.store.AddOutgoing(out); err != nil {
		c.mu.Lock()
		if o.state == sendStoring {
			delete(c.outbox, cmid)
			o.state = sendDone
		}
		c.mu.Unlock()
		return nil, 0, fmt.Errorf("client: store send: %w", err)
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if o.state == sendStoring { // else the client stopped meanwhile and o has its outcome
		o.state = sendQueued
		c.queue = append(c.queue, o)
		if s := c.sess; s != nil {
			c.kickLocked(s)
		}
	}
	return o, cmid, nil
}

// handleSent completes the send the server acknowledged. A Sent for a cmid
// the client no longer waits for (a duplicate) is ignored.
func (c *Client) handleSent(s *session, cmid, id uint64) {
	c.mu.Lock()
	o := c.outbox[cmid]
	if o == nil || o.state == sendStoring {
		c.mu.Unlock()
		c.log.Debug("client: sent for unknown cmid", "cmid", cmid)
		return
	}
	c.detachSendLocked(o)
	c.mu.Unlock()
	c.finishSend(o, Sent{CMID: cmid, ID: id, Time: protocol.MessageTime(id)}, nil)
}

// handleSendError fails the send the server refused, or schedules its
// retry with the same cmid if the code says so.
func (c *Client) handleSendError(s *session, cmid uint64, se *ServerError) {
	c.mu.Lock()
	o := c.outbox[cmid]
	if o == nil || o.state == sendStoring {
		c.mu.Unlock()
		c.log.Debug("client: error for unknown cmid", "cmid", cmid, "err", se)
		return
	}
	if se.Code == protocol.CodeDevicesChanged && c.sec != nil && o.Plain != nil && o.attempts < maxReencrypt && c.stopErr == nil {
		// [S-17-9] nothing was stored: encrypt again for the current
		// devices and send again under the same cmid.
		if o.state == sendInFlight {
			o.sess.inflight--
			c.kickLocked(o.sess)
		}
		c.stopRetryLocked(o)
		o.state, o.sess, o.barrierOn = sendWaiting, nil, s
		c.armRetryLocked(o, nil) // being encrypted again: [S-8-13] holds its conversation back
		o.attempts++
		c.wg.Add(1)
		go c.reseal(o, se)
		c.mu.Unlock()
		c.tellRetry(Retry{CMID: cmid, Err: se})
		return
	}
	if se.Code == protocol.CodeCMIDReused && c.stopErr == nil {
		c.renumberLocked(o)
		c.mu.Unlock()
		c.storeRenumbered(o, cmid)
		return
	}
	if se.retryable() && c.stopErr == nil {
		if o.state == sendInFlight {
			o.sess.inflight--
			c.kickLocked(o.sess)
		}
		c.stopRetryLocked(o)
		o.state, o.sess = sendWaiting, nil
		delay := c.cfg.backoff(o.attempts)
		if se.RetryAfter > 0 {
			delay = c.cfg.serverDelay(se.RetryAfter)
		}
		o.attempts++
		c.log.Debug("client: send will be retried", "cmid", cmid, "err", se, "retry_in", delay)
		stop := c.cfg.Clock.AfterFunc(delay, func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			if o.state != sendWaiting || o.retry == nil {
				return
			}
			c.stopRetryLocked(o) // the timer has fired: stopping it does nothing
			o.state = sendQueued
			c.requeueLocked(o) // [S-8-13] ahead of the conversation's later sends
			if s := c.sess; s != nil {
				c.kickLocked(s)
			}
		})
		c.armRetryLocked(o, stop)
		c.mu.Unlock()
		c.tellRetry(Retry{CMID: cmid, Err: se, In: delay})
		return
	}
	if se.Code == protocol.CodeDevicesChanged {
		// Given up: the refusal holds the conversation back on s until
		// this cmid comes again, which it never will ([S-17-9]).
		c.giveUpSend(o, s, se)
		return
	}
	c.detachSendLocked(o)
	c.mu.Unlock()
	c.finishSend(o, Sent{CMID: cmid}, se)
}

// tellRetry tells Config.OnRetry of r. It is called on the reader
// goroutine without the client's lock, so OnRetry hears of the retries
// one at a time, in the order the refusals arrived, and may call the
// Client.
func (c *Client) tellRetry(r Retry) {
	if c.cfg.OnRetry != nil {
		c.cfg.OnRetry(r)
	}
}

// giveUpSend gives up o, refused DEVICES_CHANGED, with err as its
// outcome. The server holds o's conversation back on connection s until
// o comes again, which it never will ([S-8-13], [S-17-9]), so s is ended
// first: a new connection is held back by nothing, and the
// conversation's later sends go out on it instead of being refused until
// the hold expires. o stays in the outbox until then, holding the later
// sends back here too. c.mu is held on entry and released on return; if
// o left the outbox meanwhile (the client stopped), nothing more is done.
func (c *Client) giveUpSend(o *outgoing, s *session, err error) {
	c.mu.Unlock()
	if s != nil {
		c.fail(s, errors.New("client: a send refused DEVICES_CHANGED was given up; reconnecting so that its conversation is not held back"))
	}
	c.mu.Lock()
	if c.outbox[o.CMID] != o {
		c.mu.Unlock()
		return
	}
	c.detachSendLocked(o)
	c.mu.Unlock()
	c.finishSend(o, Sent{CMID: o.CMID}, err)
}

// renumberLocked gives a send the server refused CMID_REUSED ([S-8-20]) a
// new cmid above every one this device can have used before: the store
// that counted them was lost, so the counter jumps to the time (ms since
// the message id epoch, times 1024), which no earlier life of the device
// reached. storeRenumbered then stores it and queues it again.
func (c *Client) renumberLocked(o *outgoing) {
	if o.state == sendInFlight {
		o.sess.inflight--
		c.kickLocked(o.sess)
	}
	c.stopRetryLocked(o)
	delete(c.outbox, o.CMID)
	floor := uint64(max(c.cfg.Clock.Now().UnixMilli()-protocol.MessageIDEpochMS, 0)) << 10
	c.lastCMID = max(c.lastCMID, o.CMID, floor) + 1
	c.log.Warn("client: the server knows this cmid from another message; the counter was lost and jumps ahead", "cmid", o.CMID, "new_cmid", c.lastCMID)
	o.CMID = c.lastCMID
	o.state, o.sess, o.attempts = sendStoring, nil, 0
	c.outbox[o.CMID] = o
}

// storeRenumbered stores a renumbered send under its new cmid, forgets the
// old one, and queues it.
func (c *Client) storeRenumbered(o *outgoing, old uint64) {
	err := c.store.AddOutgoing(o.Outgoing)
	if err == nil {
		err = c.store.RemoveOutgoing(old)
	}
	c.mu.Lock()
	if err != nil {
		if o.state == sendStoring {
			c.detachSendLocked(o)
			c.mu.Unlock()
			c.finishSend(o, Sent{CMID: o.CMID}, fmt.Errorf("client: store renumbered send: %w", err))
			return
		}
		c.mu.Unlock()
		return
	}
	defer c.mu.Unlock()
	if o.state == sendStoring {
		o.state = sendQueued
		c.queue = append(c.queue, o)
		if s := c.sess; s != nil {
			c.kickLocked(s)
		}
	}
}

// detachSendLocked takes o out of the outbox and out of flight.
func (c *Client) detachSendLocked(o *outgoing) {
	delete(c.outbox, o.CMID)
	if o.state == sendInFlight {
		o.sess.inflight--
		if len(c.queue) > 0 {
			c.kickLocked(o.sess)
		}
	}
	c.stopRetryLocked(o)
	o.state, o.sess = sendDone, nil
}

// finishSend forgets the detached send o in the store, then reports its
// outcome: the store no longer holds a send once its outcome is known.
func (c *Client) finishSend(o *outgoing, sent Sent, err error) {
	if serr := c.store.RemoveOutgoing(o.CMID); serr != nil {
		c.log.Warn("client: remove send from store", "cmid", o.CMID, "err", serr)
	}
	c.mu.Lock()
	c.notifySendLocked(o, sent, err)
	c.mu.Unlock()
}

// completeSendLocked detaches o and reports its outcome without touching
// the store (used when the client stops: the send stays stored).
func (c *Client) completeSendLocked(o *outgoing, sent Sent, err error) {
	c.detachSendLocked(o)
	c.notifySendLocked(o, sent, err)
}

// notifySendLocked reports o's outcome to whoever waits for it: the Send
// call, the SendAsync callback, or a SendDone event. It runs once per send.
func (c *Client) notifySendLocked(o *outgoing, sent Sent, err error) {
	switch {
	case o.wait != nil:
		o.wait <- sendResult{sent, err} // capacity 1, sent once
	case o.done != nil:
		c.enqueueLocked(queued{done: o.done, sent: sent, err: err})
	default:
		c.enqueueLocked(queued{ev: SendDone{Sent: sent, To: o.To, Group: o.Group, Err: err}})
	}
	o.wait, o.done = nil, nil
}

// sortByCMID sorts sends by cmid, the order they were made.
func sortByCMID(q []*outgoing) {
	slices.SortFunc(q, func(a, b *outgoing) int { return cmpUint64(a.CMID, b.CMID) })
}

// appendFrame appends o's SEND: through the hand-written encoder, or with
// its envelopes through the generated one.
func (o *Outgoing) appendFrame(buf []byte) []byte {
	if len(o.Envelopes) == 0 && len(o.Own) == 0 {
		return codec.AppendSend(buf, codec.Send{To: o.To, Group: o.Group, CMID: o.CMID, Body: o.Body, Type: o.Type, Cipher: o.Cipher, Ref: o.Ref, Forwarded: o.Forwarded})
	}
	m := &pb.Send{To: o.To, Cmid: o.CMID, Type: o.Type, Cipher: o.Cipher, Ref: o.Ref, Forwarded: o.Forwarded}
	for _, e := range o.Envelopes {
		m.Envelopes = append(m.Envelopes, &pb.Envelope{Device: e.Device, Body: e.Body, Cipher: e.Cipher})
	}
	for _, e := range o.Own {
		m.Own = append(m.Own, &pb.Envelope{Device: e.Device, Body: e.Body, Cipher: e.Cipher})
	}
	out, err := codec.AppendProto(buf, protocol.KindSend, m)
	if err != nil {
		return buf // cannot happen for this message
	}
	return out
}

// reseal encrypts o again after DEVICES_CHANGED, stores it and queues it;
// it fails o if that cannot be done.
func (c *Client) reseal(o *outgoing, se *ServerError) {
	defer c.wg.Done()
	c.mu.Lock()
	out := o.Outgoing
	c.mu.Unlock()
	err := c.sec.reseal(&out, se)
	if err == nil {
		err = c.store.AddOutgoing(out)
	}
	c.mu.Lock()
	if o.state != sendWaiting { // the client stopped meanwhile
		c.mu.Unlock()
		return
	}
	if err != nil {
		// o stays waiting (its conversation held back) until its
		// connection has ended, so no later send of the conversation is
		// written where the server still holds it back.
		c.giveUpSend(o, o.barrierOn, fmt.Errorf("client: encrypt again after %v: %w", se, err))
		return
	}
	defer c.mu.Unlock()
	c.stopRetryLocked(o)
	o.barrierOn = nil
	o.Outgoing = out
	o.state = sendQueued
	c.requeueLocked(o) // [S-8-13] ahead of the conversation's later sends
	if s := c.sess; s != nil {
		c.kickLocked(s)
	}
}
