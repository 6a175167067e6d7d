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
// commits that one: consecutive keys of one user (several entries, their
// single deletes) reuse the splice, and the walks of the others share the
// upper levels of the path before them.
//
// Reordering keeps the batch's meaning. Records of one key keep their order
// (a Set and its SingleDelete in one cycle, a record rewritten twice: the
// later still wins, as it gets the later sequence number). A range
// deletion applies to the point records before it in the batch and not to
// those after, so no record moves across one: the batch is sorted in
// segments between range deletions, which keep their places. The batch is
// one atomic write either way, so a crash keeps all of it or none.

// batchRec is one record of a batch's representation: the bytes from off
// to end, and its user key.
type batchRec struct {
	pre      [preWords]uint64 // the key's first 8·preWords bytes, big-endian words (zero-padded)
	key      []byte
	off, end int
}

// newBatchRec returns the record of key from off to end.
func newBatchRec(key []byte, off, end int) batchRec {
	rec := batchRec{key: key, off: off, end: end}
	var pre [8 * preWords]byte
	copy(pre[:], key)
	for i := range rec.pre {
		rec.pre[i] = binary.BigEndian.Uint64(pre[8*i:])
	}
	return rec
}

// orderedBatch returns a new batch of db holding src's records in
// ascending key order (see above). recs is scratch space for the records,
// returned for reuse (its elements cleared). The caller commits and closes
// the batch.
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
			clear(recs)
			return nil, recs[:0], fmt.Errorf("storage: batch record of kind %v cannot be ordered", kind)
		}
		recs = append(recs, newBatchRec(key, off, len(repr)-len(r)))
	}
	sortSegments(repr, recs)
	out := db.NewBatchWithSize(len(repr))
	buf := append(out.Repr()[:0], repr[:batchrepr.HeaderLen]...)
	for _, rec := range recs {
		buf = append(buf, repr[rec.off:rec.end]...)
	}
	clear(recs) // drop the references to src's memory
	if err := out.SetRepr(buf); err != nil {
		_ = out.Close()
		return nil, recs[:0], fmt.Errorf("storage: ordered batch: %w", err)
	}
	return out, recs[:0], nil
}

// sortSegments sorts recs by key, keeping the order of records of one key
// and never moving a record across a range deletion.
func sortSegments(repr []byte, recs []batchRec) {
	start := 0
	for i := 0; i <= len(recs); i++ {
		if i < len(recs) && repr[recs[i].off] != byte(pebble.InternalKeyKindRangeDelete) {
			continue
		}
		seg := recs[start:i]
		// Records of one key stay in batch order: their offsets grow.
		slices.SortFunc(seg, func(a, b batchRec) int {
			if c := compareKeys(&a, &b); c != 0 {
				return c
			}
			return cmp.Compare(a.off, b.off)
		})
		start = i + 1
	}
}

// preWords is how many 8-byte words of a key batchRec keeps for sorting:
// 32 bytes hold the whole of almost every key (keys.go), so records rarely
// compare their keys' bytes.
const preWords = 4

// compareKeys orders two records' keys as bytes.Compare does.
func compareKeys(a, b *batchRec) int {
	for i := range a.pre {
		if a.pre[i] != b.pre[i] {
			return cmp.Compare(a.pre[i], b.pre[i])
		}
	}
	if len(a.key) <= 8*preWords && len(b.key) <= 8*preWords {
		// Equal when zero-padded: the shorter key is the other's prefix.
		return cmp.Compare(len(a.key), len(b.key))
	}
	return bytes.Compare(a.key, b.key)
}

// commitOrdered commits the cycle's batch with its records in key order.
func (s *Shard) commitOrdered(opts *pebble.WriteOptions) error {
	b, recs, err := orderedBatch(s.db, s.batch, s.batchRecs)
	s.batchRecs = recs
	if err != nil {
		return fmt.Errorf("storage: shard %d: %w", s.cfg.ID, err)
	}
	defer b.Close()
	return b.Commit(opts)
}
