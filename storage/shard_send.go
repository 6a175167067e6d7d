package storage

import (
	"encoding/binary"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// apply runs one op against the current batch.
func (s *Shard) apply(op *Op) {
	switch op.Kind {
	case OpSend:
		s.applySend(op)
	case OpAck:
		s.applyAck(op)
	case OpRead:
		s.applyRead(op)
	case OpLogin:
		s.applyLogin(op)
	case OpLogout:
		s.applyLogout(op)
	case OpRequestCode:
		s.applyRequestCode(op)
	case OpVerify:
		s.applyVerify(op)
	case OpLookup:
		s.applyLookup(op)
	case OpForward:
		s.applyForward(op)
	case OpForwardDone:
		s.batch.Delete(outboxKey(s.scratch[:0], op.OutSeq), nil)
	default:
		s.log.Error("unknown op", "kind", op.Kind)
	}
}

// applySend appends a message to the recipient's inbox, once per
// (sender device, cmid, recipient), and answers Sent.
func (s *Shard) applySend(op *Op) {
	u, err := s.loadUser(op.User)
	if err != nil {
		s.log.Error("send: load recipient", "user", op.User, "err", err)
		s.replyError(op.EP, protocol.CodeInternal, 0, op.CMID)
		return
	}
	if u == nil {
		s.replyError(op.EP, protocol.CodeNotFound, 0, op.CMID)
		return
	}
	dk := dedupeKey(nil, op.User, op.From, op.FromDevice, op.CMID)
	prev, err := s.get(dk)
	if err != nil {
		s.log.Error("send: dedupe lookup", "err", err)
		s.replyError(op.EP, protocol.CodeInternal, 0, op.CMID)
		return
	}
	if len(prev) == 8 {
		start := len(s.out)
		s.out = codec.AppendSent(s.out, op.CMID, binary.BigEndian.Uint64(prev))
		s.reply(op.EP, start)
		return
	}
	id := s.ids.next(s.cfg.Now())
	s.scratch = append(s.scratch[:0], byte(protocol.KindMessage))
	s.scratch = codec.AppendMessageEntry(s.scratch, codec.Message{
		ID: id, From: op.From, Body: op.Body, Type: op.Type, FromDevice: op.FromDevice,
	})
	s.appendLocal(u, s.scratch)
	s.batch.Set(dk, be64(id), nil)
	s.batch.Set(dedupeExpiryKey(nil, s.day(), op.User, op.From, op.FromDevice, op.CMID), nil, nil)
	start := len(s.out)
	s.out = codec.AppendSent(s.out, op.CMID, id)
	s.reply(op.EP, start)
}

// applyRead records that op.From read op.User's messages up to op.UpTo and
// sends op.User a read receipt.
func (s *Shard) applyRead(op *Op) {
	u, err := s.loadUser(op.User)
	if err != nil {
		s.log.Error("read: load user", "user", op.User, "err", err)
		s.replyError(op.EP, protocol.CodeInternal, op.RID, 0)
		return
	}
	if u == nil {
		s.replyError(op.EP, protocol.CodeNotFound, op.RID, 0)
		return
	}
	rk := readKey(nil, op.User, op.From)
	prev, err := s.get(rk)
	if err != nil {
		s.log.Error("read: watermark", "err", err)
		s.replyError(op.EP, protocol.CodeInternal, op.RID, 0)
		return
	}
	if len(prev) != 8 || binary.BigEndian.Uint64(prev) < op.UpTo {
		s.batch.Set(rk, be64(op.UpTo), nil)
		s.scratch = append(s.scratch[:0], byte(protocol.KindReceipt))
		s.scratch = codec.AppendReceiptEntry(s.scratch, codec.Receipt{Peer: op.From, Type: pb.ReceiptType_RECEIPT_READ, UpTo: op.UpTo})
		s.appendLocal(u, s.scratch)
	}
	start := len(s.out)
	s.out = codec.AppendOK(s.out, op.RID)
	s.reply(op.EP, start)
}

// appendEntry appends entry (kind byte + stored body) to user id's inbox:
// here if this shard owns the user, else through the outbox.
func (s *Shard) appendEntry(id uint64, entry []byte) {
	if s.cfg.Forwarder.ShardOf(id) != s.cfg.ID {
		s.outSeq++
		v := binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(entry)), id)
		v = append(v, entry...)
		s.batch.Set(outboxKey(s.scratch[:0], s.outSeq), v, nil)
		s.effects = append(s.effects, effect{kind: effForward, op: Op{
			Kind: OpForward, Source: s.cfg.ID, OutSeq: s.outSeq, User: id, Entry: v[8:],
		}})
		return
	}
	u, err := s.loadUser(id)
	if err != nil {
		s.log.Error("append: load user", "user", id, "err", err)
		return
	}
	if u == nil {
		return // the user no longer exists: nothing to deliver
	}
	s.appendLocal(u, entry)
}

// appendLocal appends entry to the inbox of u, a user of this shard.
func (s *Shard) appendLocal(u *user, entry []byte) {
	u.rec.Head++
	s.batch.Set(inboxKey(nil, u.id, u.rec.Head), entry, nil)
	u.appended = true
	s.entries.Add(1)
	s.markDirty(u)
}

// applyForward appends an entry another shard's outbox carried here,
// exactly once per (source, outseq).
func (s *Shard) applyForward(op *Op) {
	if op.OutSeq > s.watermarks[op.Source] {
		u, err := s.loadUser(op.User)
		if err != nil {
			s.log.Error("forward: load user", "user", op.User, "err", err)
			return // not acknowledged: the source replays it after a restart
		}
		s.watermarks[op.Source] = op.OutSeq
		s.batch.Set(watermarkKey(nil, op.Source), be64(op.OutSeq), nil)
		if u != nil {
			s.appendLocal(u, op.Entry)
		}
	}
	s.effects = append(s.effects, effect{kind: effForwardDone, op: Op{Source: op.Source, OutSeq: op.OutSeq}})
}
