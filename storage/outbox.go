package storage

import (
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
)

// Inter-shard delivery.
//
// Every ordered pair of shards (source, destination) is a reliable FIFO
// channel built on the source's durable outbox, so that forwards may be
// lost, repeated or reordered on the way (a node link, a restart, a full
// queue) and still every entry is applied exactly once, in order:
//
//   - The source gives each entry for destination D the pair's next
//     sequence, from a durable counter that is never reused (outSeqKey),
//     and writes the entry to its outbox in the same batch as whatever
//     created it. After the commit it forwards the entry (OpForward),
//     keeping at most outWindow entries (outWindowBytes bytes) of the pair
//     unconfirmed in flight; the rest wait in the outbox.
//   - The destination applies an entry only if its sequence is the next it
//     expects from that source (its watermark + 1), entirely or not at all,
//     in the batch that advances its durable watermark. A repeat (at or
//     below the watermark) and a gap (beyond the next) are not applied.
//   - After each commit the destination answers every source it heard from
//     with its watermark (OpForwardDone, cumulative), flagged FlagGap if it
//     saw a gap.
//   - The source deletes its entries up to that watermark. It forwards
//     again from watermark + 1 on a gap answer, and when the pair made no
//     progress for its retransmission interval (which doubles while nothing
//     moves, up to maxResendAfter).
//
// A group message answers its sender Sent only when every destination has
// confirmed it, so "sent" still means "stored in every member's inbox".

const (
	// outWindow and outWindowBytes bound what one pair has in flight.
	outWindow      = 1024
	outWindowBytes = 4 << 20
	// resendAfter is how long a pair may make no progress before its
	// unconfirmed entries are forwarded again; maxResendAfter caps the
	// doubling.
	resendAfter    = time.Second
	maxResendAfter = 30 * time.Second
)

// FlagGap marks an OpForwardDone whose sender received an entry beyond the
// next it expected: the source forwards again from the watermark.
const FlagGap uint8 = 1 << 7

// outPair is the source side of one pair: this shard's outbox towards one
// destination. Actor-owned.
type outPair struct {
	dest       uint16
	next       uint64    // last sequence assigned; durable under outSeqKey
	acked      uint64    // the destination confirmed everything up to here
	sent       uint64    // forwarded up to here since the last go-back
	inflight   []int     // sizes of the entries in (acked, sent], in order
	bytes      int       // sum of inflight
	resendMark uint64    // the last go-back forwarded up to here
	progress   time.Time // when acked last moved, or the last go-back
	backoff    time.Duration
	dirty      bool // next changed in this cycle
}

// pairSeq names one outbox entry.
type pairSeq struct {
	dest uint16
	seq  uint64
}

// roomFor reports whether an entry of n bytes may be forwarded now.
func (p *outPair) roomFor(n int) bool {
	return len(p.inflight) < outWindow && (p.bytes+n <= outWindowBytes || len(p.inflight) == 0)
}

// markSent records that the entry after p.sent, of n bytes, was forwarded.
func (p *outPair) markSent(n int) {
	p.sent++
	p.inflight = append(p.inflight, n)
	p.bytes += n
}

// goBack forgets what is in flight so that fill forwards again from the
// first unconfirmed entry.
func (p *outPair) goBack(now time.Time) {
	p.sent = p.acked
	p.inflight = p.inflight[:0]
	p.bytes = 0
	p.progress = now
}

// pair returns the outbox pair towards dest, creating it.
func (s *Shard) pair(dest uint16) *outPair {
	p := s.pairs[dest]
	if p == nil {
		p = &outPair{dest: dest, progress: s.cfg.Now(), backoff: resendAfter}
		s.pairs[dest] = p
		s.pairOrder = append(s.pairOrder, dest)
		slices.Sort(s.pairOrder)
	}
	return p
}

