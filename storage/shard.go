package storage

import (
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"

	"github.com/parley-im/parley/analytics"
	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/internal/pebblelog"
	"github.com/parley-im/parley/internal/sendorder"
	"github.com/parley-im/parley/protocol"
)

// Errors returned by Submit.
var (
	// ErrBusy: the shard's queue is full; the caller answers OVERLOADED.
	ErrBusy = errors.New("storage: shard busy")
	// ErrClosed: the shard is closed or failed.
	ErrClosed = errors.New("storage: shard closed")
)

// maintenanceEvery is how often the actor runs expiry sweeps.
const maintenanceEvery = time.Hour

// Shard is one Pebble database and its actor. See the package doc.
type Shard struct {
	cfg Config
	db  *pebble.DB
	log *slog.Logger

	mu      sync.Mutex
	queue   []Op // guarded by mu
	spare   []Op // guarded by mu: the actor's last drained slice, for reuse
	dropped int  // guarded by mu: droppable ops waiting in queue
	closing bool // guarded by mu
	failed  error

	started   atomic.Bool
	closeOnce sync.Once
	closeErr  error // set by closeOnce

	// cycleMu is held by the actor while it runs a cycle (ops, timers, a
	// maintenance chunk, the outbox replay); Pause takes it
	// (shard_backup.go).
	cycleMu sync.Mutex

	wake chan struct{} // capacity 1: work is queued
	done chan struct{} // closed when the actor has exited

	// Durability (shard_sync.go). emitMu orders emissions: the actor's and
	// the syncer's; it is never held while taking mu.
	emitMu    sync.Mutex
	held      []ready // guarded by emitMu: cycles waiting for a sync, in order
	spareBufs []ready // guarded by emitMu: buffers of emitted cycles, for reuse
	committed atomic.Uint64
	synced    atomic.Uint64 // cycles up to here are durable
	syncWake  chan struct{} // capacity 1: a cycle waits for a sync
	// inCycle is set while the actor applies ops it took from the queue
	// and cleared when their cycle is released; committedWake (capacity
	// 1) is signalled at every release. The syncer reads both
	// to wait for work in hand (shard_sync.go).
	inCycle       atomic.Bool
	committedWake chan struct{}
	promises      atomic.Uint64 // cycles that made a promise that may not wait
	lazyWake      chan struct{} // capacity 1: a cycle waits for a sync, which may come within Config.LazySync
	wanted        atomic.Uint64 // cycles up to here wait for a sync (the last promise)
	syncErr       atomic.Pointer[error]

	// Everything below is owned by the actor goroutine.
	batch           *pebble.Batch
	users           map[uint64]*user
	ids             idGenerator
	releases        map[gkey]uint64     // group body references dropped this cycle (flushReleases)
	idsStored       uint64              // the last message id the database holds (ffff 'g')
	pairs           map[uint16]*outPair // outbox pairs, by destination
	pairOrder       []uint16            // keys of pairs, sorted
	inPairs         map[uint16]*inPair  // inbound pairs, by source
	inOrder         []uint16            // keys of inPairs, sorted
	begun           bool                // the outbox was replayed (begin)
	promised        bool                // the current cycle made a promise (shard_sync.go)
	promisedLater   bool                // the current cycle made a promise that may wait (shard_sync.go)
	cycleNo         uint64              // cycles committed
	lastPromise     uint64              // the last cycle that made a promise of either kind
	lastUrgent      uint64              // the last cycle that made a promise that may not wait
	cycleErr        error               // the cycle is aborted: nothing of it commits
	events          []analytics.Event   // the cycle's analytics events, emitted after its commit
	abortTimes      []time.Time         // when recent cycles were aborted
	effects         []effect
	mores           []effectMore       // what the cycle's rarer effects carry (effect.more)
	out             []byte             // frames referenced by effects
	scratch         []byte             // per-use scratch for keys and values
	key             []byte             // a key built for one call that copies it (batch.Set, get), then free
	rec             []byte             // a record encoded for one batch.Set, which copies it, then free
	val             []byte             // a value read for a caller that parses it at once (getAppend)
	sendKey         []byte             // the dedupe key of the send being applied
	getIter         *pebble.Iterator   // the cycle's reads, over its batch (batchGet)
	getIterOpts     pebble.IterOptions // getIter's options, unchanged: SetOptions refreshes it
	frames          []byte             // a device's frames before batching
	zbuf            []byte             // compressor scratch
	envBuf          []byte             // one device's message of an envelopes entry (envelopeFor)
	comp            *codec.Compressor
	touched         []*user // users to pump and flush this cycle
	groups          map[uint64]*group
	groupSends      map[gkey]*groupSend // group messages waiting for their shards
	freeGroupSends  []*groupSend        // answered groupSends, for new ones (newGroupSend)
	outboxGroup     map[pairSeq]gkey    // outbox entry → the group message it carries
	links           map[string]*pendingLink
	linkOrder       []linkExpiry // the codes of links (and approved ones), by expiry
	watchers        map[uint64][]watcher
	presencePending map[uint64]struct{}
	receipts        receiptBatches          // group receipts coalesced this cycle
	upTos           []upTo                  // deliveredReceipts' scratch: one per sender and group
	entry           []byte                  // an entry built for appendEntry, which copies it, then free
	groupUsers      []uint64                // a group message's members, for its delivery (applyGroupSend)
	groupRef        [17]byte                // a group reference entry being appended (applyGroupDelivery)
	oneUser         [1]uint64               // the users of an appendEntry's delivery
	fwdChunk        []byte                  // outbox values forwarded after the commit, never rewritten (forwardBuf)
	fwdVal          []byte                  // an outbox value encoded for enqueue, which copies it, then free
	fwdShards       []uint16                // partByShard's scratch: its users' shards
	partOf          [MaxShards]uint16       // partByShard's scratch: a shard's part, 1-based; all 0 between calls
	fwdParts        []fwdPart               // deliver's scratch, a stack: its parts
	fwdUsers        []uint64                // deliver's scratch, a stack: its parts' users
	fwdEntries      []pairSeq               // deliver's scratch, a stack: the outbox entries written
	fwdIn           []uint64                // the users of the forward being applied (applyForward)
	cycleOps        int                     // ops applied in this cycle
	arena           []byte                  // copies of entries appended this cycle, for the pump
	batchRecs       []batchRec              // the records of the cycle's batch, to order them (batchorder.go)
	preKeyTakes     preKeyTakes             // one-time prekeys taken today (shard_keys.go)
	push            pushState               // push records changed this cycle, counters (shard_push.go)
	barriers        sendorder.Set[orderKey] // conversations held back behind a refused SEND (shard_order.go)
	sending         *Op                     // the OpSend being applied, while it is

	commits        atomic.Uint64
	records        atomic.Uint64 // records in the batches committed
	ops            atomic.Uint64
	entries        atomic.Uint64
	commitNanos    atomic.Uint64
	syncs          atomic.Uint64
	syncNanos      atomic.Uint64
	syncWaits      atomic.Uint64 // syncs that waited Config.SyncWait first
	resends        atomic.Uint64
	forwardRepeats atomic.Uint64
	forwardGaps    atomic.Uint64
	aborts         atomic.Uint64
	unconfirmed    atomic.Uint64 // outbox entries not yet confirmed
	full           atomic.Bool   // SetFull: store nothing new
	fullRefusals   atomic.Uint64
	quotaRefusals  atomic.Uint64
	codesSwept     atomic.Uint64
	linkRefusals   atomic.Uint64
	fencedOps      atomic.Uint64 // ops refused while the fence was closed (fence.go)
	heldSends      atomic.Uint64 // SENDs refused behind a barrier (shard_order.go)
	barriersHeld   atomic.Int64  // barriers.Len() as the actor last left it (shard_order.go)
	pendingLinks   atomic.Int64  // len(linkOrder), for Stats
	flow           flowCounters  // shard_metrics.go
}

