package storage

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"

	"github.com/parley-im/parley/internal/pebblelog"
)

// BenchmarkCommitPath is issue 10's experiment "one commit path per node":
// N shards' cycles committed to N Pebble databases, each with its own
// syncer (today's layout, path=db-per-shard), against the same cycles
// committed to one Pebble database with one coordinator that syncs its
// WAL for every shard at once (path=one-db: shards as key ranges of one
// store, as CockroachDB keeps ranges in one Pebble per store). Not the
// shard: a model of its commit path only, with the writes of a 1:1 SEND
// and the ACK of the message before (an inbox entry, its dedupe record,
// the user record, a cursor, a single delete) and the durability rule of
// shard_sync.go (commit without the fsync, a cycle's answers wait for a
// sync that covers it, adaptive group commit with DefaultSyncWait).
//
// load=rate-N is an open loop of N messages a second over all shards;
// load=flat is 32 clients per shard, each waiting for its answer before
// the next. It reports fsyncs per message, the process's CPU per message
// (getrusage: clients, actors and syncers; the same clients in both
// paths, so compare the two paths of one run), messages per cycle, and
// the latency from submit to durable (p50, p99). One invocation runs the
// two paths side by side for every load; repeat invocations rather than
// -count, which repeats each sub-benchmark in a row:
//
//	for i in 1 2 3; do
//		go test -run '^$' -bench 'CommitPath/load=rate' -benchtime 6000x ./storage/
//		go test -run '^$' -bench 'CommitPath/load=flat' -benchtime 60000x ./storage/
//	done
func BenchmarkCommitPath(b *testing.B) {
	for _, load := range []struct {
		name string
		rate int // messages a second over all shards; 0: flat out
	}{{"rate-2000", 2000}, {"rate-20000", 20000}, {"flat", 0}} {
		for _, shards := range []int{2, 4} {
			for _, oneDB := range []bool{false, true} {
				path := "db-per-shard"
				if oneDB {
					path = "one-db"
				}
				b.Run(fmt.Sprintf("load=%s/shards=%d/path=%s", load.name, shards, path), func(b *testing.B) {
					benchCommitPath(b, shards, oneDB, load.rate)
				})
			}
		}
	}
}

// cpClients is how many closed-loop clients each shard has flat out.
const cpClients = 32

// cpMsg is one message submitted to a model shard.
type cpMsg struct {
	user, from, cmid uint64
	start            time.Time
	answered         chan struct{} // nil for the open loop
}

// cpShard models a shard's actor: it applies what is queued as one
// cycle, commits it without a sync and hands its answers to a syncer.
type cpShard struct {
	id     uint16
	db     *pebble.DB
	syncer *cpSyncer

	mu    sync.Mutex
	queue []cpMsg // guarded by mu
	wake  chan struct{}

	committed atomic.Uint64
	relMu     sync.Mutex
	held      []cpReady       // guarded by relMu
	lat       []time.Duration // guarded by relMu
	answered  *sync.WaitGroup

	// Owned by the actor.
	seqs    map[uint64]uint64
	cycleNo uint64
	cycles  int
	key     []byte
	val     []byte
}

type cpReady struct {
	need uint64
	msgs []cpMsg
}

