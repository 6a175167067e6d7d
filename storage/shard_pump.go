package storage

import (
	"fmt"
	"github.com/cockroachdb/pebble/v2"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
)

// maxBatchBody is the largest Batch body the pump builds, before
// compression.
const maxBatchBody = 64 << 10

// pump posts to each live device of u the entries it has not been sent,
// within its window, in seq order, and Synced once it has caught up. This
// is the only place entries reach devices: backlog and live traffic are the
// same stream (DESIGN.md, "one delivery path per device").
func (s *Shard) pump(u *user) {
	if u.live == 0 {
		return
	}
	for _, d := range u.devices {
		if d.sess != nil {
			s.pumpDevice(u, d.sess)
		}
	}
}

func (s *Shard) pumpDevice(u *user, sess *session) {
	if sess.sent < u.rec.Deleted {
		sess.sent = u.rec.Deleted // expired entries are gone
	}
	room := s.cfg.Window - len(sess.inflight)
	if sess.sent < u.rec.Head && room > 0 && sess.bytes < s.cfg.WindowBytes {
		if err := s.streamEntries(u, sess, room); err != nil {
			s.abort(fmt.Errorf("storage: pump %d: %w", u.id, err))
			return
		}
	}
	if !sess.synced && sess.sent >= u.rec.Head {
		sess.synced = true
		start := len(s.out)
		s.out = codec.AppendSynced(s.out, sess.sent)
		s.post(sess.conn, start)
	}
}

// streamEntries posts up to room entries after sess.sent. One entry goes
// as its own frame; several go in Batch frames, compressed where it pays.
func (s *Shard) streamEntries(u *user, sess *session, room int) error {
	if s.streamRecent(u, sess, room) {
		return nil
	}
	it, err := s.batch.NewIter(&pebble.IterOptions{
		LowerBound: inboxKey(nil, u.id, sess.sent+1),
		UpperBound: inboxKey(nil, u.id, u.rec.Head+1),
	})
	if err != nil {
		return err
	}
	s.frames = s.frames[:0]
	count := 0
	for ok := it.First(); ok && room > 0 && sess.bytes < s.cfg.WindowBytes; ok = it.Next() {
		k, v := it.Key(), it.Value()
		seq := beUint64(k[len(k)-8:])
		sess.sent = seq
		if len(v) > 0 && v[0] == kindGroupRef {
			body, err := s.groupBody(beUint64(v[1:]), beUint64(v[9:]))
			if err != nil || len(body) == 0 {
				continue // expired before this device fetched it
			}
			v = body
		}
		if len(v) == 0 {
			continue
		}
		count = s.frame(sess, seq, v, count)
		room--
	}
	if err := it.Close(); err != nil {
		return err
	}
	s.flushFrames(sess, count)
	return nil
}

// streamRecent is streamEntries for the common case of a device that is up
// to date: the entries it lacks were all appended in this cycle, and their
// values are in memory. It reports false, doing nothing, otherwise.
func (s *Shard) streamRecent(u *user, sess *session, room int) bool {
	if !u.recent.covers(sess.sent, u.rec.Head) {
		return false
	}
	metas := u.recent.slice(sess.sent, u.rec.Head)
	for _, m := range metas {
		if m.value == nil {
			return false
		}
	}
	count := 0
	for _, m := range metas {
		if room == 0 || sess.bytes >= s.cfg.WindowBytes {
			break
		}
		sess.sent = m.seq
		count = s.frame(sess, m.seq, m.value, count)
		room--
	}
	s.flushFrames(sess, count)
	return true
}

// frame adds the entry at seq (value: kind byte + stored body) to the
// frames being built for sess, flushing a full batch, and returns the
// count of frames pending.
func (s *Shard) frame(sess *session, seq uint64, v []byte, count int) int {
	if len(v) > 0 && v[0] == kindEnvelopes {
		if v = s.envelopeFor(v, sess.device); v == nil {
			return count
		}
	}
	before := len(s.frames)
	s.frames = codec.AppendEntry(s.frames, protocol.Kind(v[0]), seq, v[1:])
	size := len(s.frames) - before
	sess.inflight = append(sess.inflight, inflight{seq: seq, size: size})
	sess.bytes += size
	count++
	if len(s.frames) >= maxBatchBody {
		s.flushFrames(sess, count)
		count = 0
	}
	return count
}

// flushFrames posts the count entry frames in s.frames.
func (s *Shard) flushFrames(sess *session, count int) {
	if count == 0 {
		return
	}
	s.flow.delivered.Add(uint64(count))
	start := len(s.out)
	if count == 1 {
		s.out = append(s.out, s.frames...)
	} else {
		s.out, s.zbuf = s.comp.AppendFrame(s.out, s.zbuf, protocol.KindBatch, s.frames)
	}
	s.frames = s.frames[:0]
	s.post(sess.conn, start)
}