// enqueue writes encoded delivery v, whose entry is entry, to the outbox
// towards dest and forwards it after the commit if the pair's window has
// room. It returns the entry's sequence.
func (s *Shard) enqueue(dest uint16, v, entry []byte) uint64 {
	p := s.pair(dest)
	p.next++
	p.dirty = true
	s.promiseEntry(entry) // the destination will confirm this sequence
	s.unconfirmed.Add(1)
	s.batch.Set(outboxKey(s.scratch[:0], dest, p.next), v, nil)
	if p.sent == p.next-1 && p.roomFor(len(v)) {
		p.markSent(len(v))
		s.forward(dest, p.next, v)
	}
	return p.next
}

// forward queues, for after the commit, the forward of entry seq to dest,
// whose outbox value v it copies (forwardBuf).
func (s *Shard) forward(dest uint16, seq uint64, v []byte) {
	s.effectWith(effForward, ConnRef{}, effectMore{op: Op{
		Kind: OpForward, Source: s.cfg.ID, Dest: dest, OutSeq: seq, Entry: append(s.forwardBuf(len(v)), v...),
	}})
}

// fill forwards the entries of p that wait in the outbox, as far as the
// window allows, reading them through the batch.
func (s *Shard) fill(p *outPair) {
	if p.sent >= p.next || !p.roomFor(0) {
		return
	}
	it, err := s.batch.NewIter(&pebble.IterOptions{
		LowerBound: outboxKey(nil, p.dest, p.sent+1),
		UpperBound: outboxKey(nil, p.dest, p.next+1),
	})
	if err != nil {
		s.abort(fmt.Errorf("storage: outbox to %d: %w", p.dest, err))
		return
	}
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		seq := binary.BigEndian.Uint64(k[len(k)-8:])
		if seq != p.sent+1 {
			s.abort(fmt.Errorf("storage: outbox to %d: entry %d missing (found %d)", p.dest, p.sent+1, seq))
			break
		}
		if !p.roomFor(len(it.Value())) {
			break
		}
		p.markSent(len(it.Value()))
		s.forward(p.dest, seq, it.Value())
	}
	if err := it.Close(); err != nil {
		s.abort(fmt.Errorf("storage: outbox to %d: %w", p.dest, err))
	}
}

// applyForwardDone takes a destination's answer: its watermark for this
// shard (op.Source answered, op.OutSeq is the watermark, FlagGap if it saw
// a gap). Confirmed entries are deleted and their group messages advanced;
// on a gap the pair forwards again from the watermark.
func (s *Shard) applyForwardDone(op *Op) {
	p := s.pairs[op.Source]
	if p == nil || op.OutSeq > p.next {
		s.log.Error("forward answer beyond the outbox", "from", op.Source, "upto", op.OutSeq)
		return
	}
	now := s.cfg.Now()
	if op.OutSeq > p.acked {
		for seq := p.acked + 1; seq <= op.OutSeq; seq++ {
			s.batch.SingleDelete(outboxKey(s.scratch[:0], p.dest, seq), nil)
			s.confirmGroupSend(pairSeq{p.dest, seq})
		}
		if op.OutSeq >= p.sent {
			p.sent = op.OutSeq
			p.inflight = p.inflight[:0]
			p.bytes = 0
		} else {
			n := int(op.OutSeq - p.acked)
			for _, size := range p.inflight[:n] {
				p.bytes -= size
			}
			p.inflight = append(p.inflight[:0], p.inflight[n:]...)
		}
		s.unconfirmed.Add(-(op.OutSeq - p.acked))
		p.acked = op.OutSeq
		p.progress = now
		p.backoff = resendAfter
	}
	if op.Flags&FlagGap != 0 && op.OutSeq == p.acked && op.OutSeq >= p.resendMark && op.OutSeq < p.sent {
		p.goBack(now)
		s.fill(p)
		p.resendMark = p.sent
		s.resends.Add(1)
		return
	}
	s.fill(p)
}

// resendStalled forwards again the unconfirmed entries of every pair that
// made no progress for its retransmission interval.
func (s *Shard) resendStalled(now time.Time) {
	for _, dest := range s.pairOrder {
		p := s.pairs[dest]
		if p.acked == p.next || now.Sub(p.progress) < p.backoff {
			continue
		}
		s.resend(p, now, min(2*p.backoff, maxResendAfter))
	}
}

