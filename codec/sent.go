package codec

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/parley-im/parley/protocol"
)

// Fields of Sent's compact form (spec.md [S-7-16]).
const (
	fieldSentCMIDGap  = 3 // sint64: cmid − (previous cmid + 1)
	fieldSentMSDelta  = 4 // sint64: (id >> 22) − (previous id >> 22)
	fieldSentLowDelta = 5 // sint64: (id & lowMask) − (previous id & lowMask)

	sentLowMask = 1<<protocol.MessageIDTimeShift - 1
)

// ErrCompactSent reports a compact SENT that cannot be decoded: one that
// arrived before any SENT on the connection, or whose deltas lead outside
// the uint64 range or to a zero cmid or id.
var ErrCompactSent = errors.New("codec: compact Sent without a base")

// SentState is one connection's SENT compaction state (spec.md [S-7-16]):
// the cmid and id of the last SENT on it, in the order the frames travel.
// The server's encoder and the client's decoder each keep one per
// connection and advance it with every SENT, compact or full. The zero
// value is a connection with no SENT yet. A SentState is not safe for
// concurrent use; its owner is whoever writes (server) or reads (client)
// the connection's frames in order.
type SentState struct {
	CMID uint64
	ID   uint64
}

// AppendSent appends a SENT for cmid and id to dst in the shorter of the
// full and the compact form (the full form while st has no previous SENT,
// or when the compact one is no shorter) and advances st. cmid and id must
// be non-zero, as every SENT's are.
func (st *SentState) AppendSent(dst []byte, cmid, id uint64) []byte {
	full := varintFieldSize(fieldSentCMID, cmid) + varintFieldSize(fieldSentID, id)
	if st.ID == 0 {
		st.CMID, st.ID = cmid, id
		return appendSentFull(dst, cmid, id, full)
	}
	gap := protowire.EncodeZigZag(int64(cmid - st.CMID - 1))
	ms := protowire.EncodeZigZag(int64(id>>protocol.MessageIDTimeShift - st.ID>>protocol.MessageIDTimeShift))
	low := protowire.EncodeZigZag(int64(id&sentLowMask) - int64(st.ID&sentLowMask))
	compact := varintFieldSize(fieldSentCMIDGap, gap) + varintFieldSize(fieldSentMSDelta, ms) +
		varintFieldSize(fieldSentLowDelta, low)
	st.CMID, st.ID = cmid, id
	if compact >= full {
		return appendSentFull(dst, cmid, id, full)
	}
	dst = AppendHeader(dst, protocol.KindSent, false, compact)
	dst = appendVarintField(dst, fieldSentCMIDGap, gap)
	dst = appendVarintField(dst, fieldSentMSDelta, ms)
	return appendVarintField(dst, fieldSentLowDelta, low)
}

func appendSentFull(dst []byte, cmid, id uint64, n int) []byte {
	dst = AppendHeader(dst, protocol.KindSent, false, n)
	dst = appendVarintField(dst, fieldSentCMID, cmid)
	return appendVarintField(dst, fieldSentID, id)
}

// ParseSent decodes a SENT body of either form, resolving a compact one
// against st, and advances st. A full body (non-zero id) needs no state;
// a compact one (cmid and id absent) before any SENT on the connection, or
// one that decodes to a zero cmid or id, is ErrCompactSent.
func (st *SentState) ParseSent(b []byte) (cmid, id uint64, err error) {
	var gap, ms, low uint64
	err = walk(b, func(f field) {
		switch f.num {
		case fieldSentCMID:
			f.varint(&cmid)
		case fieldSentID:
			f.varint(&id)
		case fieldSentCMIDGap:
			f.varint(&gap)
		case fieldSentMSDelta:
			f.varint(&ms)
		case fieldSentLowDelta:
			f.varint(&low)
		}
	})
	if err != nil {
		return 0, 0, err
	}
	if id == 0 { // the compact form
		if st.ID == 0 {
			return 0, 0, ErrCompactSent
		}
		cmid = st.CMID + 1 + uint64(protowire.DecodeZigZag(gap))
		t := st.ID>>protocol.MessageIDTimeShift + uint64(protowire.DecodeZigZag(ms))
		l := st.ID&sentLowMask + uint64(protowire.DecodeZigZag(low))
		if cmid == 0 || l > sentLowMask || t >= 1<<(64-protocol.MessageIDTimeShift) {
			return 0, 0, fmt.Errorf("%w: deltas out of range", ErrCompactSent)
		}
		id = t<<protocol.MessageIDTimeShift | l
		if id == 0 {
			return 0, 0, fmt.Errorf("%w: id 0", ErrCompactSent)
		}
	}
	st.CMID, st.ID = cmid, id
	return cmid, id, nil
}

// CompactSents rewrites, in place, every SENT frame among the whole frames
// in b into the form st.AppendSent chooses, advancing st in frame order,
// and returns the length of the rewritten frames and how many frames b
// holds (a BATCH counts once). Bytes after the last whole frame are
// dropped. The server runs it over what it is about to write to a
// connection that asked for compact SENTs: the frames it rewrites come
// from AppendSent (shards encode full SENTs), so none grows. seen, when
// not nil, is called with each frame as it stood before the rewrite, so
// that a caller that inspects what it writes needs no second walk.
func (st *SentState) CompactSents(b []byte, seen func(Frame)) (n int, frames uint64) {
	for r := 0; r < len(b); {
		f, size, _, err := Parse(b[r:], protocol.MaxFrameBody)
		if err != nil || size == 0 {
			break
		}
		frames++
		if seen != nil {
			seen(f)
		}
		if f.Kind == protocol.KindSent && !f.Compressed {
			var scratch [32]byte // a header and two varint fields fit
			var fresh SentState  // a full body decodes without state
			if cmid, id, err := fresh.ParseSent(f.Body); err == nil && cmid != 0 {
				out := st.AppendSent(scratch[:0], cmid, id)
				if len(out) <= size {
					n += copy(b[n:], out)
					r += size
					continue
				}
			}
		}
		n += copy(b[n:], b[r:r+size])
		r += size
	}
	return n, frames
}