// Stats are a shard's counters since Open.
type Stats struct {
	Commits     uint64        // batches committed
	Records     uint64        // records (sets, deletes, range deletions) in those batches
	Ops         uint64        // ops applied
	Entries     uint64        // inbox entries appended
	CommitTime  time.Duration // total time spent committing (applying batches, no fsync)
	Syncs       uint64        // WAL syncs (fsyncs) made
	SyncTime    time.Duration // total time spent syncing
	SyncWaits   uint64        // syncs that first waited Config.SyncWait (adaptive group commit)
	QueueLength int           // ops waiting for the actor now
	// Resends counts go-backs: outbox entries forwarded again after a gap
	// answer or a pair that made no progress.
	Resends uint64
	// ForwardRepeats and ForwardGaps count forwards received that were
	// not applied: already applied, or beyond the next expected.
	ForwardRepeats, ForwardGaps uint64
	// Aborts counts cycles aborted by a storage error (the shard then
	// restarted in place).
	Aborts uint64
	// Unconfirmed is how many outbox entries wait for their destination's
	// confirmation now.
	Unconfirmed uint64
	// FullRefusals counts sends and requests refused STORAGE_FULL;
	// QuotaRefusals sends refused INBOX_FULL.
	FullRefusals, QuotaRefusals uint64
	// CodesSwept counts verification code states deleted once done with.
	CodesSwept uint64
	// LinkRefusals counts link requests refused because the shard held as
	// many pending link codes as it may (Config.MaxPendingLinks).
	LinkRefusals uint64
	// PendingLinks is how many link codes wait for approval now.
	PendingLinks int
}

