package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// user is the in-memory state of one user of the shard. Actor-owned.
type user struct {
	id       uint64
	rec      userRecord
	devices  []*device // every device ever registered, revoked ones too
	live     int       // devices with a session
	dirty    bool      // rec changed in this cycle
	touched  bool      // in s.touched this cycle
	appended bool      // entries were appended this cycle
	// headBefore is Head before this cycle's first append (valid while
	// appended): the last seq of the days before this cycle's.
	headBefore uint64

	presenceAt time.Time // when watchers were last told of a change

	recent   recentWindow            // recent entries, while a session is live
	topCMID  map[senderDevice]uint64 // highest cmid stored from each sending device
	groups   int                     // groups the user belongs to; -1 until counted
	reserved []reservation           // group slots promised to adds in flight
	// groupCreates are when the user created groups in the last hour, in
	// memory only (a restart forgets them: a rate limit, not a quota).
	groupCreates []time.Time

	// blocked is who the user blocks (user → when, Unix ms); nil until
	// read (shard_block.go).
	blocked map[uint64]uint64
	// timers are the disappearing-message timers of the user's 1:1
	// conversations read so far, by peer (0: none) (shard_timer.go).
	timers map[uint64]uint32

	// inboxBytes is what the entries in (Deleted, Head] take, when
	// bytesKnown; counted on demand (inboxUsage) and kept up to date.
	inboxBytes int64
	bytesKnown bool

	// keysKnown: each device's hasKeys was read (shard_keys.go);
	// keysChanged: its devices with keys changed in this cycle, and their
	// contacts are to be told (flushKeyNotices).
	keysKnown, keysChanged bool

	// push is the user's push registrations and push-due records; nil
	// until read (shard_push.go).
	push *userPush
}

// device is one registered device. Actor-owned.
type device struct {
	id     uint32
	rec    deviceRecord
	cursor uint64   // highest seq acknowledged
	sess   *session // the live connection, or nil
	// hasKeys: the device published its keys (valid when the user's
	// keysKnown is set).
	hasKeys bool
}

// session is a device's live connection and its stream state.
type session struct {
	conn     ConnRef
	device   uint32     // the device it is of: picks its envelopes (envelopeFor)
	sent     uint64     // highest seq posted to this connection
	inflight []inflight // posted, not yet acknowledged, in seq order
	bytes    int        // sum of inflight sizes
	synced   bool       // Synced was sent
}

// inflight is one posted entry awaiting its ack.
type inflight struct {
	seq  uint64
	size int
}

// reservation is a group slot a user's shard promised to a group's add.
type reservation struct {
	group uint64
	until time.Time
}

// reservedGroups returns the live reservations, dropping expired ones.
func (u *user) reservedGroups(now time.Time) int {
	live := u.reserved[:0]
	for _, r := range u.reserved {
		if now.Before(r.until) {
			live = append(live, r)
		}
	}
	u.reserved = live
	return len(live)
}

// createLimit drops group creations older than an hour and returns how
// long u must wait before creating another, given perHour; 0 if it may now.
func (u *user) createLimit(now time.Time, perHour int) time.Duration {
	n := 0
	for n < len(u.groupCreates) && now.Sub(u.groupCreates[n]) >= time.Hour {
		n++
	}
	u.groupCreates = u.groupCreates[n:]
	if len(u.groupCreates) < perHour {
		return 0
	}
	return time.Hour - now.Sub(u.groupCreates[0])
}

// reserve renews u's reservation for group until, and reports whether it
// had one.
func (u *user) reserve(group uint64, until time.Time) bool {
	for i := range u.reserved {
		if u.reserved[i].group == group {
			u.reserved[i].until = until
			return true
		}
	}
	return false
}

// release ends the reservation for group, which the user has now joined.
func (u *user) release(group uint64) {
	for i, r := range u.reserved {
		if r.group == group {
			u.reserved = append(u.reserved[:i], u.reserved[i+1:]...)
			return
		}
	}
}

// activeDevices returns how many devices of u are not revoked.
func (u *user) activeDevices() int {
	n := 0
	for _, d := range u.devices {
		if !d.rec.Revoked {
			n++
		}
	}
	return n
}

// device returns the user's device id, or nil.
func (u *user) device(id uint32) *device {
	for _, d := range u.devices {
		if d.id == id {
			return d
		}
	}
	return nil
}

// minCursor returns the lowest cursor of the user's active devices, or the
// inbox head when there is none (everything may go).
func (u *user) minCursor() uint64 {
	m := u.rec.Head
	for _, d := range u.devices {
		if !d.rec.Revoked && d.cursor < m {
			m = d.cursor
		}
	}
	return m
}

// touch marks u to be pumped and its record flushed at the end of the cycle.
func (s *Shard) touch(u *user) {
	if !u.touched {
		u.touched = true
		s.touched = append(s.touched, u)
	}
}

// markDirty records that u's record changed.
func (s *Shard) markDirty(u *user) {
	u.dirty = true
	s.touch(u)
}

// get reads key through the current batch, returning a copy of the value
// (non-nil, possibly empty), or nil when the key does not exist. An error
// aborts the cycle.
func (s *Shard) get(key []byte) ([]byte, error) { return s.getAppend(nil, key) }

// getAppend is get that copies the value into dst[:0], for a caller that
// reads it at once and reuses dst.
func (s *Shard) getAppend(dst, key []byte) ([]byte, error) {
	var v []byte
	var closer io.Closer
	var err error
	if s.batch != nil {
		v, err = s.batchGet(key)
	} else {
		v, closer, err = s.db.Get(key)
	}
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		err = fmt.Errorf("storage: get %x: %w", key, err)
		s.abort(err)
		return nil, err
	}
	if dst == nil {
		dst = make([]byte, 0, len(v)) // non-nil even when empty
	}
	out := append(dst[:0], v...)
	if closer != nil {
		_ = closer.Close()
	}
	return out, nil
}

