package client

import (
	"errors"
	"fmt"
)

// Sends encrypted at flush time. An encrypted send made while the client
// is not logged in (or while an earlier such send still waits) is stored
// and queued with its plaintext only (Outgoing.Plain, no Body and no
// Envelopes): encrypting it may need the key directory (bundles never
// fetched, a group's members), which only a connection reaches. Once a
// session runs, the writer hands the first unsealed send in cmid order to
// one sealing goroutine (sealQueued) and writes none of the application's
// sends after it until it is sealed, so messages keep their cmid order on
// the wire and in every inbox. The key handovers of a group message being
// sealed (Outgoing made by sendContent, marked internal) are written past
// it: it waits for them. A sealed send is stored again under its cmid,
// ciphertexts included, and is from then on an ordinary send: one cmid,
// one message, retried identically ([S-17-9]).

// sealed reports whether o can be written as it is: it has a body or
// envelopes (a plain client's sends always do).
func (o *Outgoing) sealed() bool { return len(o.Body) > 0 || len(o.Envelopes) > 0 }

// sealNowLocked reports whether a new encrypted send may be sealed at once:
// the client is logged in and no earlier send waits to be sealed.
func (c *Client) sealNowLocked() bool {
	if c.sess == nil || !c.sess.loggedIn {
		return false
	}
	for _, o := range c.outbox {
		if !o.sealed() && o.state != sendDone {
			return false
		}
	}
	return true
}

// startSealLocked starts sealing o, the first unsealed queued send, unless
// a sealing runs or waits for its retry time.
func (c *Client) startSealLocked(o *outgoing) {
	if c.sec == nil || c.sealing || c.stopErr != nil || c.cfg.Clock.Now().Before(c.sealAfter) {
		return
	}
	c.sealing = true
	c.wg.Add(1)
	go c.sealQueued(o)
}

// sealQueued encrypts the queued send o for the current devices, stores it
// and lets the writer send it. A failure that says the message cannot be
// encrypted (no keys, no such user, too large) fails the send; any other
// (the connection lost, no answer in time) leaves it queued and tries again
// after a backoff.
func (c *Client) sealQueued(o *outgoing) {
	defer c.wg.Done()
	c.mu.Lock()
	out := o.Outgoing
	c.mu.Unlock()
	err := c.seal(c.ctx, &out)
	if err == nil {
		if err = c.store.AddOutgoing(out); err != nil {
			err = fmt.Errorf("client: store encrypted send: %w", err)
		}
	}
	c.mu.Lock()
	c.sealing = false
	kick := func() {
		if s := c.sess; s != nil {
			c.kickLocked(s)
		}
	}
	switch {
	case o.state != sendQueued || c.stopErr != nil:
		// answered meanwhile (cannot be) or the client stopped
	case err == nil:
		o.Outgoing = out
		o.attempts = 0
		kick()
	case finalSealError(err):
		c.detachSendLocked(o)
		c.mu.Unlock()
		c.finishSend(o, Sent{CMID: o.CMID}, fmt.Errorf("client: encrypt send %d: %w", o.CMID, err))
		c.mu.Lock()
		kick()
	default:
		delay := c.cfg.backoff(o.attempts)
		o.attempts++
		c.sealAfter = c.cfg.Clock.Now().Add(delay)
		c.log.Debug("client: send will be encrypted later", "cmid", o.CMID, "err", err, "retry_in", delay)
		c.cfg.Clock.AfterFunc(delay, func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			kick()
		})
	}
	c.mu.Unlock()
}

// finalSealError reports whether err means that a send cannot be
// encrypted however often it is tried.
func finalSealError(err error) bool {
	var se *ServerError
	if errors.As(err, &se) {
		return !se.retryable()
	}
	return errors.Is(err, ErrNoKeys) || errors.Is(err, ErrInvalid) || errors.Is(err, ErrProtocol)
}