// Stats returns the shard's counters. It may be called from any goroutine.
func (s *Shard) Stats() Stats {
	s.mu.Lock()
	n := len(s.queue)
	s.mu.Unlock()
	return Stats{
		Commits:     s.commits.Load(),
		Records:     s.records.Load(),
		Ops:         s.ops.Load(),
		Entries:     s.entries.Load(),
		CommitTime:  time.Duration(s.commitNanos.Load()),
		Syncs:       s.syncs.Load(),
		SyncTime:    time.Duration(s.syncNanos.Load()),
		SyncWaits:   s.syncWaits.Load(),
		QueueLength: n,

		Resends:        s.resends.Load(),
		ForwardRepeats: s.forwardRepeats.Load(),
		ForwardGaps:    s.forwardGaps.Load(),
		Aborts:         s.aborts.Load(),
		Unconfirmed:    s.unconfirmed.Load(),
		FullRefusals:   s.fullRefusals.Load(),
		QuotaRefusals:  s.quotaRefusals.Load(),
		CodesSwept:     s.codesSwept.Load(),
		LinkRefusals:   s.linkRefusals.Load(),
		PendingLinks:   int(s.pendingLinks.Load()),
	}
}

// Open opens (creating if needed) the shard's database and recovers its
// state. The shard takes ops once Start has been called.
func Open(cfg Config) (*Shard, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Rand == nil {
		cfg.Rand = func(b []byte) { _, _ = rand.Read(b) }
	}
	if cfg.CodeKey == nil {
		cfg.CodeKey = make([]byte, 32)
		cfg.Rand(cfg.CodeKey)
	}
	opts := &pebble.Options{
		FS:     cfg.FS,
		Logger: pebblelog.Logger{L: cfg.Logger, Fatal: cfg.OnFatal},
		Cache:  pebble.NewCache(cfg.CacheBytes),
		// Inbox entries live seconds: in a large memtable most are set and
		// single-deleted before a flush, so they never reach an sstable
		// (measured flat out: server CPU per message 11.7 → 7.4–8.5 µs;
		// docs/benchmarks.md).
		MemTableSize: cfg.MemTableBytes,
	}
	defer opts.Cache.Unref()
	for i := range opts.Levels {
		// Dedupe and record lookups mostly miss: a Bloom filter answers
		// those without reading a data block.
		opts.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	db, err := pebble.Open(cfg.Dir, opts)
	if err != nil {
		return nil, fmt.Errorf("storage: open shard %d at %s: %w", cfg.ID, cfg.Dir, err)
	}
	comp, err := codec.NewCompressor()
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	s := &Shard{
		cfg:           cfg,
		db:            db,
		log:           cfg.Logger.With("shard", cfg.ID),
		wake:          make(chan struct{}, 1),
		syncWake:      make(chan struct{}, 1),
		committedWake: make(chan struct{}, 1),
		lazyWake:      make(chan struct{}, 1),
		done:          make(chan struct{}),
		users:         make(map[uint64]*user),
		ids:           idGenerator{shard: cfg.ID},
		comp:          comp,
		// Room for any key: most uses build one on scratch[:0] and
		// leave scratch as it was.
		scratch: make([]byte, 0, 64),
	}
	s.resetMemory()
	if err := s.countBacklog(); err != nil {
		comp.Close()
		_ = db.Close()
		return nil, err
	}
	if err := s.checkEpoch(); err != nil {
		comp.Close()
		_ = db.Close()
		return nil, err
	}
	if err := s.recover(); err != nil {
		comp.Close()
		_ = db.Close()
		return nil, err
	}
	return s, nil
}

// SetFull tells the shard whether the node is short of disk space. While
// full, the shard refuses what would store new data (sends, registrations,
// codes, group changes, links, contact lists) with STORAGE_FULL, and goes
// on with what frees space or costs little: acknowledgements, deletions,
// deliveries, logins, reads. Pebble cannot survive a failed write (its
// commit pipeline stops the process), so the node calls SetFull while a
// reserve of free space is left. Any goroutine may call it.
func (s *Shard) SetFull(full bool) { s.full.Store(full) }

// ID returns the shard's number.
func (s *Shard) ID() uint16 { return s.cfg.ID }

// Submit queues op for the actor. It never blocks. Sends and requests are
// refused with ErrBusy when QueueLimit of them are waiting; acks, logouts
// and forwards are always taken, since refusing them would lose state
// (their number is bounded by connections and outboxes, not by clients'
// rates).
func (s *Shard) Submit(op Op) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return ErrClosed
	}
	droppable := op.Kind != OpAck && op.Kind != OpLogout && op.Kind != OpForward && op.Kind != OpForwardDone && op.Kind != OpPushDone && op.Kind != OpConnGone
	if droppable {
		if s.dropped >= s.cfg.QueueLimit {
			s.mu.Unlock()
			return ErrBusy
		}
		s.dropped++
	}
	s.queue = append(s.queue, op)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return nil
}

