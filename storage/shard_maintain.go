package storage

import (
	"encoding/binary"
	"fmt"

	"github.com/cockroachdb/pebble/v2"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
)

// sweepChunk bounds the keys one maintenance step deletes, so a large
// sweep does not stall the ops queued behind it.
const sweepChunk = 4096

// recover restores the actor's shard-level state from the database: the
// last message id, outbox position and watermarks. Users load lazily.
func (s *Shard) recover() error {
	v, err := s.get(shardKey(nil, tagLastID))
	if err != nil {
		return err
	}
	if len(v) == 8 {
		s.ids.last = binary.BigEndian.Uint64(v)
	}
	lo := shardKey(nil, tagWatermark)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		return fmt.Errorf("storage: recover watermarks: %w", err)
	}
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		s.watermarks[binary.BigEndian.Uint16(k[len(k)-2:])] = binary.BigEndian.Uint64(it.Value())
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("storage: recover watermarks: %w", err)
	}
	lo = shardKey(nil, tagOutbox)
	it, err = s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		return fmt.Errorf("storage: recover outbox: %w", err)
	}
	if it.Last() {
		k := it.Key()
		s.outSeq = binary.BigEndian.Uint64(k[len(k)-8:])
	}
	return it.Close()
}

// replayOutbox forwards every outbox entry not yet acknowledged, in order.
// Destinations apply each (source, outseq) once, so replaying what was
// already applied is harmless.
func (s *Shard) replayOutbox() error {
	lo := shardKey(nil, tagOutbox)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		return fmt.Errorf("storage: replay outbox: %w", err)
	}
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		v := append([]byte(nil), it.Value()...)
		var d delivery
		if err := d.decode(v); err != nil || len(d.users) == 0 {
			s.log.Error("outbox record", "err", err)
			continue
		}
		seq := binary.BigEndian.Uint64(k[len(k)-8:])
		if d.group != 0 && len(d.entry) > 0 && protocol.Kind(d.entry[0]) == protocol.KindMessage {
			// A group message still on its way: a retried send waits for it.
			gk := gkey{d.group, d.gseq}
			p := s.groupSends[gk]
			if p == nil {
				m, _ := codec.ParseMessage(d.entry[1:])
				p = &groupSend{id: m.ID}
				s.groupSends[gk] = p
			}
			p.remaining++
			s.outboxGroup[seq] = gk
		}
		s.cfg.Forwarder.Forward(Op{Kind: OpForward, Source: s.cfg.ID, OutSeq: seq, User: d.users[0], Entry: v})
		n++
	}
	if n > 0 {
		s.log.Info("replayed outbox", "entries", n)
	}
	return it.Close()
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
