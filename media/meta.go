package media

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"

	"github.com/cockroachdb/pebble/v2"

	"github.com/parley-im/parley/internal/pebblelog"
	"github.com/parley-im/parley/protocol/pb"
)

// Metadata lives in its own Pebble database (Dir/meta), written with
// fsync. Keys:
//
//	'm' id(16)           → media record: one per media id
//	'b' hash(32)         → blob record: one per stored blob
//	'x' hash(32) id(16)  → (empty): the ready media ids of a blob, so a
//	                        swept blob takes its ids with it
//
// Values start with a format byte (1) followed by uvarints and fixed
// fields, below. A media record may end with a field added later (owner);
// a record written before it decodes with the field zero.
const (
	prefixMedia = 'm'
	prefixBlob  = 'b'
	prefixIndex = 'x'

	recordFormat = 1
)

// mediaState is where a media id is.
type mediaState uint8

const (
	// statePending: an upload slot was issued; the bytes are not all there
	// or not yet verified. The partial upload is Dir/uploads/<id>.
	statePending mediaState = 1
	// stateReady: verified and stored; the blob record exists.
	stateReady mediaState = 2
)

// record is what the service knows about one media id.
type record struct {
	state   mediaState
	typ     pb.ContentType
	size    int64
	hash    Hash
	created int64 // Unix ms the slot was issued
	// touched is, while pending, the Unix ms of the last slot issued for it
	// or the last PUT to it; the incomplete-upload expiry counts from it.
	// A ready id's freshness is its blob's.
	touched int64
	// owner is the user who asked for the slot, whose staging quota the
	// unfinished upload counts against; 0 in records older than the field.
	owner uint64
}

// blobRecord is what the service knows about one stored blob.
type blobRecord struct {
	size int64
	// touched is the Unix ms of the last reference: an upload slot for
	// these bytes, a download URL for any of its ids, the upload that
	// stored it. The expiry counts from it.
	touched int64
}

func mediaKey(id ID) []byte { return append([]byte{prefixMedia}, id[:]...) }

func blobKey(h Hash) []byte { return append([]byte{prefixBlob}, h[:]...) }

func indexKey(h Hash, id ID) []byte {
	k := append([]byte{prefixIndex}, h[:]...)
	return append(k, id[:]...)
}

func (r record) encode() []byte {
	b := []byte{recordFormat, byte(r.state)}
	b = binary.AppendUvarint(b, uint64(r.typ))
	b = binary.AppendUvarint(b, uint64(r.size))
	b = append(b, r.hash[:]...)
	b = binary.AppendUvarint(b, uint64(r.created))
	b = binary.AppendUvarint(b, uint64(r.touched))
	return binary.AppendUvarint(b, r.owner)
}

var errCorrupt = errors.New("media: corrupt metadata record")

// reader decodes a record's fields in order; the first failure sticks.
type reader struct {
	b   []byte
	err error
}

func (d *reader) byte() byte {
	if d.err != nil || len(d.b) < 1 {
		d.err = errCorrupt
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *reader) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errCorrupt
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *reader) hash() (h Hash) {
	if d.err != nil || len(d.b) < HashLen {
		d.err = errCorrupt
		return h
	}
	copy(h[:], d.b)
	d.b = d.b[HashLen:]
	return h
}

func decodeRecord(b []byte) (record, error) {
	d := reader{b: b}
	var r record
	if d.byte() != recordFormat {
		return r, errCorrupt
	}
	r.state = mediaState(d.byte())
	r.typ = pb.ContentType(d.uvarint())
	r.size = int64(d.uvarint())
	r.hash = d.hash()
	r.created = int64(d.uvarint())
	r.touched = int64(d.uvarint())
	if d.err == nil && len(d.b) > 0 {
		r.owner = d.uvarint()
	}
	return r, d.err
}

func (r blobRecord) encode() []byte {
	b := binary.AppendUvarint([]byte{recordFormat}, uint64(r.size))
	return binary.AppendUvarint(b, uint64(r.touched))
}

func decodeBlob(b []byte) (blobRecord, error) {
	d := reader{b: b}
	var r blobRecord
	if d.byte() != recordFormat {
		return r, errCorrupt
	}
	r.size = int64(d.uvarint())
	r.touched = int64(d.uvarint())
	return r, d.err
}

// meta is the metadata database. Reads may run concurrently with each
// other and with writes; read-modify-write sequences are serialised by the
// Service's mu.
type meta struct{ db *pebble.DB }

func openMeta(dir string, log *slog.Logger, fatal func(string)) (*meta, error) {
	db, err := pebble.Open(dir, &pebble.Options{Logger: pebblelog.Logger{L: log, Fatal: fatal}})
	if err != nil {
		return nil, fmt.Errorf("media: open metadata at %s: %w", dir, err)
	}
	return &meta{db: db}, nil
}

func (m *meta) close() error { return m.db.Close() }

// get reads key; ok is false when it is absent.
func (m *meta) get(key []byte) (v []byte, ok bool, err error) {
	val, closer, err := m.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("media: metadata: %w", err)
	}
	v = append([]byte(nil), val...)
	return v, true, closer.Close()
}

// media returns the record of id.
func (m *meta) media(id ID) (record, bool, error) {
	v, ok, err := m.get(mediaKey(id))
	if !ok || err != nil {
		return record{}, false, err
	}
	r, err := decodeRecord(v)
	return r, err == nil, err
}

// blob returns the record of the blob h.
func (m *meta) blob(h Hash) (blobRecord, bool, error) {
	v, ok, err := m.get(blobKey(h))
	if !ok || err != nil {
		return blobRecord{}, false, err
	}
	r, err := decodeBlob(v)
	return r, err == nil, err
}

// scan calls fn for every key and value with the one-byte prefix p, until
// fn returns false. v is valid only during the call.
func (m *meta) scan(p byte, lower []byte, fn func(k, v []byte) bool) error {
	if lower == nil {
		lower = []byte{p}
	}
	it, err := m.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: []byte{p + 1}})
	if err != nil {
		return fmt.Errorf("media: metadata: %w", err)
	}
	for ok := it.First(); ok; ok = it.Next() {
		if !fn(it.Key(), it.Value()) {
			break
		}
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("media: metadata: %w", err)
	}
	return nil
}

// idsOf returns the ready media ids of blob h.
func (m *meta) idsOf(h Hash) ([]ID, error) {
	lo := append([]byte{prefixIndex}, h[:]...)
	var ids []ID
	err := m.scan(prefixIndex, lo, func(k, _ []byte) bool {
		if len(k) != 1+HashLen+IDLen || string(k[1:1+HashLen]) != string(h[:]) {
			return false
		}
		var id ID
		copy(id[:], k[1+HashLen:])
		ids = append(ids, id)
		return true
	})
	return ids, err
}

// commit applies b with fsync.
func (m *meta) commit(b *pebble.Batch) error {
	defer b.Close()
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("media: metadata commit: %w", err)
	}
	return nil
}
