package storage

import (
	"encoding/binary"
	"fmt"

	"github.com/cockroachdb/pebble/v2"

	"github.com/parley-im/parley/analytics"
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
	if d == nil || d.sess == nil || d.sess.conn != op.Conn {
		return // from a connection that is no longer the device's session
	}
	sess := d.sess
	if op.Seq > sess.sent {
		// [S-8-5] an ack beyond what was delivered.
		s.effects = append(s.effects, effect{kind: effClose, conn: op.Conn, code: protocol.CodeProtocolViolation})
		s.endSession(u, d)
		return
	}
	if op.Seq <= d.cursor {
		return
	}
	n := 0
	for n < len(sess.inflight) && sess.inflight[n].seq <= op.Seq {
		sess.bytes -= sess.inflight[n].size
		n++
	}
	sess.inflight = append(sess.inflight[:0], sess.inflight[n:]...)
	if len(sess.inflight) == 0 && cap(sess.inflight) > keptInflight {
		sess.inflight = nil
	}
	s.advanceCursor(u, d, op.Seq)
	s.touch(u)
}

// keptInflight is the most entries an idle session's inflight list keeps
// room for: a device that acknowledges every entry or two posts the next
// without allocating, and a session idle after a backlog gives the rest
// of its memory back.
const keptInflight = 4

// advanceCursor moves d's cursor to seq, which is above it: an Ack, or a
// Login whose client has processed more than it acknowledged. Messages
// acknowledged for the first time by any device of u get their delivered
// receipts, and what every device has is deleted.
func (s *Shard) advanceCursor(u *user, d *device, seq uint64) {
	s.flow.acknowledged.Add(seq - d.cursor)
	d.cursor = seq
	if seq > u.rec.Receipted {
		if err := s.deliveredReceipts(u, u.rec.Receipted, seq); err != nil {
			s.abort(fmt.Errorf("storage: receipts of %d: %w", u.id, err))
			return
		}
		u.rec.Receipted = seq
		s.markDirty(u)
	}
	s.deleteAcknowledged(u)
	// A cursor at or below Deleted is not written: loadDevices reads every
	// cursor as at least Deleted, which the user record holds (written
	// in this cycle when it moved). So the device with the lowest cursor,
	// a user's only device always, writes no cursor record of its own.
	if d.cursor > u.rec.Deleted {
		s.setCursor(u, d)
	}
}

// deliveredReceipts sends, for the entries (from, to] of u's inbox, one
// delivered receipt to each sender (per group for group messages), naming
// the largest message id.
func (s *Shard) deliveredReceipts(u *user, from, to uint64) error {
	senders := s.upTos[:0]
	defer func() { s.upTos = senders[:0] }()
	note := func(from, group, id uint64) {
		if from == u.id {
			return
		}
		for i := range senders {
			if senders[i].sender == from && senders[i].group == group {
				senders[i].id = max(senders[i].id, id)
				return
			}
		}
		senders = append(senders, upTo{from, group, id})
	}
	if u.recent.covers(from, to) {
		for _, m := range u.recent.slice(from, to) {
			if m.kind == kindGroupRef || m.kind == kindEnvelopes || protocol.Kind(m.kind) == protocol.KindMessage {
				note(m.from, m.group, m.id)
			}
		}
	} else if err := s.scanInbox(u, from, to, func(_ uint64, m codec.Message) { note(m.From, m.Group, m.ID) }); err != nil {
		return err
	}
	for _, r := range senders {
		s.emit(analytics.Event{Type: analytics.TypeMessageDelivered, User: u.id, Peer: r.sender, Group: r.group, ID: r.id})
		if r.group != 0 {
			// Coalesced with the other members' receipts of this cycle into
			// one Receipts entry per sender and group ([S-16-8]), so a
			// 1024-member group does not cost a forward per member.
			k := receiptKey{r.sender, r.group, pb.ReceiptType_RECEIPT_DELIVERED}
			s.noteReceipt(k, u.id, r.id)
			continue
		}
		s.entry = codec.AppendReceiptEntry(append(s.entry[:0], byte(protocol.KindReceipt)), codec.Receipt{
			Peer: u.id, Type: pb.ReceiptType_RECEIPT_DELIVERED, UpTo: r.id,
		})
		s.appendEntry(r.sender, s.entry, 0)
	}
	return nil
}

// upTo is the highest message id of one sender (and group) among entries
// being acknowledged (deliveredReceipts).
type upTo struct{ sender, group, id uint64 }

