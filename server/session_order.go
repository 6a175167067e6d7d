package server

import (
	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/internal/sendorder"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/storage"
)

// A sender's order across retriable refusals ([S-8-13]), the gateway's
// half: a SEND this connection refuses itself (RATE_LIMITED, or
// OVERLOADED when the shard's queue is full or its node cannot be
// reached) holds the conversation back, and every later SEND of the
// connection to the same user or group (a higher cmid, [S-8-11]) is
// refused with the same code and retry_after_ms until the refused cmid is
// read again, or until sendorder.TTL has passed since the refusal. The
// shard keeps the same barrier (internal/sendorder) for the refusals it
// decides (storage/shard_order.go), on the shard that refused: the
// recipient's or the group's. So the connection notes the shards it sent
// to, and its logout goes to each of them, behind its SENDs there.

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

// sentShard is a shard a connection handed a SEND to, and one user or
// group of it, by which the router finds it.
type sentShard struct {
	to    uint64
	shard uint16
}

// sentVia notes that the connection handed a SEND to the shard of to, a
// user or group, so that its logout goes there too. The user's own shard
// gets the logout anyway.
func (c *conn) sentVia(to uint64) {
	r := c.srv.cfg.Router
	shard := r.ShardOf(to)
	if shard == r.ShardOf(c.user) {
		return
	}
	for _, s := range c.sentTo {
		if s.shard == shard {
			return
		}
	}
	c.sentTo = append(c.sentTo, sentShard{to: to, shard: shard})
}

// logoutElsewhere tells each shard other than the user's that the
// connection sent to that it closed (a logout with no device), which
// lowers the connection's barriers there ([S-8-13]).
func (c *conn) logoutElsewhere() {
	for _, s := range c.sentTo {
		_ = c.srv.cfg.Router.Submit(storage.Op{Kind: storage.OpLogout, User: s.to, Conn: c.ref})
	}
	c.sentTo = nil
}
