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

// TestBatchGetMatchesBatchGet: a cycle's reads through its kept iterator
// (batchGet) answer what Pebble's Batch.Get answers, read for read, while
// the batch gets sets, deletes and range deletions over
// keys the database holds (in its memtable and in tables) and keys it
// does not, across cycles that commit.
func TestBatchGetMatchesBatchGet(t *testing.T) {
	opts := &pebble.Options{FS: vfs.NewMem(), Logger: pebblelog.Logger{L: slog.New(slog.DiscardHandler)}}
	for i := range opts.Levels {
		opts.Levels[i].FilterPolicy = bloom.FilterPolicy(10) // as Open's
	}
	db, err := pebble.Open("db", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
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
