package storage

import (
	"github.com/parley-im/parley/internal/sendorder"
	"github.com/parley-im/parley/protocol"
)

// A sender's order across retriable refusals ([S-8-13]). When the shard
// refuses a SEND with a code the client retries (SHARD_UNAVAILABLE,
// INBOX_FULL, STORAGE_FULL, OVERLOADED, INTERNAL, RATE_LIMITED), the
// SENDs of the same connection to the same conversation that are already
// on their way here must not be stored before the refused one's retry.
// So the shard raises a barrier for (connection, conversation): every
// later SEND of that pair (one with a higher cmid: clients number their
// sends with a counter, [S-8-11]) is refused with the first refusal's
// code and retry_after_ms, until the refused cmid arrives again, which
// lowers it.
// The client resends a conversation's refused SENDs in their order, so
// the retry comes first and the others follow it.
//
// DEVICES_CHANGED ([S-17-9]) holds the conversation back too: the client
// encrypts the refused SEND again and resends it under its cmid, and the
// SENDs after it must not be stored first. The SENDs held behind it are
// refused with OVERLOADED and retryDevicesMS, not DEVICES_CHANGED: their
// envelopes may well be right, and DEVICES_CHANGED would make the client
// encrypt them again for nothing.
//
// A barrier exists only while a refusal is outstanding, and goes when its
// cmid is seen again, when its connection logs out (the server sends the
// logout to its user's shard and to every other shard it sent a SEND to,
// applyLogout), when its node's connections are gone (OpConnGone), or
// sendorder.TTL after it was raised (a client that never retries gets its
// barrier lifted eventually; so does one that an envelope SEND, forwarded
// by the sender's shard, raised after the logout overtook it). At most
// maxOrderBarriers are held; beyond that a refusal raises none.

// maxOrderBarriers bounds the barriers a shard holds (about 64 bytes each).
const maxOrderBarriers = 1 << 16

// retryDevicesMS is the retry_after_ms of the SENDs held back behind a
// DEVICES_CHANGED refusal ([S-8-13]): about the time a client takes to
// fetch the new devices' bundles and encrypt again, after which the
// refused SEND comes back and the held ones may follow.
const retryDevicesMS = 200

// orderKey names one conversation of one connection.
type orderKey struct {
	conn ConnRef
	conv sendorder.Conversation
}

// orderKeyOf returns the conversation key of an OpSend.
func orderKeyOf(op *Op) orderKey {
	return orderKey{conn: op.Conn, conv: sendorder.ConversationOf(op.User, op.Group)}
}

// heldBack reports whether op, an OpSend, is refused behind a barrier of
// its conversation (its cmid is above the refused one's), and answers it
// if so. The retry of the refused cmid lowers the barrier and goes on.
// The send steps call it once they know op is no repeat of a stored
// message (one is answered SENT whatever is held back, since it takes no
// new place), an envelope send before its devices are compared. It
// allocates nothing when no barrier is up.
func (s *Shard) heldBack(op *Op) bool {
	b, ok := s.holdBarrier(op)
	if !ok {
		return false
	}
	s.heldSends.Add(1)
	s.sending = nil // this refusal raises nothing
	s.replyRetry(op.Conn, b.Code, 0, op.CMID, b.RetryMS)
	return true
}

// raiseBarrier holds op's conversation back after op was refused with a
// retriable code.
func (s *Shard) raiseBarrier(op *Op, code protocol.Code, retryMS uint32) {
	if op.Conn.IsZero() {
		return
	}
	b := sendorder.Barrier{CMID: op.CMID, Code: code, RetryMS: retryMS, At: s.cfg.Now().UnixNano()}
	s.barriers.Raise(orderKeyOf(op), b, maxOrderBarriers) // full: nothing held back
	s.barriersChanged()
}

// noteSendRefusal raises the barrier of the SEND being applied when the
// answer about to go to conn refuses it with a retriable code.
func (s *Shard) noteSendRefusal(conn ConnRef, code protocol.Code, cmid uint64, retryMS uint32) {
	if op := s.sending; op != nil && cmid != 0 && op.CMID == cmid && op.Conn == conn && protocol.Retried(code) {
		s.raiseBarrier(op, code, retryMS)
	}
}

// applySendInOrder applies an OpSend; a retriable refusal of it raises
// its conversation's barrier.
func (s *Shard) applySendInOrder(op *Op) {
	s.sending = op
	s.applySend(op)
	s.sending = nil
}

// dropBarriers lowers the barriers of the connections gone reports gone.
func (s *Shard) dropBarriers(gone func(ConnRef) bool) {
	s.barriers.Drop(func(k orderKey) bool { return gone(k.conn) })
	s.barriersChanged()
}

// holdBarrier reports the barrier op's conversation is held back behind,
// if any; the refused cmid itself, or an expired barrier, lowers it. It
// allocates nothing when no barrier is up.
func (s *Shard) holdBarrier(op *Op) (sendorder.Barrier, bool) {
	if s.barriers.Len() == 0 || op.Conn.IsZero() {
		return sendorder.Barrier{}, false
	}
	b, ok := s.barriers.Hold(orderKeyOf(op), op.CMID, s.cfg.Now)
	if !ok {
		s.barriersChanged()
	}
	return b, ok
}

// barriersChanged publishes how many barriers the shard holds, for
// OrderBarriers.
func (s *Shard) barriersChanged() { s.barriersHeld.Store(int64(s.barriers.Len())) }

// OrderBarriers returns how many conversations of connections the shard
// holds back now behind a refused SEND ([S-8-13]), expired barriers
// included until the shard's tick or the conversation's next SEND drops
// them. Any goroutine may call it.
func (s *Shard) OrderBarriers() int { return int(s.barriersHeld.Load()) }

// HeldSends returns how many SENDs the shard refused behind an earlier
// retriable refusal of the same connection and conversation ([S-8-13]).
func (s *Shard) HeldSends() uint64 { return s.heldSends.Load() }
