package storage

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/cockroachdb/pebble/v2"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// Blocks (spec [S-18-5] to [S-18-7]).
//
// A user's block list lives on its shard, one key per blocked user
// (slot 'L' user blocked → when, Unix ms), and in memory once read
// (user.blocked), at most protocol.MaxBlocks entries. Everything a block
// changes is decided on the blocker's shard: a 1:1 send to the blocker is
// stored there (applySend), the blocker's presence is computed there
// (visible), and typing to the blocker is relayed from there. Typing from
// the blocker goes through the blocker's shard first (router.SlotOf sends a 1:1
// typing to its sender's shard, typingFrom), so both directions are
// dropped.

func blockKey(dst []byte, u, blocked uint64) []byte {
	dst = binary.BigEndian.AppendUint64(appendPrefix(dst, SlotOfUser(u), tagBlock), u)
	return binary.BigEndian.AppendUint64(dst, blocked)
}

// blockList returns who u blocks, reading it on first use. An error
// aborts the cycle.
func (s *Shard) blockList(u *user) (map[uint64]uint64, error) {
	if u.blocked != nil {
		return u.blocked, nil
	}
	lo := blockKey(nil, u.id, 0)
	it, err := s.reader().NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo[:len(lo)-8])})
	if err != nil {
		err = fmt.Errorf("storage: blocks of %d: %w", u.id, err)
		s.abort(err)
		return nil, err
	}
	list := map[uint64]uint64{}
	for ok := it.First(); ok; ok = it.Next() {
		k, v := it.Key(), it.Value()
		at, _ := binary.Uvarint(v)
		list[binary.BigEndian.Uint64(k[len(k)-8:])] = at
	}
	if err := it.Close(); err != nil {
		err = fmt.Errorf("storage: blocks of %d: %w", u.id, err)
		s.abort(err)
		return nil, err
	}
	u.blocked = list
	return list, nil
}

// blocks reports whether u blocks peer. A storage error aborts the cycle
// (and reports false: nothing of the cycle commits).
func (s *Shard) blocks(u *user, peer uint64) bool {
	list, err := s.blockList(u)
	if err != nil {
		return false
	}
	_, ok := list[peer]
	return ok
}

// requesterBlocks returns op's user and its block list, or answers op
// INTERNAL and reports false.
func (s *Shard) requesterBlocks(op *Op) (*user, map[uint64]uint64, bool) {
	u, err := s.loadUser(op.User)
	if err == nil && u != nil {
		var list map[uint64]uint64
		if list, err = s.blockList(u); err == nil {
			return u, list, true
		}
	}
	s.replyError(op.Conn, protocol.CodeInternal, op.RID, 0)
	return nil, nil, false
}

// applyBlock blocks or unblocks op.Peer for op.User ([S-18-5]).
func (s *Shard) applyBlock(op *Op) {
	u, list, ok := s.requesterBlocks(op)
	if !ok {
		return
	}
	block := op.Kind == OpBlock
	if _, had := list[op.Peer]; had != block {
		if block && len(list) >= protocol.MaxBlocks {
			s.replyError(op.Conn, protocol.CodeTooManyBlocks, op.RID, 0)
			return
		}
		entry, err := appendProtoEntry([]byte{byte(protocol.KindBlocked)}, &pb.Blocked{User: op.Peer, Blocked: block})
		if err != nil {
			s.abort(err)
			s.replyError(op.Conn, protocol.CodeInternal, op.RID, 0)
			return
		}
		k := blockKey(nil, u.id, op.Peer)
		if block {
			at := uint64(s.cfg.Now().UnixMilli())
			list[op.Peer] = at
			s.batch.Set(k, binary.AppendUvarint(nil, at), nil)
		} else {
			delete(list, op.Peer)
			s.batch.Delete(k, nil)
		}
		// [S-18-7] the account's devices keep the list; [S-18-6] the
		// blocked user's subscription sees the change.
		s.appendEntry(u.id, entry, FlagCompanions)
		s.presenceChanged(u)
	}
	start := len(s.out)
	s.out = codec.AppendOK(s.out, op.RID)
	s.reply(op.Conn, start)
}

// applyBlockList answers with the users op.User blocks, in the order it
// blocked them ([S-18-7]).
func (s *Shard) applyBlockList(op *Op) {
	_, list, ok := s.requesterBlocks(op)
	if !ok {
		return
	}
	users := make([]uint64, 0, len(list))
	for id := range list {
		users = append(users, id)
	}
	slices.SortFunc(users, func(a, b uint64) int { return cmp.Or(cmp.Compare(list[a], list[b]), cmp.Compare(a, b)) })
	s.replyProto(op.Conn, protocol.KindBlockListResult, &pb.BlockListResult{Rid: op.RID, Users: users})
}

// typingFrom relays a 1:1 typing indicator, on its sender's shard, to the
// target's shard, unless the sender blocks the target ([S-18-6]).
func (s *Shard) typingFrom(op *Op) {
	u, err := s.loadUser(op.From)
	if err != nil || u == nil || s.blocks(u, op.User) {
		return
	}
	fwd := *op
	fwd.Flags |= FlagTypingChecked
	s.effectWith(effForward, ConnRef{}, effectMore{op: fwd})
}