func (s *cpShard) submit(m cpMsg) {
	s.mu.Lock()
	s.queue = append(s.queue, m)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// run is the actor loop, until stop closes.
func (s *cpShard) run(b *testing.B, stop <-chan struct{}, done *sync.WaitGroup) {
	defer done.Done()
	for {
		select {
		case <-stop:
			return
		case <-s.wake:
		}
		s.mu.Lock()
		msgs := s.queue
		s.queue = nil
		s.mu.Unlock()
		if len(msgs) == 0 {
			continue
		}
		batch := s.db.NewIndexedBatch()
		for _, m := range msgs {
			seq := s.seqs[m.user] + 1
			s.seqs[m.user] = seq
			if s.val == nil {
				s.val = make([]byte, 60) // a stored 20-byte text and its header
			}
			binary.BigEndian.PutUint64(s.val, m.cmid)
			_ = batch.Set(inboxKey(s.key[:0], m.user, seq), s.val, nil)
			_ = batch.Set(dedupeKey(s.key[:0], m.user, m.from, 1, m.cmid), s.val[:10], nil)
			_ = batch.Set(userKey(s.key[:0], m.user), s.val[:40], nil)
			if seq > 1 { // the ACK of the message before: cursor and delete
				_ = batch.Set(deviceKey(s.key[:0], tagCursor, m.user, 1), s.val[:8], nil)
				_ = batch.SingleDelete(inboxKey(s.key[:0], m.user, seq-1), nil)
			}
		}
		// The last message id, a shard-owned key: in one store it needs the
		// shard's number after the 0xffff prefix.
		k := binary.BigEndian.AppendUint16(shardKey(s.key[:0], tagLastID), s.id)
		_ = batch.Set(k, s.val[:8], nil)
		if err := batch.Commit(pebble.NoSync); err != nil {
			b.Error(err)
			return
		}
		_ = batch.Close()
		s.cycleNo++
		s.cycles++
		s.relMu.Lock()
		s.held = append(s.held, cpReady{need: s.cycleNo, msgs: msgs})
		s.relMu.Unlock()
		s.committed.Store(s.cycleNo)
		s.syncer.poke()
	}
}

// release answers the held cycles up to synced.
func (s *cpShard) release(synced uint64, now time.Time) {
	s.relMu.Lock()
	n := 0
	for n < len(s.held) && s.held[n].need <= synced {
		for _, m := range s.held[n].msgs {
			s.lat = append(s.lat, now.Sub(m.start))
			if m.answered != nil {
				m.answered <- struct{}{}
			}
			s.answered.Done()
		}
		n++
	}
	s.held = s.held[n:]
	s.relMu.Unlock()
}

// cpSyncer syncs one database's WAL for the shards that commit to it,
// with shard_sync.go's adaptive wait.
type cpSyncer struct {
	db     *pebble.DB
	shards []*cpShard
	wake   chan struct{}
	syncs  atomic.Int64
}

func (y *cpSyncer) poke() {
	select {
	case y.wake <- struct{}{}:
	default:
	}
}

func (y *cpSyncer) run(b *testing.B, stop <-chan struct{}, done *sync.WaitGroup) {
	defer done.Done()
	synced := make([]uint64, len(y.shards))
	target := make([]uint64, len(y.shards))
	var lastEnd time.Time
	wait := time.NewTimer(time.Hour)
	defer wait.Stop()
	for {
		select {
		case <-stop:
			return
		case <-y.wake:
		}
		if !lastEnd.IsZero() && time.Since(lastEnd) < time.Millisecond {
			wait.Reset(DefaultSyncWait)
			select {
			case <-stop:
				return
			case <-wait.C:
			}
		}
		behind := false
		for i, s := range y.shards {
			target[i] = s.committed.Load()
			behind = behind || target[i] > synced[i]
		}
		if !behind {
			continue
		}
		if err := y.db.LogData(nil, pebble.Sync); err != nil {
			b.Error(err)
			return
		}
		y.syncs.Add(1)
		now := time.Now()
		for i, s := range y.shards {
			if target[i] > synced[i] {
				synced[i] = target[i]
				s.release(synced[i], now)
			}
		}
		lastEnd = now
	}
}

// cpOpen opens a database with storage.Open's options, scaled by the
// shards it holds.
func cpOpen(b *testing.B, shards int) *pebble.DB {
	opts := &pebble.Options{
		Logger:       pebblelog.Logger{L: slog.New(slog.DiscardHandler)},
		Cache:        pebble.NewCache(int64(shards) * 32 << 20),
		MemTableSize: uint64(shards) * 64 << 20,
	}
	defer opts.Cache.Unref()
	for i := range opts.Levels {
		opts.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	db, err := pebble.Open(b.TempDir(), opts)
	if err != nil {
		b.Fatal(err)
	}
	return db
}

func cpCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func benchCommitPath(b *testing.B, shards int, oneDB bool, rate int) {
	const usersPerShard = 1000
	var answered sync.WaitGroup
	var syncers []*cpSyncer
	var dbs []*pebble.DB
	ss := make([]*cpShard, shards)
	for i := range ss {
		ss[i] = &cpShard{id: uint16(i), wake: make(chan struct{}, 1), answered: &answered, seqs: map[uint64]uint64{}}
	}
	if oneDB {
		y := &cpSyncer{db: cpOpen(b, shards), shards: ss, wake: make(chan struct{}, 1)}
		syncers, dbs = append(syncers, y), append(dbs, y.db)
		for _, s := range ss {
			s.db, s.syncer = y.db, y
		}
	} else {
		for _, s := range ss {
			y := &cpSyncer{db: cpOpen(b, 1), shards: []*cpShard{s}, wake: make(chan struct{}, 1)}
			syncers, dbs = append(syncers, y), append(dbs, y.db)
			s.db, s.syncer = y.db, y
		}
	}
	defer func() {
		for _, db := range dbs {
			_ = db.Close()
		}
	}()
	// user returns shard i's k-th user: slots are dealt to shards in turn.
	user := func(i, k int) uint64 {
		slot := (k*shards + i) % NumSlots
		return uint64(k)<<slotBits | uint64(slot)
	}
	stop := make(chan struct{})
	var running sync.WaitGroup
	for _, s := range ss {
		running.Add(1)
		go s.run(b, stop, &running)
	}
	for _, y := range syncers {
		running.Add(1)
		go y.run(b, stop, &running)
	}
	answered.Add(b.N)
	cpu0 := cpCPU()
	b.ResetTimer()
	var cmid atomic.Uint64
	if rate > 0 {
		// One pacer per shard, rate/shards messages a second each.
		every := time.Duration(shards) * time.Second / time.Duration(rate)
		for i, s := range ss {
			n := b.N / shards
			if i < b.N%shards {
				n++
			}
			go func() {
				start := time.Now()
				for j := range n {
					if d := time.Until(start.Add(time.Duration(j) * every)); d > 0 {
						time.Sleep(d)
					}
					s.submit(cpMsg{user: user(i, j%usersPerShard), from: user(i, j%usersPerShard+1), cmid: cmid.Add(1), start: time.Now()})
				}
			}()
		}
	} else {
		var next atomic.Int64
		for i, s := range ss {
			for c := range cpClients {
				go func() {
					ch := make(chan struct{}, 1)
					for k := 0; next.Add(1) <= int64(b.N); k++ {
						u := (c + k*cpClients) % usersPerShard
						s.submit(cpMsg{user: user(i, u), from: user(i, u+1), cmid: cmid.Add(1), start: time.Now(), answered: ch})
						<-ch
					}
				}()
			}
		}
	}
	answered.Wait()
	b.StopTimer()
	cpu := cpCPU() - cpu0
	close(stop)
	running.Wait()

	var lat []time.Duration
	var syncs int64
	cycles := 0
	for _, s := range ss {
		lat = append(lat, s.lat...)
		cycles += s.cycles
	}
	for _, y := range syncers {
		syncs += y.syncs.Load()
	}
	slices.Sort(lat)
	n := float64(b.N)
	b.ReportMetric(float64(syncs)/n, "fsyncs/msg")
	b.ReportMetric(float64(cpu.Microseconds())/n, "cpu-µs/msg")
	b.ReportMetric(n/float64(cycles), "msgs/cycle")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
