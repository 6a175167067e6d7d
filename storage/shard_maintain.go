package storage

import (
	"encoding/binary"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// sweepChunk bounds the keys one maintenance step deletes, so a large
// sweep does not stall the ops queued behind it.
const sweepChunk = 4096

// formatVersion is the layout of the keys the shard writes (keys.go).
// Format 1 had one outbox sequence for all destinations; format 2 has one
// per destination (outbox.go). Format 3 writes the inbox expiry index once
// per user and day, the latest day's record open (empty, indexDay); a
// format 2 parleyd would drop such a record without expiring its entries,
// so it refuses a format 3 database. Format 3 reads format 2's records
// (each one closed: its day's last seq) as they are.
const formatVersion = 3

// recover restores the actor's shard-level state from the database: the
// format, the last message id, and both sides of every outbox pair. Users
// and groups load lazily.
func (s *Shard) recover() error {
	if err := s.upgrade(); err != nil {
		return err
	}
	v, err := s.get(shardKey(nil, tagLastID))
	if err != nil {
		return err
	}
	if len(v) == 8 {
		s.idsStored = binary.BigEndian.Uint64(v)
		s.ids.last = max(s.ids.last, s.idsStored)
	}
	return s.recoverOutbox()
}

// upgrade brings the database to formatVersion, stamping a new one. A
// format 1 database (no version key) has its outbox moved into per
// destination pairs, in order, and its watermarks dropped: both sides of
// every pair start again from zero, every shard of the node upgrading at
// the same start. An entry applied by its destination but not yet deleted
// by its source when the old node stopped is applied again: the upgrade
// log says how many entries moved.
func (s *Shard) upgrade() error {
	v, err := s.get(shardKey(nil, tagVersion))
	if err != nil {
		return err
	}
	switch {
	case len(v) == 8 && binary.BigEndian.Uint64(v) == formatVersion:
		return nil
	case len(v) == 8 && binary.BigEndian.Uint64(v) == 2:
		// Nothing moves: format 2's expiry records are read as they are.
		if err := s.db.Set(shardKey(nil, tagVersion), be64(formatVersion), pebble.Sync); err != nil {
			return fmt.Errorf("storage: upgrade shard %d to format %d: %w", s.cfg.ID, formatVersion, err)
		}
		return nil
	case len(v) == 8:
		return fmt.Errorf("storage: shard %d has format %d, this parleyd reads format %d", s.cfg.ID, binary.BigEndian.Uint64(v), formatVersion)
	}
	b := s.db.NewIndexedBatch()
	defer b.Close()
	next := map[uint16]uint64{}
	moved := 0
	if err := s.scan(shardKey(nil, tagOutboxV1), func(k, v []byte) error {
		var d delivery
		if err := d.decode(v); err != nil {
			return err
		}
		if len(d.users) == 0 {
			return fmt.Errorf("%w: format 1 outbox entry without users", errCorrupt)
		}
		dest := s.cfg.Forwarder.ShardOf(d.users[0])
		next[dest]++
		if err := b.Set(outboxKey(nil, dest, next[dest]), v, nil); err != nil {
			return err
		}
		moved++
		return b.Delete(k, nil)
	}); err != nil {
		return fmt.Errorf("storage: upgrade shard %d outbox: %w", s.cfg.ID, err)
	}
	for dest, n := range next {
		if err := b.Set(outSeqKey(nil, dest), be64(n), nil); err != nil {
			return err
		}
	}
	if err := s.scan(shardKey(nil, tagWatermarkV1), func(k, _ []byte) error {
		return b.Delete(k, nil)
	}); err != nil {
		return fmt.Errorf("storage: upgrade shard %d watermarks: %w", s.cfg.ID, err)
	}
	if err := b.Set(shardKey(nil, tagVersion), be64(formatVersion), nil); err != nil {
		return err
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("storage: upgrade shard %d: %w", s.cfg.ID, err)
	}
	if moved > 0 {
		s.log.Warn("upgraded the outbox to format 2; entries in flight when the old node stopped may be delivered twice", "entries", moved)
	}
	return nil
}

// maintain deletes, in chunks, inbox entries older than the retention
// period and send dedupe records past it (DESIGN.md invariant 3). It
// reports whether work remains.
func (s *Shard) maintain() bool {
	cutoff := uint32(s.cfg.Now().Add(-s.cfg.Retention).Unix() / 86400)
	s.batch = s.db.NewIndexedBatch()
	budget := sweepChunk
	it, err := s.db.NewIter(nil)
	if err == nil {
		budget = s.walkIndex(it, tagExpiry, cutoff, budget, s.expireInbox)
		budget = s.walkIndex(it, tagDedupeExpiry, cutoff, budget, s.expireDedupe)
		budget = s.walkIndex(it, tagMsgIndex, cutoff, budget, s.expireMsgIndex)
		// Disappearing messages, by the second they expire ([S-18-10]).
		budget = s.walkIndex(it, tagExpiring, uint32(s.cfg.Now().Unix()), budget, s.expireEntry)
		// Code states written two days ago or earlier: a day is enough
		// for any of them to be done with (expireCode checks).
		budget = s.walkIndex(it, tagCodeExpiry, s.day()-2, budget, s.expireCode)
		err = it.Close()
	}
	if err == nil && budget > 0 {
		budget, err = s.expireBodies(tagBodyExpiry, cutoff, budget)
	}
	if err == nil && budget > 0 {
		// Disappearing group messages, by the second they expire.
		budget, err = s.expireBodies(tagBodyExpiring, uint32(s.cfg.Now().Unix()), budget)
	}
	if err != nil {
		s.abort(fmt.Errorf("storage: maintenance: %w", err))
	}
	s.finishCycle()
	return budget == 0
}

// walkIndex calls fn for each key of the per-slot day index tag (slot, tag,
// 4-byte day, …) whose day is at most cutoff, in every slot, while budget
// lasts, and returns what is left of it. One iterator seeks from slot to
// slot, so slots without such keys cost one seek or none.
func (s *Shard) walkIndex(it *pebble.Iterator, tag byte, cutoff uint32, budget int, fn func(k, v []byte)) int {
	for slot := 0; slot < NumSlots && budget > 0 && s.cycleErr == nil; {
		if !it.SeekGE(appendPrefix(s.scratch[:0], uint16(slot), tag)) {
			break
		}
		k := it.Key()
		ks := int(binary.BigEndian.Uint16(k))
		switch {
		case ks > slot: // nothing of this slot at or after the index
			slot = ks
			continue
		case k[2] != tag: // past this slot's index
			slot++
			continue
		}
		for ok := true; ok && budget > 0; ok = it.Next() {
			k = it.Key()
			if len(k) < 7 || int(binary.BigEndian.Uint16(k)) != slot || k[2] != tag || binary.BigEndian.Uint32(k[3:]) > cutoff {
				break
			}
			fn(k, it.Value())
			budget--
		}
		slot++
	}
	return budget
}

// indexDay keeps the inbox expiry index of u, to which this cycle
// appended on day: one record per user and day with entries, written on
// the day's first append rather than in every cycle that appends. The
// latest day's record is open (an empty value: its entries run to the
// head) and the user record names its day (IndexDay); the first append of
// a later day closes it with its last seq, the value every record had in
// format 2, and opens that day's. Any other day than IndexDay does so,
// an earlier one too: after a clock that jumped ahead for a while comes
// back, the future day's record is closed and today's, open, reaches to
// the head, so no entry waits for the future day to pass retention.
func (s *Shard) indexDay(u *user, day uint32) {
	if day == u.rec.IndexDay {
		return
	}
	if open := u.rec.IndexDay; open != 0 {
		k := expiryKey(s.scratch[:0], open, u.id)
		if u.headBefore > u.rec.Deleted {
			s.batch.Set(k, be64(u.headBefore), nil)
		} else {
			s.batch.Delete(k, nil) // every entry of that day is gone already
		}
	}
	s.batch.Set(expiryKey(s.scratch[:0], day, u.id), nil, nil)
	u.rec.IndexDay = day
	u.dirty = true // finishCycle writes the record after this
}

// expireInbox applies one key of the inbox expiry index, of a day past
// retention: a closed record (8 bytes) says the user's entries of that day
// end at its seq; an open one (empty) that every entry is of that day or
// before (indexDay).
func (s *Shard) expireInbox(k, v []byte) {
	s.batch.Delete(k, nil)
	if len(k) != 15 || (len(v) != 8 && len(v) != 0) {
		return
	}
	day := binary.BigEndian.Uint32(k[3:])
	id := binary.BigEndian.Uint64(k[7:])
	u, err := s.loadUser(id)
	if err != nil || u == nil {
		return
	}
	var upTo uint64
	if len(v) == 8 {
		upTo = binary.BigEndian.Uint64(v)
	} else {
		if u.rec.IndexDay != day {
			// Not the record the user names as open, which cannot be:
			// closing one and opening the next are one batch. Keeping
			// the entries is the safe side.
			return
		}
		upTo = u.rec.Head
		// The user record is written only if entries go too (below).
		// Nothing to delete, it keeps naming the day whose record is
		// gone until it is written for another reason; harmless, since
		// every entry up to the head is deleted: the next day's first
		// append only deletes the gone record's key again (indexDay).
		u.rec.IndexDay = 0
	}
	if upTo <= u.rec.Deleted {
		return
	}
	s.batch.DeleteRange(inboxKey(nil, id, u.rec.Deleted+1), inboxKey(nil, id, upTo+1), nil)
	s.flow.deleted.Add(upTo - u.rec.Deleted)
	u.rec.Deleted = upTo
	u.rec.Receipted = max(u.rec.Receipted, upTo)
	u.bytesKnown = upTo == u.rec.Head
	u.inboxBytes = 0
	s.markDirty(u)
}

// expireDedupe deletes one dedupe record written on a day past retention,
// with its index key.
func (s *Shard) expireDedupe(k, _ []byte) {
	// slot(2) 'e' day(4) | tag key… → slot(2) | tag key…
	dk := append(append(s.scratch[:0], k[:2]...), k[7:]...)
	s.batch.Delete(dk, nil)
	s.batch.Delete(k, nil)
}

// expireBodies deletes the group message bodies of the index tag (ffff
// tag time group gseq) up to time cutoff: tagBodyExpiry by the day they
// were written (the inbox entries that refer to them have expired too),
// tagBodyExpiring by the second they disappear ([S-18-10]).
func (s *Shard) expireBodies(tag byte, cutoff uint32, budget int) (int, error) {
	lo := shardKey(nil, tag)
	hi := binary.BigEndian.AppendUint32(shardKey(nil, tag), cutoff+1)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return budget, err
	}
	for ok := it.First(); ok && budget > 0; ok = it.Next() {
		k := it.Key()
		g, gseq := binary.BigEndian.Uint64(k[len(k)-16:]), binary.BigEndian.Uint64(k[len(k)-8:])
		s.batch.Delete(bodyKey(nil, tagBody, g, gseq), nil)
		s.batch.Delete(bodyKey(nil, tagBodyRefs, g, gseq), nil)
		s.batch.Delete(k, nil)
		budget--
	}
	return budget, it.Close()
}