// resend forwards p's unconfirmed entries again from the first, as far as
// its window allows, and waits backoff for progress before the next time.
func (s *Shard) resend(p *outPair, now time.Time, backoff time.Duration) {
	p.goBack(now)
	s.fill(p)
	p.resendMark = p.sent
	p.backoff = backoff
	s.resends.Add(1)
}

// kickOutbox forwards again, now, the unconfirmed entries of every pair,
// with its backoff back at resendAfter. A node left or restarted
// (OpConnGone): the shards it served are served again, by it or by
// another node, and whatever it had not confirmed was lost with it; the
// pairs towards them would otherwise wait for a backoff that may have
// grown to maxResendAfter while it was away. Pairs towards shards that
// lost nothing get entries their destination already has, which it
// confirms again (the outbox survives repetition).
func (s *Shard) kickOutbox(now time.Time) {
	for _, dest := range s.pairOrder {
		p := s.pairs[dest]
		if p.acked == p.next {
			continue
		}
		s.resend(p, now, resendAfter)
	}
}

// stalledPairs reports whether some pair has unconfirmed entries.
func (s *Shard) stalledPairs() bool {
	for _, p := range s.pairs {
		if p.acked < p.next {
			return true
		}
	}
	return false
}

// writeOutSeqs writes the counters of the pairs that assigned sequences in
// this cycle.
func (s *Shard) writeOutSeqs() {
	for _, dest := range s.pairOrder {
		if p := s.pairs[dest]; p.dirty {
			s.batch.Set(outSeqKey(s.scratch[:0], dest), be64(p.next), nil)
			p.dirty = false
		}
	}
}

// inPair is the destination side of one pair. Actor-owned.
type inPair struct {
	source    uint16
	watermark uint64 // applied everything up to here; durable under watermarkKey
	answer    bool   // the source is owed an answer after this cycle
	gap       bool   // an entry beyond watermark + 1 arrived this cycle
}

// inbound returns the destination side of the pair from source.
func (s *Shard) inbound(source uint16) *inPair {
	in := s.inPairs[source]
	if in == nil {
		in = &inPair{source: source}
		s.inPairs[source] = in
		s.inOrder = append(s.inOrder, source)
		slices.Sort(s.inOrder)
	}
	return in
}

// applyForward applies the entry another shard's outbox carried here if it
// is the next one expected from that shard, and owes the source an answer.
func (s *Shard) applyForward(op *Op) {
	in := s.inbound(op.Source)
	in.answer = true
	switch {
	case op.OutSeq <= in.watermark:
		s.forwardRepeats.Add(1)
		return
	case op.OutSeq > in.watermark+1:
		in.gap = true
		s.forwardGaps.Add(1)
		return
	}
	d := delivery{users: s.fwdIn} // the users of one forward at a time
	err := d.decode(op.Entry)
	s.fwdIn = d.users[:0]
	if err != nil {
		// Not applied and not confirmed: the source keeps it and the pair
		// stops here, loudly, rather than skip an entry it promised.
		s.log.Error("forward cannot be decoded; the pair waits", "source", op.Source, "outseq", op.OutSeq, "err", err)
		return
	}
	if !s.applyDelivery(&d) {
		return // the cycle is aborted: nothing of it commits
	}
	in.watermark = op.OutSeq
	// The source deletes what the watermark confirms: the answer waits
	// for the watermark's sync. Only a group's sender waits for that
	// answer (its Sent waits for every destination's), so only a group
	// delivery asks for the sync at once; what the entry appended made
	// its own promise (a message's may not wait: a device waits for it).
	if d.group != 0 {
		s.promise()
	} else {
		s.promiseLater()
	}
	s.batch.Set(watermarkKey(s.scratch[:0], op.Source), be64(in.watermark), nil)
}

