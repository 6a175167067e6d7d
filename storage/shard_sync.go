package storage

import (
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Durability.
//
// A cycle's batch is committed without waiting for its fsync: Pebble makes
// it visible to the next cycles at once, and the actor goes on with them
// while the WAL is synced behind it. What a cycle tells the outside (its
// effects) waits until everything it depends on is durable:
//
//   - A cycle makes a promise when what it wrote must not be lost once its
//     effects are seen: it appended an inbox entry (the seq a device will
//     acknowledge), wrote to the outbox (the sequence a destination will
//     confirm), advanced a watermark (the confirmation itself), or applied
//     an op that is not known to be harmless to lose (registrations,
//     codes, groups, links: see cheapOps).
//   - A cycle's effects go out once every cycle up to the last promise
//     made so far is durable, and after the effects of every earlier
//     cycle. So an ack that only moves a cursor, deletes entries and pumps
//     entries already durable costs no fsync and waits for none; an ack
//     whose delivered receipts append entries waits for the next sync.
//   - A syncer goroutine syncs the WAL (pebble.DB.LogData with Sync, which
//     makes every earlier write durable) whenever a cycle waits for it;
//     cycles committed while one sync runs are covered by the next, so a
//     busy shard batches its fsyncs without waiting on purpose.
//   - Adaptive group commit (Config.SyncWait, 50 µs unless set): when
//     the sync before ended less than Config.SyncBusy ago, the syncer
//     first waits SyncWait, so the cycles the actor commits meanwhile
//     ride on the same fsync. After a quiet spell it syncs at once: light
//     load never waits for it. The wait is measured on the monotonic
//     clock (it times the disk, as the sync metrics do, and is no part
//     of the shard's logic).
//
// Losing a cycle that made no promise costs nothing a client can see: a
// cursor moved back delivers entries again, which clients drop by seq
// ([S-8-9]); deleted entries come back and are deleted again.
//
// A stepped shard (Step, for the simulation) has no syncer: whoever steps
// it calls Sync, so a crash can fall between a commit and its sync.

// maxKeptEffects is the most effects (536 bytes each) whose room a cycle
// keeps for the next: a burst (thousands of logins in one cycle) must not
// pin megabytes for good.
const maxKeptEffects = 256

// ready is one cycle's effects, waiting for its durability.
type ready struct {
	need    uint64 // cycles up to here must be durable first
	effects []effect
	out     []byte
}

// cheap reports whether ops of kind k write only what may be lost in a
// crash without a client noticing (see the comment above); every other op
// makes its cycle a promise. Appending entries, writing to the outbox and
// advancing a watermark make a promise whatever the op.
func (k OpKind) cheap() bool {
	switch k {
	case OpAck, OpLogin, OpLogout, OpTyping, OpWatch, OpUnwatch, OpForward, OpForwardDone,
		OpGroupJoin, OpGroupJoined, OpLookup, OpGroupGet, OpGroupList, OpDevices, OpBlockList, OpPushDone, OpConnGone:
		return true
	}
	return false
}

// promise marks the current cycle as one whose effects wait for its
// durability.
func (s *Shard) promise() { s.promised = true }

// release hands the effects of the cycle just committed (s.effects,
// s.out) on: emitted at once when nothing they depend on waits for a
// sync, else held, in order, until the syncer (or Sync) has made it
// durable.
func (s *Shard) release() {
	if s.promised {
		s.lastPromise = s.cycleNo
		s.promised = false
	}
	s.emitMu.Lock()
	s.drainLocked()
	if len(s.held) == 0 && s.lastPromise <= s.synced.Load() {
		s.emitLocked(s.effects, s.out)
		s.emitMu.Unlock()
		s.effects = s.effects[:0]
		if cap(s.effects) > maxKeptEffects {
			s.effects = nil
		}
		if cap(s.out) > 4<<20 {
			s.out = nil
		}
		s.out = s.out[:0]
		return
	}
	if len(s.effects) > 0 {
		s.held = append(s.held, ready{need: s.lastPromise, effects: s.effects, out: s.out})
		s.effects, s.out = s.spareLocked()
	}
	s.emitMu.Unlock()
	if s.lastPromise > s.synced.Load() {
		select {
		case s.syncWake <- struct{}{}:
		default:
		}
	}
}

// spareLocked returns empty effect and frame buffers, recycled from held
// cycles already emitted when there are some. s.emitMu must be held.
func (s *Shard) spareLocked() ([]effect, []byte) {
	if n := len(s.spareBufs); n > 0 {
		r := s.spareBufs[n-1]
		s.spareBufs = s.spareBufs[:n-1]
		return r.effects[:0], r.out[:0]
	}
	return nil, nil
}

// drainLocked emits, in order, the held cycles whose dependencies are
// durable. s.emitMu must be held.
func (s *Shard) drainLocked() {
	synced := s.synced.Load()
	n := 0
	for n < len(s.held) && s.held[n].need <= synced {
		r := s.held[n]
		s.emitLocked(r.effects, r.out)
		if cap(r.out) <= 4<<20 && cap(r.effects) <= maxKeptEffects && len(s.spareBufs) < 8 {
			s.spareBufs = append(s.spareBufs, ready{effects: r.effects[:0], out: r.out[:0]})
		}
		s.held[n] = ready{}
		n++
	}
	if n > 0 {
		s.held = append(s.held[:0], s.held[n:]...)
	}
}

// syncer makes committed cycles durable whenever one waits for it, until
// stop is closed. It runs on its own goroutine for a started shard.
func (s *Shard) syncer(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	var lastEnd time.Time // when the last sync ended; zero before the first
	var wait *time.Timer
	defer func() {
		if wait != nil {
			wait.Stop()
		}
	}()
	for {
		select {
		case <-stop:
			return
		case <-s.syncWake:
		}
		if w := s.cfg.SyncWait; w > 0 && !lastEnd.IsZero() && time.Since(lastEnd) < s.cfg.SyncBusy {
			if wait == nil {
				wait = time.NewTimer(w)
			} else {
				wait.Reset(w)
			}
			select {
			case <-stop:
				return // the actor syncs what is left
			case <-wait.C:
			}
			s.syncWaits.Add(1)
		}
		if err := s.Sync(); err != nil {
			s.syncErr.Store(&err)
			s.poke() // the actor fails the shard
			return
		}
		lastEnd = time.Now()
	}
}

// Sync makes every cycle committed so far durable and emits the effects
// that waited for it. The syncer of a started shard calls it; whoever
// steps a stepped shard calls it instead (after Step, whenever a crash
// should find the cycles durable). Any goroutine may call it.
func (s *Shard) Sync() error {
	target := s.committed.Load()
	if target <= s.synced.Load() {
		return nil
	}
	start := time.Now()
	if !s.cfg.NoSync {
		if err := s.db.LogData(nil, pebble.Sync); err != nil {
			return fmt.Errorf("storage: shard %d sync: %w", s.cfg.ID, err)
		}
	}
	d := time.Since(start)
	s.syncs.Add(1)
	s.syncNanos.Add(uint64(d))
	if s.cfg.OnSync != nil {
		s.cfg.OnSync(d)
	}
	s.emitMu.Lock()
	if target > s.synced.Load() {
		s.synced.Store(target)
	}
	s.drainLocked()
	s.emitMu.Unlock()
	return nil
}

// poke wakes the actor.
func (s *Shard) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}
