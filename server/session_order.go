package server

import (
	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/internal/sendorder"
	"github.com/parley-im/parley/protocol"
)

// A sender's order across retriable refusals ([S-8-13]), the gateway's
// half: a SEND this connection refuses itself (RATE_LIMITED, or
// OVERLOADED when the shard's queue is full or its node cannot be
// reached) holds the conversation back, and every later SEND of the
// connection to the same user or group (a higher cmid, [S-8-11]) is
// refused with the same code and retry_after_ms until the refused cmid is
// read again, or until sendorder.TTL has passed since the refusal. The
// shard keeps the same barrier (internal/sendorder) for the refusals it
// decides (storage/shard_order.go).

// maxHeldConversations bounds the conversations one connection may have
// held back at once; one more and the connection is closed with GOAWAY
// OVERLOADED, which drops every barrier (the client resends its
// unanswered SENDs in order on its next connection).
const maxHeldConversations = 1024

// heldBack reports whether the SEND cmid to conv is refused behind an
// earlier refusal of the connection (of a lower cmid, less than
// sendorder.TTL ago), and answers it if so. Reading the refused cmid
// again lowers the barrier. It allocates nothing when no conversation is
// held back.
func (c *conn) heldBack(w *buffer, conv sendorder.Conversation, cmid uint64) bool {
	h, ok := c.held.Hold(conv, cmid, c.srv.cfg.Now)
	if !ok {
		return false
	}
	c.srv.stats.HeldSends.Add(1)
	if h.Code == protocol.CodeRateLimited {
		c.srv.stats.RateLimited[Limit(h.Tag)].Add(1) // every RATE_LIMITED answer counts
	}
	w.b = codec.AppendError(w.b, h.Code, 0, cmid, "", h.RetryMS)
	return true
}

// holdBack records that the connection refused the SEND cmid to conv
// with code (RATE_LIMITED: by limit), whose answer is already queued, so
// that the conversation's later SENDs wait for its retry. Past
// maxHeldConversations (expired barriers not counted) it closes the
// connection instead.
func (c *conn) holdBack(w *buffer, conv sendorder.Conversation, cmid uint64, code protocol.Code, limit Limit, retryMS uint32) verdict {
	b := sendorder.Barrier{CMID: cmid, Code: code, RetryMS: retryMS, Tag: uint8(limit), At: c.srv.cfg.Now().UnixNano()}
	if !c.held.Raise(conv, b, maxHeldConversations) {
		w.b = c.srv.appendGoAway(w.b, protocol.CodeOverloaded)
		return verdict{close: true, code: protocol.CodeOverloaded}
	}
	return verdict{}
}
