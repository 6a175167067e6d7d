package storage

import (
	"encoding/binary"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// Disappearing messages (spec [S-18-8] to [S-18-10]).
//
// A 1:1 conversation's timer is kept on both users' shards (slot 'T' user
// peer → seconds), since each side's shard stores the messages sent to its
// user and stamps them: SET_TIMER runs on the other user's shard, which
// writes its side and appends the TIMER entry, and the setter's side
// follows through the outbox as a TIMER delivery (applyControlDelivery).
// A group's timer is a field of its record; its change takes a gseq.
//
// A message stored with a timer carries ttl_s, and each stored copy is
// indexed under the second it expires: an inbox entry under
// slot 'X' second user seq, a group message's body, which the members'
// references resolve to, under ffff 'Z' second group gseq. The
// maintenance walk (maintain) empties expired entries in place, as a
// revoke replaces them (an empty entry is skipped by the pump, so a device
// sees a gap), and deletes expired bodies (a reference to a missing body is
// skipped). A copy for the sender's other devices on another shard goes
// through the outbox wrapped with its expiry (kindExpiring), so that the
// destination indexes it too.

// kindExpiring wraps an entry delivered to other users with its expiry:
// kindExpiring, expiry (4 bytes, Unix seconds), the entry. It is never
// stored in an inbox.
const kindExpiring = 0xf0

// maxTimersCached bounds a user's cache of 1:1 timers.
const maxTimersCached = 4096

func timerKey(dst []byte, u, peer uint64) []byte {
	dst = binary.BigEndian.AppendUint64(appendPrefix(dst, SlotOfUser(u), tagTimer), u)
	return binary.BigEndian.AppendUint64(dst, peer)
}

func expiringKey(dst []byte, expiry uint32, u, seq uint64) []byte {
	dst = binary.BigEndian.AppendUint32(appendPrefix(dst, SlotOfUser(u), tagExpiring), expiry)
	dst = binary.BigEndian.AppendUint64(dst, u)
	return binary.BigEndian.AppendUint64(dst, seq)
}

func expiringBodyKey(dst []byte, expiry uint32, group, gseq uint64) []byte {
	dst = binary.BigEndian.AppendUint32(shardKey(dst, tagBodyExpiring), expiry)
	dst = binary.BigEndian.AppendUint64(dst, group)
	return binary.BigEndian.AppendUint64(dst, gseq)
}

// expiryOf returns when message id with timer ttl expires, in Unix
// seconds (rounded up).
func expiryOf(id uint64, ttl uint32) uint32 {
	ms := protocol.MessageTime(id).UnixMilli() + 1000*int64(ttl)
	return uint32((ms + 999) / 1000)
}

// timerWith returns the timer of u's conversation with peer, 0 for none.
// A storage error aborts the cycle (and returns 0: nothing of the cycle
// commits).
func (s *Shard) timerWith(u *user, peer uint64) uint32 {
	if ttl, ok := u.timers[peer]; ok {
		return ttl
	}
	v, err := s.get(timerKey(nil, u.id, peer))
	if err != nil {
		return 0
	}
	ttl, _ := binary.Uvarint(v)
	if u.timers == nil || len(u.timers) >= maxTimersCached {
		u.timers = map[uint64]uint32{}
	}
	u.timers[peer] = uint32(ttl)
	return uint32(ttl)
}

// setTimerWith records the timer of u's conversation with peer.
func (s *Shard) setTimerWith(u *user, peer uint64, ttl uint32) {
	k := timerKey(nil, u.id, peer)
	if ttl == 0 {
		s.batch.Delete(k, nil)
	} else {
		s.batch.Set(k, binary.AppendUvarint(nil, uint64(ttl)), nil)
	}
	if u.timers == nil || len(u.timers) >= maxTimersCached {
		u.timers = map[uint64]uint32{}
	}
	u.timers[peer] = ttl
}

// indexExpiring indexes the entry at seq of u's inbox, message id, for
// deletion when it expires; nothing when ttl is 0.
func (s *Shard) indexExpiring(u *user, seq, id uint64, ttl uint32) {
	if ttl != 0 {
		s.indexExpiringAt(u, seq, expiryOf(id, ttl))
	}
}

// indexExpiringAt indexes the entry at seq of u's inbox for deletion at
// expiry, unless the retention sweep deletes it first.
func (s *Shard) indexExpiringAt(u *user, seq uint64, expiry uint32) {
	if s.beforeRetention(expiry) {
		s.batch.Set(expiringKey(nil, expiry, u.id, seq), nil, nil)
	}
}

// indexExpiringBody indexes the body of message gseq of group, stored on
// this shard, for deletion at expiry, unless the retention sweep deletes
// it first.
func (s *Shard) indexExpiringBody(group, gseq uint64, expiry uint32) {
	if s.beforeRetention(expiry) {
		s.batch.Set(expiringBodyKey(nil, expiry, group, gseq), nil, nil)
	}
}

// beforeRetention reports whether expiry (Unix seconds) comes before
// what is stored now expires by retention ([S-8-10]).
func (s *Shard) beforeRetention(expiry uint32) bool {
	return int64(expiry) < s.cfg.Now().Add(s.cfg.Retention).Unix()
}

// appendCopy appends the copy of message id for the other devices of its
// sender (FlagCompanions): as appendEntry does, wrapped with its expiry
// when it disappears, so that its shard indexes it.
func (s *Shard) appendCopy(sender uint64, entry []byte, id uint64, ttl uint32) {
	if ttl != 0 {
		wrapped := binary.BigEndian.AppendUint32([]byte{kindExpiring}, expiryOf(id, ttl))
		entry = append(wrapped, entry...)
	}
	s.appendEntry(sender, entry, FlagCompanions)
}

// applySetTimer sets a conversation's timer ([S-18-8]): a 1:1
// conversation's on the shard of op.User, the other user, a group's on
// the group's shard.
func (s *Shard) applySetTimer(op *Op) {
	if !s.roomFor(op) {
		return
	}
	if op.Group != 0 {
		s.answerOK(op, s.setGroupTimer(op))
	} else {
		s.answerOK(op, s.setTimer(op))
	}
}

// setTimer sets the timer of the 1:1 conversation between op.From and
// op.User: here for op.User, through a TIMER delivery for op.From
// ([S-18-9]).
func (s *Shard) setTimer(op *Op) error {
	u, err := s.loadUser(op.User)
	if err != nil {
		return err
	}
	if u == nil {
		s.replyError(op.Conn, protocol.CodeNotFound, op.RID, 0)
		return errAnswered
	}
	if s.timerWith(u, op.From) == op.TTL {
		return nil
	}
	t := &pb.Timer{Id: s.ids.next(s.cfg.Now()), From: op.From, Peer: op.From, TtlS: op.TTL}
	entry, err := appendProtoEntry([]byte{byte(protocol.KindTimer)}, t)
	if err != nil {
		return err
	}
	s.applyDelivery(&delivery{users: []uint64{op.User}, entry: entry})
	if op.From != op.User {
		t.Peer = op.User
		own, err := appendProtoEntry([]byte{byte(protocol.KindTimer)}, t)
		if err != nil {
			return err
		}
		s.appendEntry(op.From, own, FlagCompanions)
	}
	return nil
}

// setGroupTimer sets a group's timer, admins only, and sends the change
// to every member in the group's order ([S-18-9]).
func (s *Shard) setGroupTimer(op *Op) error {
	g, err := s.loadGroup(op.Group)
	if err != nil {
		return err
	}
	m := (*member)(nil)
	if g != nil {
		m = g.member(op.From)
	}
	switch {
	case m == nil:
		s.replyError(op.Conn, protocol.CodeNotMember, op.RID, 0)
		return errAnswered
	case m.role != pb.GroupRole_ROLE_ADMIN:
		s.replyError(op.Conn, protocol.CodeNotAdmin, op.RID, 0)
		return errAnswered
	case g.rec.Timer == op.TTL:
		return nil
	}
	g.rec.Timer = op.TTL
	g.rec.GSeq++
	s.batch.Set(groupKey(nil, g.id), g.rec.encode(nil), nil)
	t := &pb.Timer{Id: s.ids.next(s.cfg.Now()), From: op.From, Group: g.id, Gseq: g.rec.GSeq, TtlS: op.TTL}
	entry, err := appendProtoEntry([]byte{byte(protocol.KindTimer)}, t)
	if err != nil {
		return err
	}
	s.deliver(delivery{users: g.users(), group: g.id, gseq: g.rec.GSeq, entry: entry})
	return nil
}

// appendEach appends a group delivery's entry to each of its users here.
func (s *Shard) appendEach(d *delivery) bool {
	for _, id := range d.users {
		u, err := s.loadUser(id)
		if err != nil {
			return false
		}
		if u != nil {
			s.appendLocal(u, d.entry)
		}
	}
	return true
}

// applyControlDelivery applies the deliveries of this file to users of
// this shard: a 1:1 TIMER change, which sets each user's side of the
// conversation, and a disappearing copy (kindExpiring), which is indexed.
// It reports false for any other delivery; ok is false when the cycle is
// aborted or the entry corrupt.
func (s *Shard) applyControlDelivery(d *delivery) (handled, ok bool) {
	var timer *pb.Timer
	entry, expiry := d.entry, uint32(0)
	switch {
	case len(entry) == 0:
		return false, false
	case entry[0] == kindExpiring:
		if len(entry) < 6 {
			s.log.Error("disappearing copy cannot be decoded", "len", len(entry))
			return true, false
		}
		expiry, entry = binary.BigEndian.Uint32(entry[1:]), entry[5:]
	case protocol.Kind(entry[0]) == protocol.KindTimer:
		timer = &pb.Timer{}
		if err := codec.ParseProto(entry[1:], timer); err != nil {
			s.log.Error("timer change cannot be decoded", "err", err)
			return true, false
		}
	default:
		return false, false
	}
	for _, id := range d.users {
		u, err := s.loadUser(id)
		if err != nil {
			return true, false
		}
		if u == nil {
			continue
		}
		if timer != nil {
			s.setTimerWith(u, timer.Peer, timer.TtlS)
		}
		if d.flags&FlagCompanions != 0 && u.activeDevices() < 2 {
			continue // no other device to tell
		}
		s.appendLocal(u, entry)
		if expiry != 0 {
			s.indexExpiringAt(u, u.rec.Head, expiry)
		}
	}
	return true, true
}

// expireEntry applies one key of the disappearing entries' index: the
// entry, if not yet deleted, is emptied in place ([S-18-10]).
func (s *Shard) expireEntry(k, _ []byte) {
	s.batch.Delete(k, nil)
	// slot(2) 'X' second(4) user(8) seq(8)
	if len(k) != 23 {
		return
	}
	id, seq := binary.BigEndian.Uint64(k[7:]), binary.BigEndian.Uint64(k[15:])
	u, err := s.loadUser(id)
	if err != nil || u == nil || seq <= u.rec.Deleted || seq > u.rec.Head {
		return
	}
	s.replaceEntry(u, seq, []byte{})
}
