package storage

import (
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/parley-im/parley/protocol"
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
//     entries already durable costs no fsync and waits for none.
//   - A promise may wait (promiseLater) when no client waits for its
//     effects: a receipt entry appended or written to the outbox (a
//     delivered receipt an ACK or a login's cursor makes), and the
//     watermark that confirms a forward, unless the forward carries a
//     group delivery (its sender's Sent waits for every destination's
//     confirmation). So a 1:1 SEND's copy for the sender's other devices
//     costs the sender's shard no sync of its own when it has none to
//     append to, and a message appended there still asks for one at
//     once (a device waits for it). Such a cycle's effects
//     are held exactly as any promise's, but the cycle does not ask for a
//     sync of its own: it rides on the next sync another cycle asks for,
//     and asks for one itself only when none came within Config.LazySync
//     (2 ms unless set). A receipt is late by at most that much; at
//     moderate load it costs no fsync. The effects of later cycles wait
//     behind it in order, as they wait behind any promise. The group
//     commit wait below is for syncs asked for at once, and counts only
//     their promises.
//   - A syncer goroutine syncs the WAL (pebble.DB.LogData with Sync, which
//     makes every earlier write durable: see below) whenever a cycle waits
//     for it;
//     cycles committed while one sync runs are covered by the next, so a
//     busy shard batches its fsyncs without waiting on purpose.
//   - Adaptive group commit (Config.SyncWait, 50 µs unless set). The
//     syncer waits before it syncs only when that can pay: when more
//     than one cycle that made a promise waits for this sync (clients
//     whose requests overlap: more are likely on their way) it waits
//     SyncWait; when the actor has work in hand (ops queued, or a cycle
//     being applied) it waits for the actor's commits, cycle after cycle
//     while more is in hand, at most SyncWait. One client waiting for
//     each answer before its next request never makes it wait, however
//     quick: one promise waits for each sync and nothing is in hand.
//     (When the wait followed only the last sync's end, such a client
//     waited on every promise, and not 50 µs: a timer under a
//     millisecond fires about a millisecond late on an idle process,
//     whose runtime poller sleeps in whole milliseconds.) The wait is
//     measured on the monotonic clock (it bounds a wait on the disk's
//     behalf, and is no part of the shard's logic).
//
// Losing a cycle that made no promise costs nothing a client can see: a
// cursor moved back delivers entries again, which clients drop by seq
// ([S-8-9]); deleted entries come back and are deleted again. An ACK lost
// with its unsynced receipt is received again when the entries come
// again, and makes the receipt again: the receipt, the outbox entry and
// the user's Receipted mark commit in one batch, so they are lost
// together (docs/architecture.md argues each case).
//
// Why one sync covers every earlier commit, in Pebble v2.1.7 as pinned:
// commitPipeline.prepare (commit.go) writes each batch to the WAL under
// commitPipeline.mu in sequence-number order; LogWriter.SyncRecordGeneralized
// (record/log_writer.go) queues a sync whose contract is that "any record
// written to the LogWriter to this point will be flushed to the OS and
// synced to disk"; and replayWAL (open.go) recovers the newest WAL up to
// its first incomplete record. So what a crash leaves is a prefix of the
// commits that holds at least every commit a completed sync followed.
//
// A stepped shard (Step, for the simulation) has no syncer: whoever steps
// it calls Sync, so a crash can fall between a commit and its sync.

// maxKeptEffects is the most effects (48 bytes each) and maxKeptMores the
// most effectMores (about 500 bytes each) whose room a cycle keeps for the
// next: a flat-out cycle posts thousands of frames and should not grow its
// slices again each time, but a burst (thousands of logins in one cycle)
// must not pin megabytes for good.
const (
	maxKeptEffects = 4096
	maxKeptMores   = 256
)

// ready is one cycle's effects, waiting for its durability.
type ready struct {
	need    uint64 // cycles up to here must be durable first
	effects []effect
	mores   []effectMore
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
// durability, and whose sync is asked for at once.
func (s *Shard) promise() { s.promised = true }

// promiseLater marks the current cycle as one whose effects wait for its
// durability, which may come with a later cycle's sync, or within
// Config.LazySync.
func (s *Shard) promiseLater() { s.promisedLater = true }

// promiseEntry makes the promise that writing inbox or outbox entry entry
// (kind byte + stored body) makes: one that may wait for a receipt, one
// that may not for everything else.
func (s *Shard) promiseEntry(entry []byte) {
	if len(entry) > 0 && (protocol.Kind(entry[0]) == protocol.KindReceipt || protocol.Kind(entry[0]) == protocol.KindReceipts) {
		s.promiseLater()
		return
	}
	s.promise()
}

// release hands the effects of the cycle just committed (s.effects,
// s.out) on: emitted at once when nothing they depend on waits for a
// sync, else held, in order, until the syncer (or Sync) has made it
// durable.
func (s *Shard) release() {
	s.inCycle.Store(false)
	select {
	case s.committedWake <- struct{}{}:
	default:
	}
	switch {
	case s.promised:
		s.promises.Add(1)
		s.lastPromise, s.lastUrgent = s.cycleNo, s.cycleNo
	case s.promisedLater:
		s.lastPromise = s.cycleNo
	}
	s.promised, s.promisedLater = false, false
	s.emitMu.Lock()
	s.drainLocked()
	if len(s.held) == 0 && s.lastPromise <= s.synced.Load() {
		s.emitLocked(s.effects, s.mores, s.out)
		s.emitMu.Unlock()
		s.effects, s.mores = s.effects[:0], s.mores[:0]
		if cap(s.effects) > maxKeptEffects {
			s.effects = nil
		}
		if cap(s.mores) > maxKeptMores {
			s.mores = nil
		}
		if cap(s.out) > 4<<20 {
			s.out = nil
		}
		s.out = s.out[:0]
		return
	}
	if len(s.effects) > 0 {
		s.held = append(s.held, ready{need: s.lastPromise, effects: s.effects, mores: s.mores, out: s.out})
		s.effects, s.mores, s.out = s.spareLocked()
	}
	s.emitMu.Unlock()
	synced := s.synced.Load()
	if s.lastPromise <= synced {
		return
	}
	s.wanted.Store(s.lastPromise)
	wake := s.lazyWake
	if s.lastUrgent > synced || s.cfg.LazySync < 0 {
		wake = s.syncWake
	}
	select {
	case wake <- struct{}{}:
	default:
	}
}

// spareLocked returns empty effect, effectMore and frame buffers,
// recycled from held cycles already emitted when there are some.
// s.emitMu must be held.
func (s *Shard) spareLocked() ([]effect, []effectMore, []byte) {
	if n := len(s.spareBufs); n > 0 {
		r := s.spareBufs[n-1]
		s.spareBufs = s.spareBufs[:n-1]
		return r.effects[:0], r.mores[:0], r.out[:0]
	}
	return nil, nil, nil
}

// drainLocked emits, in order, the held cycles whose dependencies are
// durable. s.emitMu must be held.
func (s *Shard) drainLocked() {
	synced := s.synced.Load()
	n := 0
	for n < len(s.held) && s.held[n].need <= synced {
		r := s.held[n]
		s.emitLocked(r.effects, r.mores, r.out)
		if cap(r.out) <= 4<<20 && cap(r.effects) <= maxKeptEffects && cap(r.mores) <= maxKeptMores && len(s.spareBufs) < 8 {
			s.spareBufs = append(s.spareBufs, ready{effects: r.effects[:0], mores: r.mores[:0], out: r.out[:0]})
		}
		s.held[n] = ready{}
		n++
	}
	if n > 0 {
		s.held = append(s.held[:0], s.held[n:]...)
	}
}

// syncer makes committed cycles durable whenever one waits for it, until
// stop is closed: at once for a promise that may not wait, within
// Config.LazySync for one that may. It runs on its own goroutine for a
// started shard.
func (s *Shard) syncer(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	var bound, lazy *time.Timer
	defer func() {
		for _, t := range []*time.Timer{bound, lazy} {
			if t != nil {
				t.Stop()
			}
		}
	}()
	var covered uint64 // s.promises as the last sync began
	for {
		urgent := true
		select {
		case <-stop:
			return
		case <-s.syncWake:
		case <-s.lazyWake:
			urgent = false
		}
		if !urgent {
			// Only promises that may wait: ride on a sync another cycle
			// asks for meanwhile, or sync when LazySync has passed.
			if lazy == nil {
				lazy = time.NewTimer(s.cfg.LazySync)
			} else {
				lazy.Reset(s.cfg.LazySync)
			}
			select {
			case <-stop:
				return // the actor syncs what is left
			case <-s.syncWake:
				urgent = true
			case <-lazy.C:
			}
		}
		if !s.syncWanted() {
			continue // a sync since the wake-up covered it
		}
		if w := s.cfg.SyncWait; urgent && w > 0 {
			overlap := s.promises.Load()-covered > 1
			if overlap || s.inHand() {
				if bound == nil {
					bound = time.NewTimer(w)
				} else {
					bound.Reset(w)
				}
				if !s.waitCommits(stop, bound.C, overlap) {
					return // the actor syncs what is left
				}
				bound.Stop()
				s.syncWaits.Add(1)
			}
		}
		covered = s.promises.Load()
		if err := s.Sync(); err != nil {
			s.syncErr.Store(&err)
			s.poke() // the actor fails the shard
			return
		}
	}
}

// syncWanted reports whether some committed cycle made a promise that no
// sync covers yet. Any goroutine may call it.
func (s *Shard) syncWanted() bool { return s.wanted.Load() > s.synced.Load() }

// inHand reports whether the actor has ops it has not committed yet:
// queued, or taken for the cycle it is applying.
func (s *Shard) inHand() bool {
	if s.inCycle.Load() {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue) > 0 && !s.closing
}

// waitCommits waits while the actor has ops in hand, waking at each of
// its commits, until it has none or bound fires; with full, until bound
// fires. It reports false when stop was closed meanwhile.
func (s *Shard) waitCommits(stop <-chan struct{}, bound <-chan time.Time, full bool) bool {
	if full {
		select {
		case <-stop:
			return false
		case <-bound:
			return true
		}
	}
	select { // a commit signalled before this wait says nothing about it
	case <-s.committedWake:
	default:
	}
	for s.inHand() {
		select {
		case <-stop:
			return false
		case <-bound:
			return true
		case <-s.committedWake:
		}
	}
	return true
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
