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
// per destination (outbox.go).
const formatVersion = 2

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
		s.ids.last = max(s.ids.last, binary.BigEndian.Uint64(v))
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
	var err error
	for slot := 0; slot < NumSlots && budget > 0 && err == nil; slot++ {
		budget, err = s.expireInboxes(uint16(slot), cutoff, budget)
		if err == nil && budget > 0 {
			budget, err = s.expireDedupe(uint16(slot), cutoff, budget)
		}
	}
	if err == nil && budget > 0 {
		budget, err = s.expireBodies(cutoff, budget)
	}
	if err != nil {
		s.log.Error("maintenance", "err", err)
	}
	s.finishCycle()
	return budget == 0
}

// expireInboxes applies the expiry index of slot up to day cutoff.
func (s *Shard) expireInboxes(slot uint16, cutoff uint32, budget int) (int, error) {
	lo := appendPrefix(nil, slot, tagExpiry)
	hi := binary.BigEndian.AppendUint32(appendPrefix(nil, slot, tagExpiry), cutoff+1)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return budget, err
	}
	for ok := it.First(); ok && budget > 0; ok = it.Next() {
		k := it.Key()
		id := binary.BigEndian.Uint64(k[len(k)-8:])
		upTo := binary.BigEndian.Uint64(it.Value())
		s.batch.Delete(k, nil)
		budget--
		u, err := s.loadUser(id)
		if err != nil {
			_ = it.Close()
			return budget, err
		}
		if u == nil || upTo <= u.rec.Deleted {
			continue
		}
		s.batch.DeleteRange(inboxKey(nil, id, u.rec.Deleted+1), inboxKey(nil, id, upTo+1), nil)
		u.rec.Deleted = upTo
		u.rec.Receipted = max(u.rec.Receipted, upTo)
		s.markDirty(u)
	}
	return budget, it.Close()
}

// expireDedupe deletes the dedupe records of slot written up to day cutoff.
func (s *Shard) expireDedupe(slot uint16, cutoff uint32, budget int) (int, error) {
	lo := appendPrefix(nil, slot, tagDedupeExpiry)
	hi := binary.BigEndian.AppendUint32(appendPrefix(nil, slot, tagDedupeExpiry), cutoff+1)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return budget, err
	}
	for ok := it.First(); ok && budget > 0; ok = it.Next() {
		k := it.Key()
		// slot(2) 'e' day(4) | tag key… → slot(2) | tag key…
		dk := append(binary.BigEndian.AppendUint16(nil, slot), k[7:]...)
		s.batch.Delete(dk, nil)
		s.batch.Delete(k, nil)
		budget--
	}
	return budget, it.Close()
}

// expireBodies deletes group message bodies written up to day cutoff: the
// inbox entries that refer to them have expired too.
func (s *Shard) expireBodies(cutoff uint32, budget int) (int, error) {
	lo := shardKey(nil, tagBodyExpiry)
	hi := binary.BigEndian.AppendUint32(shardKey(nil, tagBodyExpiry), cutoff+1)
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