// scanInbox calls fn for every message entry of u's inbox in (from, to],
// resolving group references to their bodies.
func (s *Shard) scanInbox(u *user, from, to uint64, fn func(seq uint64, m codec.Message)) error {
	it, err := s.batch.NewIter(&pebble.IterOptions{
		LowerBound: inboxKey(nil, u.id, from+1),
		UpperBound: inboxKey(nil, u.id, to+1),
	})
	if err != nil {
		return fmt.Errorf("storage: inbox of %d: %w", u.id, err)
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		v := it.Value()
		if len(v) == 0 {
			continue
		}
		stored := v[1:]
		switch {
		case v[0] == kindGroupRef && len(v) == 17:
			body, err := s.groupBody(binary.BigEndian.Uint64(v[1:]), binary.BigEndian.Uint64(v[9:]))
			if err != nil || len(body) == 0 || protocol.Kind(body[0]) != protocol.KindMessage {
				continue // expired, or deleted for everyone ([S-18-3])
			}
			stored = body[1:]
		case v[0] == kindEnvelopes:
			f, ok := envelopeFields(v)
			if !ok {
				continue
			}
			stored = f
		case protocol.Kind(v[0]) != protocol.KindMessage:
			continue
		}
		m, err := codec.ParseMessage(stored)
		if err != nil {
			return fmt.Errorf("storage: inbox of %d: %w", u.id, err)
		}
		k := it.Key()
		fn(binary.BigEndian.Uint64(k[len(k)-8:]), m)
	}
	return nil
}

// deleteAcknowledged deletes the entries every active device has
// acknowledged (DESIGN.md invariant 3), releasing the group bodies they
// refer to.
func (s *Shard) deleteAcknowledged(u *user) {
	m := u.minCursor()
	if m <= u.rec.Deleted {
		return
	}
	u.inboxBytes -= s.releaseRefs(u, u.rec.Deleted, m)
	if m-u.rec.Deleted <= maxPointDeletes {
		// Point deletes: a range tombstone per ack makes every later read
		// re-fragment the memtable's tombstones (measured: half the CPU).
		// An inbox key is set once and deleted once (appendRaw only moves
		// forward from the head, which survives restarts), so a single
		// delete lets a flush drop the pair instead of keeping a tombstone.
		for seq := u.rec.Deleted + 1; seq <= m; seq++ {
			s.batch.SingleDelete(inboxKey(s.scratch[:0], u.id, seq), nil)
		}
	} else {
		s.batch.DeleteRange(inboxKey(nil, u.id, u.rec.Deleted+1), inboxKey(nil, u.id, m+1), nil)
	}
	u.recent.forget(m)
	s.flow.deleted.Add(m - u.rec.Deleted)
	u.rec.Deleted = m
	if m == u.rec.Head {
		u.inboxBytes, u.bytesKnown = 0, true
	}
	s.markDirty(u)
}

// maxPointDeletes is the most acknowledged entries deleted one by one;
// a larger run is one range deletion.
const maxPointDeletes = 4096

// releaseRefs drops the body references of u's group entries in (from,
// to], which are being deleted, and returns the bytes those entries took.
func (s *Shard) releaseRefs(u *user, from, to uint64) (size int64) {
	if u.recent.covers(from, to) {
		for _, m := range u.recent.slice(from, to) {
			size += int64(m.size)
			if m.kind == kindGroupRef {
				s.releaseBody(m.group, m.gseq)
			}
		}
		return size
	}
	it, err := s.batch.NewIter(&pebble.IterOptions{
		LowerBound: inboxKey(nil, u.id, from+1),
		UpperBound: inboxKey(nil, u.id, to+1),
	})
	if err != nil {
		s.abort(fmt.Errorf("storage: release refs of %d: %w", u.id, err))
		return
	}
	for ok := it.First(); ok; ok = it.Next() {
		v := it.Value()
		size += int64(len(v))
		if len(v) == 17 && v[0] == kindGroupRef {
			s.releaseBody(binary.BigEndian.Uint64(v[1:]), binary.BigEndian.Uint64(v[9:]))
		}
	}
	if err := it.Close(); err != nil {
		s.abort(fmt.Errorf("storage: release refs of %d: %w", u.id, err))
	}
	return size
}

// inboxFull reports whether one more entry of size bytes would take u's
// queue of undelivered entries beyond its quota (Config.InboxEntries,
// InboxBytes). The bytes are counted only when the number of entries does
// not already rule the byte quota out: once, by reading the inbox, then
// kept up to date.
func (s *Shard) inboxFull(u *user, size int) bool {
	entries := int64(u.rec.Head - u.rec.Deleted)
	if entries+1 > int64(s.cfg.InboxEntries) {
		return true
	}
	if entries*maxEntryBytes+int64(size) <= s.cfg.InboxBytes {
		return false
	}
	if !u.bytesKnown {
		it, err := s.batch.NewIter(&pebble.IterOptions{
			LowerBound: inboxKey(nil, u.id, u.rec.Deleted+1),
			UpperBound: inboxKey(nil, u.id, u.rec.Head+1),
		})
		if err != nil {
			s.abort(fmt.Errorf("storage: inbox of %d: %w", u.id, err))
			return true
		}
		var n int64
		for ok := it.First(); ok; ok = it.Next() {
			n += int64(len(it.Value()))
		}
		if err := it.Close(); err != nil {
			s.abort(fmt.Errorf("storage: inbox of %d: %w", u.id, err))
			return true
		}
		u.inboxBytes, u.bytesKnown = n, true
	}
	return u.inboxBytes+int64(size) > s.cfg.InboxBytes
}

// maxEntryBytes bounds one stored inbox entry: the largest body, the
// message's fields and the kind byte.
const maxEntryBytes = protocol.MaxMessageBody + 64
