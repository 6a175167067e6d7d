package storage

import (
	"log/slog"
	"math/rand/v2"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/parley-im/parley/internal/pebblelog"
)

// BenchmarkCommitOrder models the writes of a shard's cycles against a
// warm 64 MiB memtable (Config.MemTableBytes' default) and commits the
// same cycles to two databases, one batch as built and one through
// orderedBatch as finishCycle does, alternating message by message so
// that both see the same load on a shared machine. Not the shard: its
// keys only, so that the memtable's part is measured alone. It reports
// the committing thread's CPU per message (building the batch, ordering
// it, inserting it into the memtable) for each order and their ratio.
// One op is one message:
//
//   - load=fanout: a message to a 1024-member group, one at a time (the
//     closed-loop fan-out of docs/benchmarks.md): one cycle sets the 1,024
//     members' inbox entries and expiry index records, in member order;
//     then their acks come 32 to a cycle, each a single delete of the
//     entry, the device cursor and the user record.
//   - load=pairs: a 1:1 cycle flat out, 500 pairs, 670 sends: a send sets
//     the recipient's entry, expiry record, dedupe record and message
//     index record; an ack in the same cycle deletes that same entry and
//     sets the cursor and the user record (a simplification: a real shard
//     acks a message in a later cycle than the one that stores it).
//
// Repeat invocations:
//
//	go test -run '^$' -bench 'CommitOrder' -benchtime 40x ./storage/
func BenchmarkCommitOrder(b *testing.B) {
	for _, load := range []string{"fanout", "pairs"} {
		b.Run("load="+load, func(b *testing.B) { benchCommitOrder(b, load) })
	}
}

// orderModel is one database of BenchmarkCommitOrder and the model's
// state of its users.
type orderModel struct {
	db      *pebble.DB
	ordered bool
	batch   *pebble.Batch
	recs    []batchRec
	heads   map[uint64]uint64
	ids     idGenerator
	n       int // records of the batch's acks
}

func benchCommitOrder(b *testing.B, load string) {
	rng := rand.New(rand.NewPCG(3, 4))
	users := make([]uint64, 1024)
	for i := range users {
		users[i] = uint64(i+1)<<slotBits | uint64(rng.IntN(NumSlots)) // ids as accounts get them
	}
	var models [2]*orderModel
	for i := range models {
		// In memory and without a WAL, whose costs do not depend on the
		// order; the memtable never fills (below), so no flush or write
		// stall adds its noise.
		db, err := pebble.Open("", &pebble.Options{
			FS: vfs.NewMem(), DisableWAL: true, MemTableSize: 64 << 20,
			Logger: pebblelog.Logger{L: slog.New(slog.DiscardHandler)},
		})
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		models[i] = &orderModel{db: db, ordered: i == 1, batch: db.NewIndexedBatch(), heads: map[uint64]uint64{}}
	}
	entry, record := make([]byte, 60), make([]byte, 48)
	var key []byte
	now := time.Unix(1_750_000_000, 0)
	message := func(m *orderModel, pick *rand.Rand) {
		commit := func() {
			b := m.batch
			if m.ordered {
				o, recs, err := orderedBatch(m.db, b, m.recs)
				if err != nil {
					panic(err)
				}
				m.recs = recs
				b = o
				defer m.batch.Close()
			}
			if err := b.Commit(pebble.NoSync); err != nil {
				panic(err)
			}
			_ = b.Close()
			m.batch, m.n = m.db.NewIndexedBatch(), 0
		}
		appendEntry := func(u uint64) {
			m.heads[u]++
			key = inboxKey(key[:0], u, m.heads[u])
			_ = m.batch.Set(key, entry, nil)
			key = expiryKey(key[:0], 20000, u)
			_ = m.batch.Set(key, be64(m.heads[u]), nil)
		}
		ack := func(u uint64) {
			key = inboxKey(key[:0], u, m.heads[u])
			_ = m.batch.SingleDelete(key, nil)
			key = deviceKey(key[:0], tagCursor, u, 1)
			_ = m.batch.Set(key, be64(m.heads[u]), nil)
			key = userKey(key[:0], u)
			_ = m.batch.Set(key, record, nil)
		}
		if load == "fanout" {
			for _, u := range users {
				appendEntry(u)
			}
			commit()
			for _, u := range users {
				ack(u)
				if m.n++; m.n == 32 {
					commit()
				}
			}
			commit()
			return
		}
		for range 670 {
			i := pick.IntN(len(users) / 2)
			from, to := users[2*i], users[2*i+1]
			appendEntry(to)
			id := m.ids.next(now)
			key = dedupeKey(key[:0], to, from, 1, id)
			_ = m.batch.Set(key, record[:16], nil)
			key = msgIndexKey(key[:0], msgToUser, to, id)
			_ = m.batch.Set(key, record[:24], nil)
			ack(to)
		}
		commit()
	}
	// Both databases get the same messages: one picker each, same seed.
	picks := [2]*rand.Rand{rand.New(rand.NewPCG(5, 6)), rand.New(rand.NewPCG(5, 6))}
	// Fill the memtables to about a third, as a running shard has them on
	// average (they rotate when full); the runs take them to about two
	// thirds.
	for models[0].db.Metrics().MemTable.Size < 20<<20 {
		for i, m := range models {
			message(m, picks[i])
		}
	}
	runtime.LockOSThread() // for the thread's CPU time
	defer runtime.UnlockOSThread()
	var cpu [2]time.Duration
	b.ResetTimer()
	for range b.N {
		for i, m := range models {
			start := threadCPU()
			message(m, picks[i])
			cpu[i] += threadCPU() - start
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(cpu[0])/float64(b.N), "built-cpu-ns/msg")
	b.ReportMetric(float64(cpu[1])/float64(b.N), "keys-cpu-ns/msg")
	b.ReportMetric(float64(cpu[1])/float64(cpu[0]), "keys/built")
	for _, m := range models {
		_ = m.batch.Close()
		if met := m.db.Metrics(); met.Flush.Count > 0 {
			b.Fatalf("a memtable was flushed (%d bytes): run fewer ops", met.MemTable.Size)
		}
	}
}

// threadCPU returns the calling thread's CPU time (user and system).
func threadCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(1, &ru) // RUSAGE_THREAD
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
