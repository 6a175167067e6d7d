package storage

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/batchrepr"
)

// Ordered commits. A cycle builds its writes in an indexed batch, in the
// order its ops come: a group fan-out sets 1,024 inbox keys of users spread
// over the key space, a 1:1 cycle the keys of hundreds of users. Pebble
// inserts a committed batch into its memtable record by record with one
// arenaskl.Inserter (mem_table.go, memTable.apply), which keeps the splice
// of the last insert and starts from it when the next key falls between
// the same two nodes (arenaskl/skl.go, findSplice); any other key walks the
// skiplist from its top level down (findSpliceForLevel), a string of cache
// misses in a 64 MiB memtable. Flat out that walk was the first item of
// the server's CPU profile (docs/benchmarks.md). Commit therefore copies
// the batch's records in ascending key order into a plain batch and
// commits that one: a key that lands right after the one before, with no
// older node between (several entries of one inbox, increasing cmids of
// one sender), reuses the splice, and the walks of the others share the
// upper levels of the path before them (pebble v2.1.7; measured in
// docs/benchmarks.md: about halved flat out, little for a fan-out, whose
// keys fall between other users' older nodes).
//
// Reordering keeps the batch's meaning. Records of one key keep their order
// (a Set and its SingleDelete in one cycle, a record rewritten twice: the
// later still wins, as it gets the later sequence number). A range
// deletion applies to the point records before it in the batch and not to
// those after, so no record moves across one: the batch is sorted in
// segments between range deletions, which keep their places. The batch is
// one atomic write either way, so a crash keeps all of it or none.

// batchRec is one record of a batch's representation repr: the bytes from
// off to end, its user key at keyOff. It holds no pointer, so sorting moves
// records without write barriers.
type batchRec struct {
	pre            [preWords]uint64 // the key's first 8·preWords bytes, big-endian words (zero-padded)
	off, end       int32
	keyOff, keyLen int32
}

// newBatchRec returns the record from off to end of key, which is at
// keyOff in the representation.
func newBatchRec(key []byte, keyOff, off, end int) batchRec {
	rec := batchRec{off: int32(off), end: int32(end), keyOff: int32(keyOff), keyLen: int32(len(key))}
	var pre [8 * preWords]byte
	copy(pre[:], key)
	for i := range rec.pre {
		rec.pre[i] = binary.BigEndian.Uint64(pre[8*i:])
	}
	return rec
}

// orderedBatch returns a new batch of db holding src's records in
// ascending key order (see above); src is at most maxOrderedBytes long.
// recs is scratch space for the records, returned for reuse. The caller
// commits and closes the batch.
func orderedBatch(db *pebble.DB, src *pebble.Batch, recs []batchRec) (*pebble.Batch, []batchRec, error) {
	repr := src.Repr()
	recs = recs[:0]
	r := batchrepr.Read(repr)
	for {
		off := len(repr) - len(r)
		kind, key, _, ok, err := r.Next()
		if err != nil {
			return nil, recs, fmt.Errorf("storage: read batch: %w", err)
		}
		if !ok {
			break
		}
		switch kind {
		case pebble.InternalKeyKindSet, pebble.InternalKeyKindDelete,
			pebble.InternalKeyKindSingleDelete, pebble.InternalKeyKindRangeDelete:
		default:
			return nil, recs[:0], fmt.Errorf("storage: batch record of kind %v cannot be ordered", kind)
		}
		keyOff := off + 1 + uvarintLen(len(key)) // kind, key length, key
		recs = append(recs, newBatchRec(key, keyOff, off, len(repr)-len(r)))
	}
	recs = slices.Grow(recs, len(recs)) // room for the sort's scratch after them
	sortSegments(repr, recs, recs[len(recs):2*len(recs)])
	out := db.NewBatchWithSize(len(repr))
	buf := append(out.Repr()[:0], repr[:batchrepr.HeaderLen]...)
	for _, rec := range recs {
		buf = append(buf, repr[rec.off:rec.end]...)
	}
	if err := out.SetRepr(buf); err != nil {
		_ = out.Close()
		return nil, recs[:0], fmt.Errorf("storage: ordered batch: %w", err)
	}
	return out, recs[:0], nil
}

