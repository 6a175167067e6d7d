package storage

import (
	"encoding/binary"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// SyncWanted reports what the cycles committed so far ask of the syncer:
// whether some cycle waits for a sync (wanted), and whether one of those
// may not wait for Config.LazySync (urgent). Tests that step a shard read
// it to see which commits ask for a sync (on the goroutine that steps
// the shard: lastUrgent is the actor's).
func (s *Shard) SyncWanted() (wanted, urgent bool) {
	synced := s.synced.Load()
	return s.wanted.Load() > synced, s.lastUrgent > synced
}

// AsFormat2 rewrites what s's database holds of user id as a format 2
// parleyd left it on the day of its last append: each of the user's inbox
// expiry records holds the user's head (format 2 rewrote the latest day's
// record with it every cycle that appended; use it with entries of one
// day), the user record ends before IndexDay, and the format is 2.
// The shard must be idle (no op in flight); restart the node after it.
func (s *Shard) AsFormat2(id uint64) error {
	lo := inboxKey(nil, id, 0)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo[:len(lo)-8])})
	if err != nil {
		return err
	}
	var head uint64
	if it.Last() {
		head = binary.BigEndian.Uint64(it.Key()[len(it.Key())-8:])
	}
	if err := it.Close(); err != nil {
		return err
	}
	b := s.db.NewBatch()
	defer b.Close()
	xs := appendPrefix(nil, SlotOfUser(id), tagExpiry)
	if it, err = s.db.NewIter(&pebble.IterOptions{LowerBound: xs, UpperBound: prefixEnd(xs)}); err != nil {
		return err
	}
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		if k := it.Key(); binary.BigEndian.Uint64(k[len(k)-8:]) == id {
			_ = b.Set(k, be64(head), nil)
			n++
		}
	}
	if err := it.Close(); err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("storage: user %d has no expiry record", id)
	}
	v, closer, err := s.db.Get(userKey(nil, id))
	if err != nil {
		return err
	}
	var rec userRecord
	err = rec.decode(v)
	_ = closer.Close()
	if err != nil {
		return err
	}
	rec.IndexDay = 0
	enc := rec.encode(nil)
	_ = b.Set(userKey(nil, id), enc[:len(enc)-1], nil) // IndexDay 0 is one byte
	_ = b.Set(shardKey(nil, tagVersion), be64(2), nil)
	return b.Commit(pebble.Sync)
}

// HasBody reports whether the database holds the body of group message
// gseq or its reference count, as the last commit left it.
func (s *Shard) HasBody(group, gseq uint64) (bool, error) {
	for _, tag := range []byte{tagBody, tagBodyRefs} {
		if v, err := s.dbGet(bodyKey(nil, tag, group, gseq)); err != nil || v != nil {
			return v != nil, err
		}
	}
	return false, nil
}

// Flush flushes s's memtable and waits for the flush. Each flush doubles
// the size of Pebble's next memtable (from 256 KiB up to
// Config.MemTableBytes), so a test that flushes a few times writes on
// without a memtable rotation, and the allocations of one, in its way.
// The shard must be stepped or paused.
func (s *Shard) Flush() error { return s.db.Flush() }
