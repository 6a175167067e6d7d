package storage

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/parley-im/parley/internal/pebblelog"
)

// openLikeShard opens an in-memory database with Open's comparer and
// filters, closed with tb.
func openLikeShard(tb testing.TB) *pebble.DB {
	opts := &pebble.Options{FS: vfs.NewMem(), Logger: pebblelog.Logger{L: slog.New(slog.DiscardHandler)}}
	for i := range opts.Levels {
		opts.Levels[i].FilterPolicy = bloom.FilterPolicy(10) // as Open's
	}
	db, err := pebble.Open("db", opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = db.Close() })
	return db
}

// TestBatchGetMatchesBatchGet: a cycle's reads through its kept iterator
// (batchGet) answer what Pebble's Batch.Get answers, read for read, while
// the batch gets sets, deletes and range deletions over
// keys the database holds (in its memtable and in tables) and keys it
// does not, across cycles that commit.
func TestBatchGetMatchesBatchGet(t *testing.T) {
	db := openLikeShard(t)
	s := &Shard{db: db}
	rng := rand.New(rand.NewPCG(8, 8))
	key := func() []byte { return fmt.Appendf(nil, "k%03d", rng.IntN(64)) }
	reads, found := 0, 0
	for cycle := range 40 {
		s.batch = db.NewIndexedBatch()
		for range 200 {
			k := key()
			switch r := rng.IntN(20); {
			case r < 6:
				_ = s.batch.Set(k, fmt.Appendf(nil, "v%d-%d", cycle, rng.IntN(1000)), nil)
			case r < 9:
				_ = s.batch.Delete(k, nil)
			case r < 10:
				hi := append(bytes.Clone(k), 0xff)
				_ = s.batch.DeleteRange(k, hi, nil)
			default:
				want, closer, err := s.batch.Get(k)
				if errors.Is(err, pebble.ErrNotFound) {
					want, err = nil, nil
				} else if err == nil {
					want = bytes.Clone(want)
					_ = closer.Close()
				}
				if err != nil {
					t.Fatal(err)
				}
				got, err := s.getAppend(nil, k)
				if err != nil {
					t.Fatal(err)
				}
				if (got == nil) != (want == nil) || !bytes.Equal(got, want) {
					t.Fatalf("cycle %d: read of %s: %q, Batch.Get says %q", cycle, k, got, want)
				}
				reads++
				if want != nil {
					found++
				}
			}
		}
		if err := s.batch.Commit(pebble.NoSync); err != nil {
			t.Fatal(err)
		}
		s.closeBatch()
		if cycle%10 == 9 {
			if err := db.Flush(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if found == 0 || found == reads {
		t.Fatalf("%d of %d reads found their key: the test reads too little of either", found, reads)
	}
	t.Logf("%d reads, %d found", reads, found)
}

// BenchmarkCycleReads compares a cycle's point reads through Batch.Get
// (read=batch-get) with reads through the iterator kept for the cycle
// (read=kept-iter, batchGet), on a database of 200,000 keys in tables and
// a memtable: each cycle sets 16 keys and reads 1 or 8, a quarter of them
// keys the database holds, a quarter keys the cycle set, half keys nobody
// wrote (as a send's dedupe record mostly is). Per cycle (its batch, the
// same in both, and the kept iterator's opening included):
//
//	go test ./storage -run '^$' -bench CycleReads -benchmem -count 3
func BenchmarkCycleReads(b *testing.B) {
	db := openLikeShard(b)
	const stored = 200_000
	key := func(i int) []byte { return fmt.Appendf(nil, "user/%08d/record", i) }
	for i := range stored {
		k := key(2 * i) // even keys stored, odd ones never
		if err := db.Set(k, k, pebble.NoSync); err != nil {
			b.Fatal(err)
		}
		if i == stored/2 {
			if err := db.Flush(); err != nil {
				b.Fatal(err)
			}
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	keys := make([][]byte, 4096) // the keys read, in turn: held, set, unwritten, unwritten
	sets := make([][]byte, 4096) // the keys set, in turn
	for i := range keys {
		sets[i] = key(2*stored + 2*rng.IntN(1<<20))
		switch i % 4 {
		case 0:
			keys[i] = key(2 * rng.IntN(stored))
		case 1:
			keys[i] = sets[i-i%16+rng.IntN(16)] // one of its cycle's
		default:
			keys[i] = key(2*rng.IntN(stored) + 1)
		}
	}
	for _, reads := range []int{1, 8} {
		for _, kept := range []bool{false, true} {
			name := fmt.Sprintf("reads=%d/read=batch-get", reads)
			if kept {
				name = fmt.Sprintf("reads=%d/read=kept-iter", reads)
			}
			b.Run(name, func(b *testing.B) {
				benchCycleReads(b, db, kept, reads, keys, sets)
			})
		}
	}
}

func benchCycleReads(b *testing.B, db *pebble.DB, kept bool, reads int, keys, sets [][]byte) {
	s := &Shard{db: db}
	var buf []byte
	read := func(k []byte) {
		if kept {
			v, err := s.batchGet(k)
			if err != nil && !errors.Is(err, pebble.ErrNotFound) {
				b.Fatal(err)
			}
			buf = append(buf[:0], v...)
			return
		}
		v, closer, err := s.batch.Get(k)
		if errors.Is(err, pebble.ErrNotFound) {
			return
		}
		if err != nil {
			b.Fatal(err)
		}
		buf = append(buf[:0], v...)
		_ = closer.Close()
	}
	next := 0
	b.ResetTimer()
	for range b.N {
		s.batch = db.NewIndexedBatch()
		c := next % len(sets) / 16 * 16
		for _, k := range sets[c : c+16] {
			_ = s.batch.Set(k, k, nil)
		}
		for range reads {
			read(keys[next%len(keys)])
			next++
		}
		s.closeBatch() // not committed: the database stays as it is
	}
}
