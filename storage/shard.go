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

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/internal/pebblelog"
	"github.com/parley-im/parley/protocol/pb"
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

	wake chan struct{} // capacity 1: work is queued
	done chan struct{} // closed when the actor has exited

	// Everything below is owned by the actor goroutine.
	batch           *pebble.Batch
	users           map[uint64]*user
	ids             idGenerator
	outSeq          uint64
	watermarks      map[uint16]uint64
	effects         []effect
	out             []byte // frames referenced by effects
	scratch         []byte // per-use scratch for keys and values
	frames          []byte // a device's frames before batching
	zbuf            []byte // compressor scratch
	comp            *codec.Compressor
	touched         []*user // users to pump and flush this cycle
	groups          map[uint64]*group
	groupSends      map[gkey]*groupSend // group messages waiting for their shards
	outboxGroup     map[uint64]gkey     // outbox seq → the group message it carries
	links           map[string]*pendingLink
	watchers        map[uint64][]watcher
	presencePending map[uint64]struct{}
	receipts        map[receiptKey][]*pb.ReceiptItem // group receipts coalesced this cycle
	cycleOps        int                              // ops applied in this cycle
	arena           []byte                           // copies of entries appended this cycle, for the pump

	commits     atomic.Uint64
	ops         atomic.Uint64
	entries     atomic.Uint64
	commitNanos atomic.Uint64
}

// Stats are a shard's counters since Open.
type Stats struct {
	Commits     uint64        // batches committed
	Ops         uint64        // ops applied
	Entries     uint64        // inbox entries appended
	CommitTime  time.Duration // total time spent committing
	QueueLength int           // ops waiting for the actor now
}

// Stats returns the shard's counters. It may be called from any goroutine.
func (s *Shard) Stats() Stats {
	s.mu.Lock()
	n := len(s.queue)
	s.mu.Unlock()
	return Stats{
		Commits:     s.commits.Load(),
		Ops:         s.ops.Load(),
		Entries:     s.entries.Load(),
		CommitTime:  time.Duration(s.commitNanos.Load()),
		QueueLength: n,
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
	opts := &pebble.Options{
		FS:     cfg.FS,
		Logger: pebblelog.Logger{L: cfg.Logger},
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
		cfg:             cfg,
		db:              db,
		log:             cfg.Logger.With("shard", cfg.ID),
		wake:            make(chan struct{}, 1),
		done:            make(chan struct{}),
		users:           make(map[uint64]*user),
		ids:             idGenerator{shard: cfg.ID},
		watermarks:      make(map[uint16]uint64),
		comp:            comp,
		groups:          make(map[uint64]*group),
		groupSends:      make(map[gkey]*groupSend),
		outboxGroup:     make(map[uint64]gkey),
		links:           make(map[string]*pendingLink),
		watchers:        make(map[uint64][]watcher),
		presencePending: make(map[uint64]struct{}),
		receipts:        make(map[receiptKey][]*pb.ReceiptItem),
	}
	if err := s.recover(); err != nil {
		comp.Close()
		_ = db.Close()
		return nil, err
	}
	return s, nil
}

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
	droppable := op.Kind != OpAck && op.Kind != OpLogout && op.Kind != OpForward && op.Kind != OpForwardDone
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

// Start starts the shard's actor, which first replays the outbox. Call it
// once every shard the Forwarder reaches is open.
func (s *Shard) Start() {
	if s.started.CompareAndSwap(false, true) {
		go s.run()
	}
}

// run is the actor loop: it applies queued ops in cycles and, between
// them, runs maintenance sweeps in chunks.
func (s *Shard) run() {
	defer close(s.done)
	if err := s.replayOutbox(); err != nil {
		s.fail(err)
	}
	tick := time.NewTicker(maintenanceEvery)
	defer tick.Stop()
	second := time.NewTicker(time.Second)
	defer second.Stop()
	// The first sweep chunk runs before any op, so a restarted shard does
	// not serve entries that expired while it was down.
	sweeping := s.failed == nil && s.maintain()
	for {
		if sweeping && s.failed == nil {
			select {
			case <-s.wake:
			default:
				sweeping = s.maintain()
				continue
			}
		} else {
			select {
			case <-s.wake:
			case <-tick.C:
				sweeping = true
				continue
			case <-second.C:
				if s.failed == nil {
					s.timers()
				}
				continue
			}
		}
		s.mu.Lock()
		ops := s.queue
		s.queue, s.spare = s.spare[:0], nil
		s.dropped = 0
		closing := s.closing
		s.mu.Unlock()

		if len(ops) > 0 && s.failed == nil {
			s.cycle(ops)
		}
		clear(ops)
		s.mu.Lock()
		s.spare = ops[:0]
		more := len(s.queue) > 0
		s.mu.Unlock()
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

// cycle applies ops to one batch, commits it, and emits the effects.
func (s *Shard) cycle(ops []Op) {
	s.batch = s.db.NewIndexedBatch()
	for i := range ops {
		s.apply(&ops[i])
	}
	s.cycleOps = len(ops)
	s.finishCycle()
	s.ops.Add(uint64(len(ops)))
}

// timers runs the once-a-second work: presence notifications the throttle
// held back, link codes and group adds past their time.
func (s *Shard) timers() {
	if len(s.presencePending) == 0 && len(s.links) == 0 && !s.joinsWaiting() {
		return
	}
	now := s.cfg.Now()
	s.batch = s.db.NewIndexedBatch()
	s.flushPresence(now)
	s.expireLinks(now)
	s.expireJoins(now)
	s.finishCycle()
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
	s.flushReceipts()
	for _, u := range s.touched {
		s.pump(u)
	}
	day := s.day()
	for _, u := range s.touched {
		if u.appended {
			// The expiry index says the inbox held entries up to Head today.
			s.batch.Set(expiryKey(s.scratch[:0], day, u.id), be64(u.rec.Head), nil)
			u.appended = false
		}
		if u.dirty {
			s.batch.Set(userKey(s.scratch[:0], u.id), u.rec.encode(nil), nil)
			u.dirty = false
		}
		u.recent.endCycle()
		u.touched = false
	}
	s.touched = s.touched[:0]
	if !s.batch.Empty() {
		start := time.Now()
		s.batch.Set(shardKey(s.scratch[:0], tagLastID), be64(s.ids.last), nil)
		opts := pebble.Sync
		if s.cfg.NoSync {
			opts = pebble.NoSync
		}
		if err := s.batch.Commit(opts); err != nil {
			s.fail(fmt.Errorf("storage: shard %d commit: %w", s.cfg.ID, err))
			_ = s.batch.Close()
			s.batch = nil
			return
		}
		d := time.Since(start)
		s.commits.Add(1)
		s.commitNanos.Add(uint64(d))
		if s.cfg.OnCommit != nil {
			s.cfg.OnCommit(d, s.cycleOps)
		}
	}
	_ = s.batch.Close()
	s.batch = nil
	s.cycleOps = 0
	if cap(s.arena) > 4<<20 {
		s.arena = nil
	}
	s.arena = s.arena[:0]
	s.emit()
	s.evict()
}

// fail stops the shard after an unrecoverable storage error: the effects
// of the failed batch are dropped, which only loses answers (clients retry
// sends), never acknowledged data.
func (s *Shard) fail(err error) {
	s.log.Error("shard failed", "err", err)
	s.failed = err
	s.effects = s.effects[:0]
	s.out = s.out[:0]
	s.users = make(map[uint64]*user)
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
}

// day returns today's day number (days since the Unix epoch, UTC).
func (s *Shard) day() uint32 {
	return uint32(s.cfg.Now().Unix() / 86400)
}
