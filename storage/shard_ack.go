package storage

import (
	"fmt"

	"github.com/cockroachdb/pebble/v2"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// applyAck moves a device's cursor, sends delivered receipts for messages
// acknowledged for the first time, and deletes what every device has.
func (s *Shard) applyAck(op *Op) {
	u, err := s.loadUser(op.User)
	if err != nil || u == nil {
		s.log.Error("ack: load user", "user", op.User, "err", err)
		return
	}
	d := u.device(op.Device)
	if d == nil || d.sess == nil || d.sess.ep != op.EP {
		return // from a connection that is no longer the device's session
	}
	sess := d.sess
	if op.Seq > sess.sent {
		// [S-8-5] an ack beyond what was delivered.
		s.effects = append(s.effects, effect{kind: effClose, ep: op.EP, code: protocol.CodeProtocolViolation})
		s.endSession(u, d)
		return
	}
	if op.Seq <= d.cursor {
		return
	}
	d.cursor = op.Seq
	s.setCursor(u, d)
	n := 0
	for n < len(sess.inflight) && sess.inflight[n].seq <= op.Seq {
		sess.bytes -= sess.inflight[n].size
		n++
	}
	sess.inflight = append(sess.inflight[:0], sess.inflight[n:]...)
	if len(sess.inflight) == 0 {
		sess.inflight = nil
	}
	if op.Seq > u.rec.Receipted {
		if err := s.deliveredReceipts(u, u.rec.Receipted, op.Seq); err != nil {
			s.log.Error("ack: receipts", "user", u.id, "err", err)
		} else {
			u.rec.Receipted = op.Seq
			s.markDirty(u)
		}
	}
	s.deleteAcknowledged(u)
	s.touch(u)
}

// deliveredReceipts sends, for the entries (from, to] of u's inbox, one
// delivered receipt to each sender, naming the largest message id.
func (s *Shard) deliveredReceipts(u *user, from, to uint64) error {
	it, err := s.batch.NewIter(&pebble.IterOptions{
		LowerBound: inboxKey(nil, u.id, from+1),
		UpperBound: inboxKey(nil, u.id, to+1),
	})
	if err != nil {
		return fmt.Errorf("storage: inbox of %d: %w", u.id, err)
	}
	type upTo struct{ sender, id uint64 }
	var senders []upTo
	for ok := it.First(); ok; ok = it.Next() {
		v := it.Value()
		if len(v) == 0 || protocol.Kind(v[0]) != protocol.KindMessage {
			continue
		}
		m, err := codec.ParseMessage(v[1:])
		if err != nil {
			_ = it.Close()
			return fmt.Errorf("storage: inbox of %d: %w", u.id, err)
		}
		if m.From == u.id {
			continue
		}
		found := false
		for i := range senders {
			if senders[i].sender == m.From {
				senders[i].id = max(senders[i].id, m.ID)
				found = true
				break
			}
		}
		if !found {
			senders = append(senders, upTo{m.From, m.ID})
		}
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("storage: inbox of %d: %w", u.id, err)
	}
	for _, r := range senders {
		entry := append([]byte{byte(protocol.KindReceipt)}, codec.AppendReceiptEntry(nil, codec.Receipt{
			Peer: u.id, Type: pb.ReceiptType_RECEIPT_DELIVERED, UpTo: r.id,
		})...)
		s.appendEntry(r.sender, entry)
	}
	return nil
}

// deleteAcknowledged deletes the entries every active device has
// acknowledged (DESIGN.md invariant 3).
func (s *Shard) deleteAcknowledged(u *user) {
	m := u.minCursor()
	if m <= u.rec.Deleted {
		return
	}
	s.batch.DeleteRange(inboxKey(nil, u.id, u.rec.Deleted+1), inboxKey(nil, u.id, m+1), nil)
	u.rec.Deleted = m
	s.markDirty(u)
}
