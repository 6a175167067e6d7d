package storage

import (
	"encoding/binary"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
)

// maxRecent bounds the entries remembered per user.
const maxRecent = 512

// entryMeta is what the shard remembers of a recent inbox entry of a user
// with a live session, so that acks (receipts, body references) and the
// pump seldom read the inbox back from Pebble.
type entryMeta struct {
	seq   uint64
	size  int  // bytes the entry takes in the inbox (a group reference: 17)
	kind  byte // the wire kind, or kindGroupRef
	from  uint64
	id    uint64
	group uint64
	gseq  uint64
	// value is the entry as the pump sends it (for a group reference, the
	// body it refers to), kept only during the cycle that appended it.
	value []byte
}

// recentWindow is a user's remembered entries: every seq in (from, last]
// when the slice is non-empty and from is set.
type recentWindow struct {
	from    uint64 // the seq before the first remembered entry
	entries []entryMeta
	valid   bool // false: nothing is remembered (no live session yet)
}

// covers reports whether every entry in (a, b] is remembered.
func (r *recentWindow) covers(a, b uint64) bool {
	return r.valid && a >= r.from && (b <= r.from || (len(r.entries) > 0 && b <= r.entries[len(r.entries)-1].seq))
}

// slice returns the remembered entries in (a, b]; covers(a, b) must hold.
func (r *recentWindow) slice(a, b uint64) []entryMeta {
	lo, hi := int(a-r.from), int(b-r.from)
	return r.entries[lo:hi]
}

// start begins remembering after seq head (a session has started).
func (r *recentWindow) start(head uint64) {
	if !r.valid {
		r.valid, r.from, r.entries = true, head, nil
	}
}

// stop forgets everything (the last session ended).
func (r *recentWindow) stop() { *r = recentWindow{} }

// add remembers the entry at seq, which follows the last one.
func (r *recentWindow) add(m entryMeta) {
	if !r.valid {
		return
	}
	if m.seq != r.from+uint64(len(r.entries))+1 {
		r.from, r.entries = m.seq-1, r.entries[:0]
	}
	if len(r.entries) == maxRecent {
		drop := maxRecent / 4
		r.entries = append(r.entries[:0], r.entries[drop:]...)
		r.from += uint64(drop)
	}
	r.entries = append(r.entries, m)
}

// forget drops entries up to seq (deleted from the inbox).
func (r *recentWindow) forget(seq uint64) {
	if !r.valid || seq <= r.from {
		return
	}
	n := min(int(seq-r.from), len(r.entries))
	r.entries = append(r.entries[:0], r.entries[n:]...)
	r.from = seq
}

// replace records that the entry at seq is now entry (deleted for
// everyone, [S-18-2]). The value kept for the pump is dropped, so that the
// pump reads the new entry from the inbox.
func (r *recentWindow) replace(seq uint64, entry []byte) {
	if !r.valid || seq <= r.from || seq > r.from+uint64(len(r.entries)) {
		return
	}
	m := metaOf(seq, entry, nil)
	m.value = nil
	r.entries[seq-r.from-1] = m
}

// forgetBody drops the values kept for the pump of the references to
// message gseq of group, whose body changed ([S-18-3]).
func (r *recentWindow) forgetBody(group, gseq uint64) {
	for i := range r.entries {
		if m := &r.entries[i]; m.kind == kindGroupRef && m.group == group && m.gseq == gseq {
			m.value = nil
		}
	}
}

// endCycle drops the values kept for the pump.
func (r *recentWindow) endCycle() {
	for i := range r.entries {
		r.entries[i].value = nil
	}
}

// metaOf describes the entry just stored at seq. ref is the group message
// a group reference points to (its body), nil for other entries.
func metaOf(seq uint64, entry, ref []byte) entryMeta {
	m := entryMeta{seq: seq, size: len(entry), value: entry}
	if len(entry) == 0 {
		return m
	}
	m.kind = entry[0]
	msg := entry
	if m.kind == kindEnvelopes {
		if f, ok := envelopeFields(entry); ok {
			if p, err := codec.ParseMessage(f); err == nil {
				m.from, m.id = p.From, p.ID
			}
		}
		return m
	}
	if m.kind == kindGroupRef && len(entry) == 17 {
		m.group, m.gseq = binary.BigEndian.Uint64(entry[1:]), binary.BigEndian.Uint64(entry[9:])
		msg, m.value = ref, ref
	}
	if len(msg) > 0 && protocol.Kind(msg[0]) == protocol.KindMessage {
		if p, err := codec.ParseMessage(msg[1:]); err == nil {
			m.from, m.id, m.group, m.gseq = p.From, p.ID, p.Group, p.GSeq
		}
	}
	return m
}
