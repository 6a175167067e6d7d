package storage

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// What an operator's tools need of a running shard: a pause at a cycle
// boundary and a checkpoint (online backups, docs/operations.md), whether
// it serves (readiness), and a read of one user's devices and queue.
//
// A cycle (an op batch, a timer run, a maintenance chunk, the outbox
// replay) runs with cycleMu held by the actor; Pause takes it, so while a
// shard is paused its database holds whole cycles only and changes not at
// all. Pausing every shard of a node before checkpointing any gives a cut
// of the node's state at one instant, which is consistent across shards:
// see docs/operations.md, "Backups".

// Pause waits until the shard's actor is between two cycles and keeps it
// there until resume is called: ops queue up meanwhile (Submit still never
// blocks), the syncer still makes committed cycles durable and emits them.
// Call resume exactly once, soon: a paused shard answers nothing new. Any
// goroutine may call Pause; a shard must not be paused twice at once.
func (s *Shard) Pause() (resume func()) {
	s.cycleMu.Lock()
	return s.cycleMu.Unlock
}

// Checkpoint writes a copy of the shard's database to dir, which must not
// exist, with everything committed so far, synced or not (Pebble's
// checkpoint: sstables hard-linked where the file system allows, the WAL
// copied). dir opens as a shard's Dir. Call it while the shard is paused,
// so the copy holds whole cycles and matches the other shards' copies;
// not after Close.
func (s *Shard) Checkpoint(dir string) error {
	if err := s.db.Checkpoint(dir, pebble.WithFlushedWAL()); err != nil {
		return fmt.Errorf("storage: checkpoint shard %d: %w", s.cfg.ID, err)
	}
	return nil
}

// Serving reports whether the shard takes ops: started, not closing and
// not stopped by a storage failure. Any goroutine may call it.
func (s *Shard) Serving() bool {
	if !s.started.Load() {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.closing
}

// UserInfo is what Inspect reads of one account.
type UserInfo struct {
	// User is the account's id; Phone its number.
	User  uint64 `json:"user"`
	Phone string `json:"phone"`
	// Head is the last seq issued in the account's inbox.
	Head uint64 `json:"head"`
	// Devices are the account's devices, revoked ones included, by id.
	Devices []DeviceInfo `json:"devices"`
}

// DeviceInfo is one device of a UserInfo.
type DeviceInfo struct {
	ID        uint32 `json:"id"`
	Name      string `json:"name"`
	CreatedMS uint64 `json:"created_ms"` // Unix ms
	Primary   bool   `json:"primary"`
	Revoked   bool   `json:"revoked"`
	// Cursor is the highest seq the device acknowledged, or the highest
	// deleted if that is higher (entries expired); Queued the entries of
	// the inbox after it (Head - Cursor): what the device gets when it
	// next connects.
	Cursor uint64 `json:"cursor"`
	Queued uint64 `json:"queued"`
}

// ErrNoUser: Inspect found no such account on the shard.
var ErrNoUser = errors.New("storage: no such user")

// Inspect reads user's account (or, with user 0, phone's) as the shard's
// last commit left it, without going through the actor: it is for an
// operator's tools, not the message path. Any goroutine may call it while
// the shard is open.
func (s *Shard) Inspect(user uint64, phone string) (UserInfo, error) {
	if user == 0 {
		v, err := s.dbGet(phoneKey(nil, tagPhone, phone))
		if err != nil {
			return UserInfo{}, err
		}
		if len(v) != 8 {
			return UserInfo{}, fmt.Errorf("%w: %s", ErrNoUser, phone)
		}
		user = binary.BigEndian.Uint64(v)
	}
	v, err := s.dbGet(userKey(nil, user))
	if err != nil {
		return UserInfo{}, err
	}
	if v == nil {
		return UserInfo{}, fmt.Errorf("%w: %d", ErrNoUser, user)
	}
	var rec userRecord
	if err := rec.decode(v); err != nil {
		return UserInfo{}, fmt.Errorf("storage: user %d: %w", user, err)
	}
	// As readUser: appending does not rewrite the record, the inbox's
	// last key is the head.
	lo := inboxKey(nil, user, 0)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo[:len(lo)-8])})
	if err != nil {
		return UserInfo{}, fmt.Errorf("storage: inbox of %d: %w", user, err)
	}
	if it.Last() {
		k := it.Key()
		rec.Head = max(rec.Head, binary.BigEndian.Uint64(k[len(k)-8:]))
	}
	if err := it.Close(); err != nil {
		return UserInfo{}, fmt.Errorf("storage: inbox of %d: %w", user, err)
	}
	info := UserInfo{User: user, Phone: rec.Phone, Head: rec.Head}
	lo = deviceKey(nil, tagDevice, user, 0)
	it, err = s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo[:len(lo)-4])})
	if err != nil {
		return UserInfo{}, fmt.Errorf("storage: devices of %d: %w", user, err)
	}
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		var d deviceRecord
		if err := d.decode(it.Value()); err != nil {
			_ = it.Close()
			return UserInfo{}, fmt.Errorf("storage: device of %d: %w", user, err)
		}
		info.Devices = append(info.Devices, DeviceInfo{ID: binary.BigEndian.Uint32(k[len(k)-4:]), Name: d.Name,
			CreatedMS: d.CreatedMS, Primary: d.Primary, Revoked: d.Revoked})
	}
	if err := it.Close(); err != nil {
		return UserInfo{}, fmt.Errorf("storage: devices of %d: %w", user, err)
	}
	for i := range info.Devices {
		d := &info.Devices[i]
		v, err := s.dbGet(deviceKey(nil, tagCursor, user, d.ID))
		if err != nil {
			return UserInfo{}, err
		}
		if len(v) == 8 {
			d.Cursor = binary.BigEndian.Uint64(v)
		}
		d.Cursor = max(d.Cursor, rec.Deleted) // as loadDevices
		if !d.Revoked && rec.Head > d.Cursor {
			d.Queued = rec.Head - d.Cursor
		}
	}
	return info, nil
}

// dbGet reads key from the database (not the actor's batch): nil when
// absent.
func (s *Shard) dbGet(key []byte) ([]byte, error) {
	v, closer, err := s.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("storage: get %x: %w", key, err)
	}
	out := append(make([]byte, 0, len(v)), v...)
	_ = closer.Close()
	return out, nil
}