// sortSegments sorts recs by key, keeping the order of records of one key
// and never moving a record across a range deletion. tmp is scratch space
// of len(recs) records.
func sortSegments(repr []byte, recs, tmp []batchRec) {
	start := 0
	for i := 0; i <= len(recs); i++ {
		if i < len(recs) && repr[recs[i].off] != byte(pebble.InternalKeyKindRangeDelete) {
			continue
		}
		sortRecs(repr, recs[start:i], tmp[start:i])
		start = i + 1
	}
}

// bySlotMin is the fewest records sorted by slot first.
const bySlotMin = 64

// sortRecs sorts recs by key, records of one key in the order of their
// offsets. A large batch is first distributed by its keys' first two
// bytes (slot keys.go, or the shard's 0xffff; stably, in one pass), so
// the comparison sort only orders the few records of each slot.
func sortRecs(repr []byte, recs, tmp []batchRec) {
	if len(recs) >= bySlotMin {
		var counts [NumSlots + 2]int32 // bucket b's records start at counts[b]
		ok := true
		for i := range recs {
			b, in := slotBucket(&recs[i])
			if !in {
				ok = false
				break
			}
			counts[b+1]++
		}
		if ok {
			for b := 1; b < len(counts); b++ {
				counts[b] += counts[b-1]
			}
			ends := counts // after the scatter: where each bucket ends
			for i := range recs {
				b, _ := slotBucket(&recs[i])
				tmp[ends[b]] = recs[i]
				ends[b]++
			}
			copy(recs, tmp)
			for b := range NumSlots + 1 {
				sortBucket(repr, recs[counts[b]:ends[b]])
			}
			return
		}
	}
	sortBucket(repr, recs)
}

// slotBucket returns the bucket of rec's key by its first two bytes: a
// slot is its own bucket, 0xffff the one after the slots; in is false for
// any other value.
func slotBucket(rec *batchRec) (b int, in bool) {
	switch first := rec.pre[0] >> 48; {
	case first < NumSlots:
		return int(first), true
	case first == shardPrefix:
		return NumSlots, true
	default:
		return 0, false
	}
}

// sortBucket sorts recs by key; records of one key stay in batch order
// (their offsets grow).
func sortBucket(repr []byte, recs []batchRec) {
	slices.SortFunc(recs, func(a, b batchRec) int {
		if c := compareKeys(repr, &a, &b); c != 0 {
			return c
		}
		return cmp.Compare(a.off, b.off)
	})
}

// preWords is how many 8-byte words of a key batchRec keeps for sorting:
// 32 bytes hold the whole of almost every key (keys.go), so records rarely
// compare their keys' bytes.
const preWords = 4

// compareKeys orders the keys of two records of repr as bytes.Compare
// does.
func compareKeys(repr []byte, a, b *batchRec) int {
	for i := range a.pre {
		if a.pre[i] != b.pre[i] {
			return cmp.Compare(a.pre[i], b.pre[i])
		}
	}
	if a.keyLen <= 8*preWords && b.keyLen <= 8*preWords {
		// Equal when zero-padded: the shorter key is the other's prefix.
		return cmp.Compare(a.keyLen, b.keyLen)
	}
	return bytes.Compare(repr[a.keyOff:a.keyOff+a.keyLen], repr[b.keyOff:b.keyOff+b.keyLen])
}

// uvarintLen is the length of n's varint encoding.
func uvarintLen(n int) int {
	l := 1
	for ; n >= 0x80; n >>= 7 {
		l++
	}
	return l
}

// maxOrderedBytes is the largest batch committed in key order: batchRec
// keeps 32-bit offsets. A larger one is committed as built.
const maxOrderedBytes = 1 << 30

// commitOrdered commits the cycle's batch with its records in key order.
func (s *Shard) commitOrdered(opts *pebble.WriteOptions) error {
	if s.batch.Len() > maxOrderedBytes {
		return s.batch.Commit(opts)
	}
	b, recs, err := orderedBatch(s.db, s.batch, s.batchRecs)
	s.batchRecs = recs
	if err != nil {
		return fmt.Errorf("storage: shard %d: %w", s.cfg.ID, err)
	}
	defer b.Close()
	return b.Commit(opts)
}