// batchGet reads key in a cycle, as Batch.Get does but through an
// iterator over the cycle's batch, opened at the cycle's first read and
// kept until the batch is closed (closeBatch): a Batch.Get builds two
// iterators over the batch on the heap for every read. Before each read
// the iterator takes in what the batch got since the last (SetOptions),
// so it sees what Batch.Get would: the batch over the database as it
// stands, which only this actor's commits change and none falls inside a
// cycle. The database's comparer makes a whole key its prefix, so a
// prefix seek finds key or nothing, past Bloom filters as Get does. The
// value is valid until the next read; pebble.ErrNotFound when there is
// none.
func (s *Shard) batchGet(key []byte) ([]byte, error) {
	if s.getIter == nil {
		it, err := s.batch.NewIter(&s.getIterOpts)
		if err != nil {
			return nil, err
		}
		s.getIter = it
	} else {
		s.getIter.SetOptions(&s.getIterOpts)
	}
	it := s.getIter
	if !it.SeekPrefixGE(key) || !bytes.Equal(it.Key(), key) {
		if err := it.Error(); err != nil {
			return nil, err
		}
		return nil, pebble.ErrNotFound
	}
	return it.ValueAndErr()
}

// closeBatch closes the cycle's batch and the iterator its reads kept.
func (s *Shard) closeBatch() {
	if s.getIter != nil {
		if err := s.getIter.Close(); err != nil {
			s.log.Error("closing the cycle's read iterator", "err", err)
		}
		s.getIter = nil
	}
	_ = s.batch.Close()
	s.batch = nil
}

// loadUser returns user id's state, reading it on first use; nil when the
// user does not exist. An error aborts the cycle.
func (s *Shard) loadUser(id uint64) (*user, error) {
	if u, ok := s.users[id]; ok {
		return u, nil
	}
	u, err := s.readUser(id)
	if err != nil {
		s.abort(err)
	}
	return u, err
}

func (s *Shard) readUser(id uint64) (*user, error) {
	v, err := s.get(userKey(s.scratch[:0], id))
	if err != nil || v == nil {
		return nil, err
	}
	u := &user{id: id, groups: -1}
	if err := u.rec.decode(v); err != nil {
		return nil, fmt.Errorf("user %d: %w", id, err)
	}
	// Appending an entry does not rewrite the user record (but for the
	// day's first append, for IndexDay): the inbox's last key is the head
	// whenever the inbox is not empty, and every change that empties it
	// (deletion, expiry) writes the record.
	if last, err := s.lastInboxSeq(id); err != nil {
		return nil, err
	} else if last > u.rec.Head {
		u.rec.Head = last
	}
	u.bytesKnown = u.rec.Head == u.rec.Deleted
	if err := s.loadDevices(u); err != nil {
		return nil, err
	}
	s.users[id] = u
	return u, nil
}

// lastInboxSeq returns the seq of the last entry in u's inbox, 0 if empty.
func (s *Shard) lastInboxSeq(u uint64) (uint64, error) {
	lo := inboxKey(nil, u, 0)
	it, err := s.reader().NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo[:len(lo)-8])})
	if err != nil {
		return 0, fmt.Errorf("storage: inbox of %d: %w", u, err)
	}
	var last uint64
	if it.Last() {
		k := it.Key()
		last = binary.BigEndian.Uint64(k[len(k)-8:])
	}
	return last, it.Close()
}

// loadDevices reads u's device records and cursors, none below
// u.rec.Deleted.
func (s *Shard) loadDevices(u *user) error {
	lo := deviceKey(nil, tagDevice, u.id, 0)
	hi := prefixEnd(lo[:len(lo)-4])
	it, err := s.reader().NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return fmt.Errorf("storage: devices of %d: %w", u.id, err)
	}
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		d := &device{id: binary.BigEndian.Uint32(k[len(k)-4:])}
		if err := d.rec.decode(it.Value()); err != nil {
			_ = it.Close()
			return fmt.Errorf("device %d/%d: %w", u.id, d.id, err)
		}
		u.devices = append(u.devices, d)
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("storage: devices of %d: %w", u.id, err)
	}
	for _, d := range u.devices {
		v, err := s.get(deviceKey(s.scratch[:0], tagCursor, u.id, d.id))
		if err != nil {
			return err
		}
		if len(v) == 8 {
			d.cursor = binary.BigEndian.Uint64(v)
		}
		// advanceCursor does not write a cursor that deletion reached.
		d.cursor = max(d.cursor, u.rec.Deleted)
	}
	return nil
}

// prefixEnd returns the smallest key after every key starting with p.
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		end[i]++
		if end[i] != 0 {
			return end[:i+1]
		}
	}
	return nil
}

// reader is what the actor reads through: the batch during a cycle.
func (s *Shard) reader() pebble.Reader {
	if s.batch != nil {
		return s.batch
	}
	return s.db
}

// setCursor records d's cursor in the batch.
func (s *Shard) setCursor(u *user, d *device) {
	s.batch.Set(deviceKey(s.scratch[:0], tagCursor, u.id, d.id), be64(d.cursor), nil)
}

// evict drops users with no live session once the cache is over its size.
func (s *Shard) evict() {
	over := len(s.users) - s.cfg.CacheUsers
	if over <= 0 {
		return
	}
	for id, u := range s.users {
		if u.live == 0 {
			delete(s.users, id)
			if over--; over == 0 {
				return
			}
		}
	}
}
