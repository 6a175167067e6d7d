package server

import (
	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
)

// A sender's order across retriable refusals ([S-8-13]), the gateway's
// half: a SEND this connection refuses itself (RATE_LIMITED, or
// OVERLOADED when the shard's queue is full or its node cannot be
// reached) holds the conversation back, and every later SEND of the
// connection to the same user or group (a higher cmid, [S-8-11]) is
// refused with the same code and retry_after_ms until the refused cmid is
// read again. The shard keeps the
// same barrier for the refusals it decides (storage/shard_order.go).

// maxHeldConversations bounds the conversations one connection may have
// held back at once; one more and the connection is closed with GOAWAY
// OVERLOADED, which drops every barrier (the client resends its
// unanswered SENDs in order on its next connection).
const maxHeldConversations = 1024

// sendConversation names the conversation of a SEND: the recipient user,
// or the group.
type sendConversation struct {
	to    uint64
	group bool
}

// conversationOf returns the conversation of a SEND to user to or group.
func conversationOf(to, group uint64) sendConversation {
	if group != 0 {
		return sendConversation{to: group, group: true}
	}
	return sendConversation{to: to}
}

// heldSend is the refusal that holds a conversation back.
type heldSend struct {
	cmid    uint64 // the refused SEND; reading it again lowers the barrier
	code    protocol.Code
	retryMS uint32
	limit   Limit // with RATE_LIMITED: the limit that refused it
}

// heldBack reports whether the SEND cmid to conv is refused behind an
// earlier refusal of the connection (of a lower cmid), and answers it if
// so. Reading the
// refused cmid again lowers the barrier. It allocates nothing when no
// conversation is held back.
func (c *conn) heldBack(w *buffer, conv sendConversation, cmid uint64) bool {
	if len(c.held) == 0 {
		return false
	}
	h, ok := c.held[conv]
	if !ok {
		return false
	}
	switch {
	case cmid < h.cmid:
		return false // made before the refused one: its place is before it
	case cmid == h.cmid:
		delete(c.held, conv)
		if len(c.held) == 0 {
			c.held = nil // an idle connection keeps no map
		}
		return false
	}
	c.srv.stats.HeldSends.Add(1)
	if h.code == protocol.CodeRateLimited {
		c.srv.stats.RateLimited[h.limit].Add(1) // every RATE_LIMITED answer counts
	}
	w.b = codec.AppendError(w.b, h.code, 0, cmid, "", h.retryMS)
	return true
}

// holdBack records that the connection refused the SEND cmid to conv
// with code (RATE_LIMITED: by limit), whose answer is already queued, so
// that the conversation's later SENDs wait for its retry. Past
// maxHeldConversations it closes the connection instead.
func (c *conn) holdBack(w *buffer, conv sendConversation, cmid uint64, code protocol.Code, limit Limit, retryMS uint32) verdict {
	if _, ok := c.held[conv]; !ok && len(c.held) >= maxHeldConversations {
		w.b = c.srv.appendGoAway(w.b, protocol.CodeOverloaded)
		return verdict{close: true, code: protocol.CodeOverloaded}
	}
	if c.held == nil {
		c.held = make(map[sendConversation]heldSend)
	}
	c.held[conv] = heldSend{cmid: cmid, code: code, retryMS: retryMS, limit: limit}
	return verdict{}
}
