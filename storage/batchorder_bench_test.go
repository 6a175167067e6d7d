package storage

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/parley-im/parley/internal/pebblelog"
)

// BenchmarkCommitOrder models the writes of a shard's cycles against a
// warm 64 MiB memtable (Config.MemTableBytes' default) and commits each cycle's
// batch as built (order=built) or through orderedBatch (order=keys), as
// finishCycle does. Not the shard: its keys only, so that the memtable's
// part is measured alone. One op is one message:
//
//   - load=fanout: a message to a 1024-member group, one at a time (the
//     closed-loop fan-out of docs/benchmarks.md): one cycle sets the 1,024
//     members' inbox entries and expiry index records, in member order;
//     then their acks come 32 to a cycle, each a single delete of the
//     entry, the device cursor and the user record.
//   - load=pairs: 1:1 flat out, 500 pairs, 1,340 ops a cycle: a send sets
//     the recipient's entry, expiry record, dedupe record and message
//     index record; the ack of the message before deletes that entry and
//     sets the cursor and the user record.
//
// Compare the two orders of one invocation; repeat invocations:
//
//	go test -run '^$' -bench 'CommitOrder' -benchtime 400x ./storage/
func BenchmarkCommitOrder(b *testing.B) {
	for _, load := range []string{"fanout", "pairs"} {
		for _, ordered := range []bool{false, true} {
			order := "built"
			if ordered {
				order = "keys"
			}
			b.Run(fmt.Sprintf("load=%s/order=%s", load, order), func(b *testing.B) {
				benchCommitOrder(b, load, ordered)
			})
		}
	}
}

func benchCommitOrder(b *testing.B, load string, ordered bool) {
	db, err := pebble.Open(b.TempDir(), &pebble.Options{
		MemTableSize: 64 << 20,
		Logger:       pebblelog.Logger{L: slog.New(slog.DiscardHandler)},
	})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	rng := rand.New(rand.NewPCG(3, 4))
	users := make([]uint64, 1024)
	for i := range users {
		users[i] = uint64(i+1)<<slotBits | uint64(rng.IntN(NumSlots)) // ids as accounts get them
	}
	heads := make(map[uint64]uint64, len(users))
	var recs []batchRec
	var key []byte
	batch := db.NewIndexedBatch()
	n := 0
	commit := func() {
		if ordered {
			o, r, err := orderedBatch(db, batch, recs)
			if err != nil {
				b.Fatal(err)
			}
			recs = r
			err = o.Commit(pebble.NoSync)
			_ = o.Close()
			if err != nil {
				b.Fatal(err)
			}
		} else if err := batch.Commit(pebble.NoSync); err != nil {
			b.Fatal(err)
		}
		_ = batch.Close()
		batch = db.NewIndexedBatch()
		n = 0
	}
	entry := make([]byte, 60)
	record := make([]byte, 48)
	appendEntry := func(u uint64) {
		heads[u]++
		key = inboxKey(key[:0], u, heads[u])
		_ = batch.Set(key, entry, nil)
		key = expiryKey(key[:0], 20000, u)
		_ = batch.Set(key, be64(heads[u]), nil)
	}
	ack := func(u uint64) {
		key = inboxKey(key[:0], u, heads[u])
		_ = batch.SingleDelete(key, nil)
		key = deviceKey(key[:0], tagCursor, u, 1)
		_ = batch.Set(key, be64(heads[u]), nil)
		key = userKey(key[:0], u)
		_ = batch.Set(key, record, nil)
	}
	var cmid uint64
	ids, now := idGenerator{}, time.Unix(1_750_000_000, 0)
	message := func() {
		switch load {
		case "fanout":
			for _, u := range users {
				appendEntry(u)
			}
			commit()
			for _, u := range users {
				ack(u)
				if n++; n == 32 {
					commit()
				}
			}
			commit()
		default:
			for range 1340 / 2 {
				i := rng.IntN(len(users) / 2)
				from, to := users[2*i], users[2*i+1]
				cmid++
				appendEntry(to)
				key = dedupeKey(key[:0], to, from, 1, cmid)
				_ = batch.Set(key, record[:16], nil)
				key = msgIndexKey(key[:0], msgToUser, to, ids.next(now))
				_ = batch.Set(key, record[:24], nil)
				ack(to)
			}
			commit()
		}
	}
	for range 200 { // fill the memtable as a running shard has it
		message()
	}
	b.ResetTimer()
	for range b.N {
		message()
	}
	b.StopTimer()
	_ = batch.Close()
}
