package storage

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
)

// ErrStaleEpoch is wrapped by Open's error when the shard's database
// records a placement epoch newer than Config.Epoch: the shard was placed
// elsewhere since the node that opens it learned its placement, and a
// newer owner may have written to it.
var ErrStaleEpoch = errors.New("storage: shard opened under a newer placement epoch")

// retryFencedMS is the delay suggested with SHARD_UNAVAILABLE.
const retryFencedMS = 1000

// checkEpoch compares the placement epoch recorded in the database (ffff
// 'E') with cfg.Epoch and records cfg.Epoch when it is newer. A shard
// outside a cluster (Epoch 0) records and checks nothing.
func (s *Shard) checkEpoch() error {
	if s.cfg.Epoch == 0 {
		return nil
	}
	v, err := s.get(shardKey(nil, tagEpoch))
	if err != nil {
		return err
	}
	var held uint64
	if len(v) == 8 {
		held = binary.BigEndian.Uint64(v)
	}
	switch {
	case held > s.cfg.Epoch:
		return fmt.Errorf("%w: shard %d records epoch %d, placement says %d", ErrStaleEpoch, s.cfg.ID, held, s.cfg.Epoch)
	case held == s.cfg.Epoch:
		return nil
	}
	if err := s.db.Set(shardKey(nil, tagEpoch), be64(s.cfg.Epoch), pebble.Sync); err != nil {
		return fmt.Errorf("storage: shard %d: record epoch: %w", s.cfg.ID, err)
	}
	return nil
}

// Epoch returns the placement epoch the shard was opened under
// (Config.Epoch).
func (s *Shard) Epoch() uint64 { return s.cfg.Epoch }

// fenced reports whether the shard may not commit now (Config.Fence).
func (s *Shard) fenced() bool { return s.cfg.Fence != nil && !s.cfg.Fence() }

// refuseFenced answers the ops of a cycle the fence refused, applying
// none of them: a request gets SHARD_UNAVAILABLE (a Login a GoAway
// SHUTTING_DOWN, a lookup an empty part), so the client retries; forwards
// are dropped (the source's outbox resends them); acks, logouts, watches
// and typing are dropped (the client acks again; a session ends with its
// connection or is replaced at the next login).
func (s *Shard) refuseFenced(ops []Op) {
	s.fencedOps.Add(uint64(len(ops)))
	s.batch = s.db.NewIndexedBatch()
	for i := range ops {
		op := &ops[i]
		switch refusalOf(op) {
		case refuseLogin:
			s.effects = append(s.effects, effect{kind: effFail, conn: op.Conn, code: protocol.CodeShuttingDown})
		case refuseLookup:
			s.effectWith(effLookup, op.Conn, effectMore{lookup: op.Seq})
		case refuseRequest:
			// [S-8-13] a refused SEND holds its conversation's later
			// SENDs back, even if the fence opens before they arrive.
			if op.Kind == OpSend && s.heldBack(op) {
				continue
			}
			if op.Kind == OpSend && op.CMID != 0 {
				s.raiseBarrier(op, protocol.CodeShardUnavailable, retryFencedMS)
			}
			s.replyRetry(op.Conn, protocol.CodeShardUnavailable, op.RID, op.CMID, retryFencedMS)
		}
	}
	s.finishCycle() // an empty batch: nothing is committed, the answers go out
}

// refusal says how an op that no shard applies is answered.
type refusal uint8

const (
	refuseNone    refusal = iota // expects no answer: dropped
	refuseLogin                  // the connection is turned away (SHUTTING_DOWN)
	refuseLookup                 // an empty part of the lookup
	refuseRequest                // a request or SEND: an Error to retry, by rid or cmid
)

// refusalOf returns how op is answered when it is refused: forwards are
// resent by their source's outbox; acks, logouts, watches and typing are
// dropped (the client acks again; a session ends with its connection or
// is replaced at the next login); the rest waits for an answer.
func refusalOf(op *Op) refusal {
	if op.Conn.IsZero() {
		return refuseNone
	}
	switch op.Kind {
	case OpAck, OpLogout, OpWatch, OpUnwatch, OpTyping, OpConnGone:
		return refuseNone
	case OpLogin:
		return refuseLogin
	case OpLookup:
		return refuseLookup
	}
	return refuseRequest
}

// Refuse answers op, which no shard will apply (it reached a node that
// does not serve its shard, or the shard's queue refused it), on ep, its
// connection: a request or SEND gets code with retryMS, a Login is turned
// away with SHUTTING_DOWN, a lookup gets an empty part; an op that
// expects no answer gets none. So a client never waits on a live
// connection for an answer no shard will give.
func Refuse(ep Endpoint, op *Op, code protocol.Code, retryMS uint32) {
	switch refusalOf(op) {
	case refuseLogin:
		ep.Fail(protocol.CodeShuttingDown)
	case refuseLookup:
		ep.LookupPart(op.Seq, nil)
	case refuseRequest:
		ep.Reply(codec.AppendError(nil, code, op.RID, op.CMID, "", retryMS))
	}
}

// FencedOps returns how many ops the shard refused because its fence was
// closed.
func (s *Shard) FencedOps() uint64 { return s.fencedOps.Load() }
