package storage

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/batchrepr"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// TestOrderedBatchSameResult commits the same random batches to two
// databases, one as built and one through orderedBatch, and checks after
// every batch that both hold the same keys and values (and that the
// ordered batch ascends between range deletions): rewrites of one key
// (the later wins), deletes, single deletes of entries set once (in the
// same batch or an earlier one) and range deletions before and after the
// writes they cover.
func TestOrderedBatchSameResult(t *testing.T) {
	open := func() *pebble.DB {
		db, err := pebble.Open("", &pebble.Options{FS: vfs.NewMem()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = db.Close() })
		return db
	}
	plain, ordered := open(), open()
	rng := rand.New(rand.NewPCG(1, 2))
	// Keys start as the shard's do (keys.go): a slot or 0xffff, a tag;
	// now and then one does not, which orders the batch without slots.
	prefix := func() []byte {
		switch r := rng.IntN(1000); {
		case r == 0:
			return []byte("zz")
		case r < 100:
			return appendPrefix(nil, shardPrefix, 'k')
		default:
			return appendPrefix(nil, []uint16{0, 1, 7, NumSlots - 1}[r%4], 'k')
		}
	}
	key := func() []byte { return fmt.Appendf(prefix(), "%02d", rng.IntN(40)) }
	var recs []batchRec
	var nextEntry, firstLive int // inbox-like keys: set once, single-deleted once
	for round := range 60 {
		a, b := plain.NewIndexedBatch(), ordered.NewIndexedBatch()
		both := func(f func(*pebble.Batch) error) {
			if err := f(a); err != nil {
				t.Fatal(err)
			}
			if err := f(b); err != nil {
				t.Fatal(err)
			}
		}
		for range 1 + rng.IntN(3*bySlotMin) {
			switch r := rng.IntN(20); {
			case r < 9:
				k, v := key(), fmt.Appendf(nil, "v%d", rng.IntN(1000))
				both(func(x *pebble.Batch) error { return x.Set(k, v, nil) })
			case r < 12:
				k := key()
				both(func(x *pebble.Batch) error { return x.Delete(k, nil) })
			case r < 13:
				lo, hi := key(), key()
				if bytes.Compare(lo, hi) > 0 {
					lo, hi = hi, lo
				}
				both(func(x *pebble.Batch) error { return x.DeleteRange(lo, hi, nil) })
			case r < 17:
				k, v := entryKey(nextEntry), fmt.Appendf(nil, "entry%d", nextEntry)
				nextEntry++
				both(func(x *pebble.Batch) error { return x.Set(k, v, nil) })
			default:
				if firstLive < nextEntry {
					k := entryKey(firstLive)
					firstLive++
					both(func(x *pebble.Batch) error { return x.SingleDelete(k, nil) })
				}
			}
		}
		if err := a.Commit(pebble.NoSync); err != nil {
			t.Fatal(err)
		}
		o, r, err := orderedBatch(ordered, b, recs)
		if err != nil {
			t.Fatal(err)
		}
		recs = r
		checkAscending(t, o)
		if o.Count() != b.Count() {
			t.Fatalf("round %d: ordered batch has %d records, the batch %d", round, o.Count(), b.Count())
		}
		if err := o.Commit(pebble.NoSync); err != nil {
			t.Fatal(err)
		}
		_ = o.Close()
		_ = a.Close()
		_ = b.Close()
		if round%20 == 19 { // and through a flush to an sstable
			if err := plain.Flush(); err != nil {
				t.Fatal(err)
			}
			if err := ordered.Flush(); err != nil {
				t.Fatal(err)
			}
		}
		if want, got := dump(t, plain), dump(t, ordered); want != got {
			t.Fatalf("round %d: committed as built:\n%s\nordered:\n%s", round, want, got)
		}
	}
}

// checkAscending fails t unless b's keys ascend between range deletions.
func checkAscending(t *testing.T, b *pebble.Batch) {
	t.Helper()
	var last []byte
	eachRecord(t, b, func(kind pebble.InternalKeyKind, k, _ []byte) {
		if kind == pebble.InternalKeyKindRangeDelete {
			last = nil
			return
		}
		if last != nil && bytes.Compare(last, k) > 0 {
			t.Fatalf("ordered batch: %x after %x", k, last)
		}
		last = k
	})
}

// eachRecord calls fn with every record of b, in order.
func eachRecord(t *testing.T, b *pebble.Batch, fn func(kind pebble.InternalKeyKind, k, v []byte)) {
	t.Helper()
	r := batchrepr.Read(b.Repr())
	for {
		kind, k, v, ok, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return
		}
		fn(kind, k, v)
	}
}

// entryKey is the key of the test's nth set-once entry, in slot n%3.
func entryKey(n int) []byte { return inboxKey(nil, uint64(n%3), uint64(n)) }

// dump returns every key and value of db.
func dump(t *testing.T, db *pebble.DB) string {
	t.Helper()
	it, err := db.NewIter(nil)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	for it.First(); it.Valid(); it.Next() {
		fmt.Fprintf(&out, "%x=%s\n", it.Key(), it.Value())
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

// TestOrderedBatchOrder checks what the memtable gains from: between two
// range deletions the records come in ascending key order, those of one
// key in the order they were written, and each range deletion stays
// between the records written before and after it.
func TestOrderedBatchOrder(t *testing.T) {
	db, err := pebble.Open("", &pebble.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	b := db.NewIndexedBatch()
	defer b.Close()
	for _, op := range []string{"set c 1", "set a 1", "del b", "set c 2", "set a 2", "range a c", "set b 3", "sdel a", "set a 4"} {
		var kind, k, v string
		fmt.Sscan(op, &kind, &k, &v)
		switch kind {
		case "set":
			_ = b.Set([]byte(k), []byte(v), nil)
		case "del":
			_ = b.Delete([]byte(k), nil)
		case "sdel":
			_ = b.SingleDelete([]byte(k), nil)
		case "range":
			_ = b.DeleteRange([]byte(k), []byte(v), nil)
		}
	}
	o, _, err := orderedBatch(db, b, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	var got []string
	eachRecord(t, o, func(kind pebble.InternalKeyKind, k, v []byte) {
		got = append(got, fmt.Sprintf("%v %s %s", kind, k, v))
	})
	want := []string{
		"SET a 1", "SET a 2", "DEL b ", "SET c 1", "SET c 2",
		"RANGEDEL a c",
		"SINGLEDEL a ", "SET a 4", "SET b 3",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("ordered batch:\n%q\nwant\n%q", got, want)
	}
}

// TestCompareKeys checks the sort's comparison against bytes.Compare on
// keys of every length around the 32 bytes it keeps in words, made of
// few byte values so that long common prefixes and zero bytes are common.
func TestCompareKeys(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	key := func() []byte {
		k := make([]byte, rng.IntN(8*preWords+9))
		for i := range k {
			k[i] = byte(rng.IntN(3)) // 0, 1, 2
		}
		return k
	}
	for range 50_000 {
		a, b := key(), key()
		if rng.IntN(4) == 0 { // b extends a, often by zeros
			b = append(append([]byte(nil), a...), make([]byte, rng.IntN(3))...)
		}
		repr := append(append([]byte(nil), a...), b...)
		ra, rb := newBatchRec(a, 0, 0, 0), newBatchRec(b, len(a), 0, 0)
		if got, want := compareKeys(repr, &ra, &rb), bytes.Compare(a, b); got != want {
			t.Fatalf("compareKeys(%x, %x) = %d, want %d", a, b, got, want)
		}
	}
}