// answerForwards owes, after this cycle's commit, every source that
// forwarded something its watermark.
func (s *Shard) answerForwards() {
	for _, source := range s.inOrder {
		in := s.inPairs[source]
		if !in.answer {
			continue
		}
		var flags uint8
		if in.gap {
			flags = FlagGap
		}
		s.effectWith(effForward, ConnRef{}, effectMore{op: Op{
			Kind: OpForwardDone, Source: s.cfg.ID, Dest: in.source, OutSeq: in.watermark, Flags: flags,
		}})
		in.answer, in.gap = false, false
	}
}

// recoverOutbox restores both sides of every pair from the database:
// counters, watermarks, and what each outbox still holds, with the group
// messages in it still waiting for destinations.
func (s *Shard) recoverOutbox() error {
	if err := s.scan(shardKey(nil, tagOutSeq), func(k, v []byte) error {
		if len(v) != 8 {
			return fmt.Errorf("%w: outbox counter", errCorrupt)
		}
		p := s.pair(binary.BigEndian.Uint16(k[len(k)-2:]))
		p.next = binary.BigEndian.Uint64(v)
		p.acked, p.sent = p.next, p.next
		return nil
	}); err != nil {
		return fmt.Errorf("storage: recover outbox counters: %w", err)
	}
	if err := s.scan(shardKey(nil, tagWatermark), func(k, v []byte) error {
		if len(v) != 8 {
			return fmt.Errorf("%w: watermark", errCorrupt)
		}
		s.inbound(binary.BigEndian.Uint16(k[len(k)-2:])).watermark = binary.BigEndian.Uint64(v)
		return nil
	}); err != nil {
		return fmt.Errorf("storage: recover watermarks: %w", err)
	}
	first := map[uint16]bool{}
	if err := s.scan(shardKey(nil, tagOutbox), func(k, v []byte) error {
		dest := binary.BigEndian.Uint16(k[3:])
		seq := binary.BigEndian.Uint64(k[5:])
		p := s.pairs[dest]
		if p == nil || seq > p.next {
			return fmt.Errorf("%w: outbox entry %d to %d beyond its counter", errCorrupt, seq, dest)
		}
		if !first[dest] {
			first[dest] = true
			p.acked, p.sent = seq-1, seq-1
		}
		var d delivery
		if err := d.decode(v); err != nil {
			return err
		}
		if d.group != 0 && len(d.entry) > 0 && protocol.Kind(d.entry[0]) == protocol.KindMessage {
			// A group message still on its way: a retried send waits for it.
			gk := gkey{d.group, d.gseq}
			g := s.groupSends[gk]
			if g == nil {
				m, err := codec.ParseMessage(d.entry[1:])
				if err != nil {
					return fmt.Errorf("storage: outbox entry %d to %d: %w", seq, dest, err)
				}
				g = &groupSend{id: m.ID}
				s.groupSends[gk] = g
			}
			g.remaining++
			s.outboxGroup[pairSeq{dest, seq}] = gk
		}
		return nil
	}); err != nil {
		return fmt.Errorf("storage: recover outbox: %w", err)
	}
	var n uint64
	for _, p := range s.pairs {
		n += p.next - p.acked
	}
	s.unconfirmed.Store(n)
	return nil
}

// replayOutbox forwards, in a cycle of its own, what every outbox holds
// unconfirmed. Destinations apply each entry once, so forwarding again
// what was applied before a restart is harmless.
func (s *Shard) replayOutbox() {
	s.batch = s.db.NewIndexedBatch()
	n := 0
	for _, dest := range s.pairOrder {
		p := s.pairs[dest]
		n += int(p.next - p.acked)
		s.fill(p)
	}
	if n > 0 {
		s.log.Info("replaying outbox", "entries", n)
	}
	s.replayPush()
	s.finishCycle()
}

// scan calls fn for every key with prefix lo, in order, reading through
// the current batch in a cycle, else the database.
func (s *Shard) scan(lo []byte, fn func(k, v []byte) error) error {
	it, err := s.reader().NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		return err
	}
	for ok := it.First(); ok; ok = it.Next() {
		if err := fn(it.Key(), it.Value()); err != nil {
			_ = it.Close()
			return err
		}
	}
	return it.Close()
}
