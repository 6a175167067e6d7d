package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Records are stored as a version byte followed by uvarints and
// length-prefixed strings, in the order of the struct fields. A record is
// decoded strictly: a short or unknown record is corruption, except that
// fields added later are appended at the end and read with optUint, so a
// record written before them decodes with zero there.

const recordVersion = 1

var errCorrupt = errors.New("storage: corrupt record")

type recordWriter struct{ b []byte }

func (w *recordWriter) uint(v uint64)   { w.b = binary.AppendUvarint(w.b, v) }
func (w *recordWriter) bytes(v []byte)  { w.uint(uint64(len(v))); w.b = append(w.b, v...) }
func (w *recordWriter) string(v string) { w.uint(uint64(len(v))); w.b = append(w.b, v...) }
func (w *recordWriter) bool(v bool)     { w.b = append(w.b, boolByte(v)) }
func newRecordWriter(dst []byte) *recordWriter {
	return &recordWriter{b: append(dst, recordVersion)}
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}

type recordReader struct {
	b   []byte
	err error
}

func newRecordReader(b []byte) *recordReader {
	if len(b) == 0 || b[0] != recordVersion {
		return &recordReader{err: errCorrupt}
	}
	return &recordReader{b: b[1:]}
}

func (r *recordReader) uint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errCorrupt
		return 0
	}
	r.b = r.b[n:]
	return v
}

// optUint reads a field added to a record after its first release: zero
// when the record ends before it.
func (r *recordReader) optUint() uint64 {
	if r.err == nil && len(r.b) == 0 {
		return 0
	}
	return r.uint()
}

func (r *recordReader) bytes() []byte {
	n := r.uint()
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.err = errCorrupt
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *recordReader) string() string { return string(r.bytes()) }

func (r *recordReader) bool() bool {
	if r.err != nil {
		return false
	}
	if len(r.b) == 0 {
		r.err = errCorrupt
		return false
	}
	v := r.b[0] != 0
	r.b = r.b[1:]
	return v
}

func (r *recordReader) done(what string) error {
	if r.err != nil {
		return fmt.Errorf("%w: %s", r.err, what)
	}
	return nil
}

// userRecord is the persistent part of a user's state.
type userRecord struct {
	Phone      string
	CreatedMS  uint64
	Head       uint64 // last seq issued in the inbox
	Deleted    uint64 // entries with seq <= Deleted are gone
	Receipted  uint64 // delivered receipts were produced for entries <= Receipted
	NextDevice uint32 // next device id to issue
	LastSeenMS uint64 // when the last session ended
	Visibility uint8  // pb.Visibility of presence
	// IndexDay is the day (days since the Unix epoch, UTC) of the user's
	// open inbox expiry index record (x IndexDay user, empty value): the
	// day of the latest entries. 0: no open record (a record written
	// before the field, or the sweep deleted it).
	IndexDay uint32
}

func (u *userRecord) encode(dst []byte) []byte {
	w := newRecordWriter(dst)
	w.string(u.Phone)
	w.uint(u.CreatedMS)
	w.uint(u.Head)
	w.uint(u.Deleted)
	w.uint(u.Receipted)
	w.uint(uint64(u.NextDevice))
	w.uint(u.LastSeenMS)
	w.uint(uint64(u.Visibility))
	w.uint(uint64(u.IndexDay))
	return w.b
}

func (u *userRecord) decode(b []byte) error {
	r := newRecordReader(b)
	u.Phone = r.string()
	u.CreatedMS = r.uint()
	u.Head = r.uint()
	u.Deleted = r.uint()
	u.Receipted = r.uint()
	u.NextDevice = uint32(r.uint())
	u.LastSeenMS = r.uint()
	u.Visibility = uint8(r.uint())
	u.IndexDay = uint32(r.optUint())
	return r.done("user")
}

// deviceRecord is a registered device.
type deviceRecord struct {
	CredHash  []byte // SHA-256 of the credential
	Name      string
	CreatedMS uint64
	Revoked   bool
	Primary   bool   // registered by phone verification, not linked
	MaxCMID   uint64 // highest Send.cmid a session of the device reported ([S-8-19]); added later
}

func (d *deviceRecord) encode(dst []byte) []byte {
	w := newRecordWriter(dst)
	w.bytes(d.CredHash)
	w.string(d.Name)
	w.uint(d.CreatedMS)
	w.bool(d.Revoked)
	w.bool(d.Primary)
	w.uint(d.MaxCMID)
	return w.b
}

func (d *deviceRecord) decode(b []byte) error {
	r := newRecordReader(b)
	d.CredHash = append([]byte(nil), r.bytes()...)
	d.Name = r.string()
	d.CreatedMS = r.uint()
	d.Revoked = r.bool()
	d.Primary = r.bool()
	d.MaxCMID = r.optUint()
	return r.done("device")
}

// codeRecord is the verification state of one phone number.
type codeRecord struct {
	CodeHash  []byte   // SHA-256 of the live code; empty when none
	ExpiresMS uint64   // when the live code expires
	Attempts  uint32   // wrong attempts against the live code
	SentMS    []uint64 // when codes were sent in the last hour, oldest first
}

func (c *codeRecord) encode(dst []byte) []byte {
	w := newRecordWriter(dst)
	w.bytes(c.CodeHash)
	w.uint(c.ExpiresMS)
	w.uint(uint64(c.Attempts))
	w.uint(uint64(len(c.SentMS)))
	for _, t := range c.SentMS {
		w.uint(t)
	}
	return w.b
}

func (c *codeRecord) decode(b []byte) error {
	r := newRecordReader(b)
	c.CodeHash = append([]byte(nil), r.bytes()...)
	c.ExpiresMS = r.uint()
	c.Attempts = uint32(r.uint())
	n := r.uint()
	if n > 64 {
		return fmt.Errorf("%w: code record with %d sends", errCorrupt, n)
	}
	c.SentMS = make([]uint64, 0, n)
	for range n {
		c.SentMS = append(c.SentMS, r.uint())
	}
	return r.done("code")
}