// Close stops taking ops, lets the actor apply and commit what is queued,
// and closes the database. Later calls return the first call's result.
func (s *Shard) Close() error {
	s.mu.Lock()
	already := s.closing
	s.closing = true
	s.mu.Unlock()
	if !already {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
	if s.started.Load() {
		<-s.done
	}
	s.closeOnce.Do(func() {
		s.comp.Close()
		if err := s.db.Close(); err != nil {
			s.closeErr = fmt.Errorf("storage: close shard %d: %w", s.cfg.ID, err)
		} else {
			s.closeErr = s.failed
		}
	})
	return s.closeErr
}

// resetMemory empties everything the actor keeps in memory but the message
// id generator; recover then reloads what the database holds.
func (s *Shard) resetMemory() {
	s.users = make(map[uint64]*user)
	s.pairs = make(map[uint16]*outPair)
	s.pairOrder = nil
	s.inPairs = make(map[uint16]*inPair)
	s.inOrder = nil
	s.groups = make(map[uint64]*group)
	s.groupSends = make(map[gkey]*groupSend)
	s.outboxGroup = make(map[pairSeq]gkey)
	s.links = make(map[string]*pendingLink)
	s.linkOrder = nil
	s.watchers = make(map[uint64][]watcher)
	s.presencePending = make(map[uint64]struct{})
	s.receipts.reset()
	clear(s.releases) // what an aborted cycle dropped is not released twice
	s.touched = s.touched[:0]
	s.dropEffects()
	s.arena = s.arena[:0]
}

// Start starts the shard's actor, which first replays the outbox. Call it
// once every shard the Forwarder reaches is open.
func (s *Shard) Start() {
	if s.started.CompareAndSwap(false, true) {
		go s.run()
	}
}

// failIfSyncFailed stops the shard if the syncer could not sync: effects
// waiting for durability will never go out.
func (s *Shard) failIfSyncFailed() {
	if p := s.syncErr.Load(); p != nil && s.failed == nil {
		s.fail(*p)
	}
}

// run is the actor loop: it applies queued ops in cycles and, between
// them, runs maintenance sweeps in chunks and the once-a-second timers.
func (s *Shard) run() {
	defer close(s.done)
	stopSyncer, syncerDone := make(chan struct{}), make(chan struct{})
	go s.syncer(stopSyncer, syncerDone)
	defer func() {
		close(stopSyncer)
		<-syncerDone
		// What was committed is made durable and its effects go out.
		if s.syncErr.Load() == nil {
			if err := s.Sync(); err != nil {
				s.log.Error("final sync", "err", err)
			}
		}
	}()
	s.cycleMu.Lock()
	sweeping := s.begin()
	s.cycleMu.Unlock()
	tick := time.NewTicker(maintenanceEvery)
	defer tick.Stop()
	second := time.NewTicker(time.Second)
	defer second.Stop()
	for {
		if sweeping && s.failed == nil {
			select {
			case <-s.wake:
			default:
				s.cycleMu.Lock()
				sweeping = s.sweep()
				s.cycleMu.Unlock()
				continue
			}
		} else {
			select {
			case <-s.wake:
			case <-tick.C:
				sweeping = true
				continue
			case <-second.C:
				s.cycleMu.Lock()
				s.Tick()
				s.cycleMu.Unlock()
				continue
			}
		}
		s.cycleMu.Lock()
		s.failIfSyncFailed()
		more, closing := s.step()
		s.cycleMu.Unlock()
		switch {
		case more:
			select {
			case s.wake <- struct{}{}:
			default:
			}
		case closing:
			return
		}
	}
}

// begin replays the outbox and runs the first maintenance chunk before any
// op, so a restarted shard does not serve entries that expired while it
// was down. It reports whether maintenance work remains.
func (s *Shard) begin() bool {
	s.begun = true
	s.replayOutbox()
	if s.cycleErr != nil {
		s.restartInPlace(nil)
	}
	return s.failed == nil && s.sweep()
}

// step applies the ops queued since the last step as one cycle. It
// reports whether more ops were queued meanwhile and whether the shard is
// closing.
func (s *Shard) step() (more, closing bool) {
	s.mu.Lock()
	ops := s.queue
	s.queue, s.spare = s.spare[:0], nil
	s.dropped = 0
	closing = s.closing
	apply := len(ops) > 0 && s.failed == nil
	if apply {
		s.inCycle.Store(true) // cleared by release, or below
	}
	s.mu.Unlock()

	if apply {
		s.cycle(ops)
		if s.cycleErr != nil {
			s.restartInPlace(ops)
		}
	}
	s.inCycle.Store(false) // an aborted cycle: release did not run
	clear(ops)
	s.mu.Lock()
	s.spare = ops[:0]
	more = len(s.queue) > 0
	s.mu.Unlock()
	return more, closing
}

// Step does the actor's work once, on the caller's goroutine, for a shard
// that was never started: a simulation drives shards this way,
// deterministically (sim_test.go). The first call replays the outbox and
// runs maintenance to its end; every call applies the ops queued by Submit
// as one cycle, commits it and emits its effects before it returns. Step
// must not be called on a started shard, nor from two goroutines.
func (s *Shard) Step() {
	if s.started.Load() {
		panic("storage: Step on a started shard")
	}
	if !s.begun {
		for sweeping := s.begin(); sweeping; sweeping = s.sweep() {
		}
	}
	s.step()
}

// Tick runs the once-a-second work at the shard's clock (Config.Now):
// presence notifications the throttle held back, link codes and group adds
// past their time, outbox pairs that made no progress, and order barriers
// past sendorder.TTL (shard_order.go). The actor of a
// started shard calls it; whoever drives a stepped shard calls it instead.
func (s *Shard) Tick() {
	if s.failed == nil {
		if s.barriers.Len() > 0 {
			s.barriers.Expire(s.cfg.Now())
			s.barriersChanged()
		}
		s.timers()
	}
}

// cycle applies ops to one batch, commits it, and emits the effects;
// while the fence is closed it refuses them instead (fence.go).
func (s *Shard) cycle(ops []Op) {
	if s.fenced() {
		s.refuseFenced(ops)
		return
	}
	s.batch = s.db.NewIndexedBatch()
	for i := range ops {
		s.apply(&ops[i])
	}
	s.cycleOps = len(ops)
	s.finishCycle()
	s.ops.Add(uint64(len(ops)))
}

// sweep runs one chunk of maintenance and reports whether work remains.
func (s *Shard) sweep() bool {
	if s.fenced() {
		return false // the hourly tick starts it again
	}
	more := s.maintain()
	if s.cycleErr != nil {
		s.restartInPlace(nil)
		return false
	}
	return more
}

// timers runs the once-a-second work: presence notifications the throttle
// held back, link codes and group adds past their time.
func (s *Shard) timers() {
	if s.fenced() || len(s.presencePending) == 0 && len(s.linkOrder) == 0 && !s.joinsWaiting() && !s.stalledPairs() {
		return
	}
	now := s.cfg.Now()
	s.batch = s.db.NewIndexedBatch()
	s.flushPresence(now)
	s.expireLinks(now)
	s.expireJoins(now)
	s.resendStalled(now)
	s.finishCycle()
	if s.cycleErr != nil {
		s.restartInPlace(nil)
	}
}

// joinsWaiting reports whether some group add waits for answers.
func (s *Shard) joinsWaiting() bool {
	for _, g := range s.groups {
		if len(g.joins) > 0 {
			return true
		}
	}
	return false
}

// finishCycle pumps the touched users, writes their records, commits, and
// emits. On a commit failure the shard stops: nothing it promised is
// emitted, and every later Submit fails.
func (s *Shard) finishCycle() {
	s.flushKeyNotices()
	s.flushReceipts()
	for _, u := range s.touched {
		s.pump(u)
	}
	s.answerForwards()
	s.writeOutSeqs()
	s.flushPush()
	s.flushReleases()
	if s.cycleErr != nil {
		s.closeBatch()
		s.events = s.events[:0]
		return // the caller restarts the shard in place
	}
	day := s.day()
	for _, u := range s.touched {
		if u.appended {
			s.indexDay(u, day)
			u.appended = false
		}
		if u.dirty {
			s.key, s.rec = userKey(s.key[:0], u.id), u.rec.encode(s.rec[:0])
			s.batch.Set(s.key, s.rec, nil)
			u.dirty = false
		}
		u.recent.endCycle()
		u.touched = false
	}
	s.touched = s.touched[:0]
	if !s.batch.Empty() {
		start := time.Now()
		idsStored := s.ids.last
		if idsStored != s.idsStored {
			s.batch.Set(shardKey(s.scratch[:0], tagLastID), be64(idsStored), nil)
		}
		records := s.batch.Count()
		// Without waiting for the fsync: the effects wait instead, if they
		// must (shard_sync.go).
		if err := s.commitOrdered(pebble.NoSync); err != nil {
			s.fail(fmt.Errorf("storage: shard %d commit: %w", s.cfg.ID, err))
			s.closeBatch()
			s.events = s.events[:0]
			return
		}
		d := time.Since(start)
		s.idsStored = idsStored
		s.commits.Add(1)
		s.records.Add(uint64(records))
		s.commitNanos.Add(uint64(d))
		s.cycleNo++
		s.committed.Store(s.cycleNo)
		if s.cfg.OnCommit != nil {
			s.cfg.OnCommit(d, s.cycleOps)
		}
	}
	s.closeBatch()
	s.cycleOps = 0
	if len(s.events) > 0 {
		s.emitEvents()
	}
	if cap(s.arena) > 4<<20 {
		s.arena = nil
	}
	s.arena = s.arena[:0]
	s.pendingLinks.Store(int64(len(s.linkOrder)))
	s.release()
	s.evict()
}

// dropEffects forgets the effects of the cycle being applied, and their
// frames.
func (s *Shard) dropEffects() {
	s.effects = s.effects[:0]
	clear(s.mores)
	s.mores = s.mores[:0]
	s.out = s.out[:0]
}

// fail stops the shard after an unrecoverable storage error: the effects
// of the failed batch are dropped, which only loses answers (clients retry
// sends), never acknowledged data.
func (s *Shard) fail(err error) {
	s.log.Error("shard failed", "err", err)
	s.failed = err
	s.dropEffects()
	s.users = make(map[uint64]*user)
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
}

// day returns today's day number (days since the Unix epoch, UTC).
func (s *Shard) day() uint32 {
	return uint32(s.cfg.Now().Unix() / 86400)
}

// abort marks the current cycle failed by a storage error: finishCycle
// then commits nothing of it and emits none of its effects, and the actor
// restarts the shard in place. So an op, a forward or a group delivery is
// applied entirely or not at all.
func (s *Shard) abort(err error) {
	if s.cycleErr == nil {
		s.cycleErr = err
	}
}

// maxAborts is how many aborted cycles within abortWindow the shard
// survives by restarting in place; one more and it stops (fail).
const (
	maxAborts   = 5
	abortWindow = time.Minute
)

// restartInPlace recovers from an aborted cycle: nothing of it was
// committed, but the actor's memory had moved with it, so the shard drops
// its memory, closes every connection it was serving or owed an answer
// (ops is the aborted cycle's ops, nil for a timer cycle) with
// SHUTTING_DOWN so that the clients reconnect and retry, and reloads its
// state from the database, replaying the outbox.
func (s *Shard) restartInPlace(ops []Op) {
	cause := s.cycleErr
	s.cycleErr = nil
	s.aborts.Add(1)
	now := s.cfg.Now()
	s.abortTimes = append(s.abortTimes, now)
	for len(s.abortTimes) > 0 && now.Sub(s.abortTimes[0]) > abortWindow {
		s.abortTimes = s.abortTimes[1:]
	}
	s.log.Error("storage error: cycle aborted, shard restarts in place", "err", cause, "recent_aborts", len(s.abortTimes))
	for _, ref := range s.conns(ops) {
		if ep := s.cfg.Conns.Endpoint(ref); ep != nil {
			ep.Close(protocol.CodeShuttingDown)
		}
	}
	for i := range ops {
		if ops[i].Kind == OpLookup {
			if ep := s.cfg.Conns.Endpoint(ops[i].Conn); ep != nil {
				ep.LookupPart(ops[i].Seq, nil) // an empty part: the others still answer
			}
		}
	}
	s.resetMemory()
	if len(s.abortTimes) > maxAborts {
		s.fail(fmt.Errorf("storage: shard %d: %d storage errors within %v, last: %w", s.cfg.ID, len(s.abortTimes), abortWindow, cause))
		return
	}
	if err := s.recover(); err != nil {
		s.fail(err)
		return
	}
	s.replayOutbox()
	if s.cycleErr != nil {
		s.fail(fmt.Errorf("storage: shard %d: replay after a restart in place: %w", s.cfg.ID, s.cycleErr))
	}
}

// conns returns every connection the actor's memory refers to: live
// sessions, senders waiting for a group message's Sent, waiting link
// companions and approvers, group adds in progress, presence watchers, and
// the connections of ops.
func (s *Shard) conns(ops []Op) []ConnRef {
	seen := map[ConnRef]bool{}
	var refs []ConnRef
	add := func(ref ConnRef) {
		if !ref.IsZero() && !seen[ref] {
			seen[ref] = true
			refs = append(refs, ref)
		}
	}
	for i := range ops {
		if ops[i].Kind != OpLookup { // a lookup gets its empty part instead
			add(ops[i].Conn)
		}
		add(ops[i].Companion)
	}
	for _, u := range s.users {
		for _, d := range u.devices {
			if d.sess != nil {
				add(d.sess.conn)
			}
		}
	}
	for _, p := range s.groupSends {
		for _, w := range p.waiters {
			add(w.conn)
		}
	}
	for _, l := range s.links {
		add(l.conn)
	}
	for _, g := range s.groups {
		for _, j := range g.joins {
			add(j.conn)
		}
	}
	for _, ws := range s.watchers {
		for _, w := range ws {
			add(w.conn)
		}
	}
	return refs
}
