package storage

import (
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/parley-im/parley/protocol"
)

// delivery is one entry for some users of one shard: what an outbox record
// carries and what a shard applies, here or at the destination.
type delivery struct {
	flags uint8
	users []uint64
	group uint64 // for a group message or event
	gseq  uint64
	entry []byte // kind byte + stored body
}

// encode appends the outbox value of d: flags, uvarint count, users,
// group, gseq, entry.
func (d *delivery) encode(dst []byte) []byte {
	dst = append(dst, d.flags)
	dst = binary.AppendUvarint(dst, uint64(len(d.users)))
	for _, u := range d.users {
		dst = binary.BigEndian.AppendUint64(dst, u)
	}
	dst = binary.BigEndian.AppendUint64(dst, d.group)
	dst = binary.BigEndian.AppendUint64(dst, d.gseq)
	return append(dst, d.entry...)
}

// decode parses an outbox value; d aliases b. The users go in d.users's
// array when it has room.
func (d *delivery) decode(b []byte) error {
	if len(b) < 1 {
		return fmt.Errorf("%w: outbox record", errCorrupt)
	}
	d.flags = b[0]
	n, k := binary.Uvarint(b[1:])
	if k <= 0 || n > protocol.MaxGroupMembers || uint64(len(b)) < uint64(1+k)+n*8+16 {
		return fmt.Errorf("%w: outbox record", errCorrupt)
	}
	b = b[1+k:]
	d.users = slices.Grow(d.users[:0], int(n))[:n]
	for i := range d.users {
		d.users[i] = binary.BigEndian.Uint64(b)
		b = b[8:]
	}
	d.group = binary.BigEndian.Uint64(b)
	d.gseq = binary.BigEndian.Uint64(b[8:])
	d.entry = b[16:]
	return nil
}

// appendEntry appends entry (kind byte + stored body) to user id's inbox:
// here if this shard owns the user, else through the outbox. flags may ask
// for FlagCompanions.
func (s *Shard) appendEntry(id uint64, entry []byte, flags uint8) {
	// One user: the delivery borrows s.oneUser. deliver reads its users
	// before it appends anything, so an appendEntry beneath it may reuse
	// it.
	s.oneUser[0] = id
	s.deliver(delivery{flags: flags, users: s.oneUser[:], entry: entry})
}

// deliver applies d to this shard's users and, for users of other shards,
// writes it to the outbox towards each of their shards, one entry per
// destination, in the order the users' shards first appear, the users of
// each in their order in d. It returns the outbox entries it wrote, valid
// until the next deliver.
//
// Its scratch (the parts, their users, the entries) lives at the end of
// slices the shard keeps, used as stacks: a deliver beneath it (a local
// part applied here may deliver again) uses what lies beyond and gives it
// back, and a slice it grows leaves this one's region as it was.
func (s *Shard) deliver(d delivery) []pairSeq {
	base, ub, pb := len(s.fwdEntries), len(s.fwdUsers), len(s.fwdParts)
	s.partByShard(d.users)
	parts := s.fwdParts[pb:len(s.fwdParts):len(s.fwdParts)]
	users := s.fwdUsers[ub:len(s.fwdUsers):len(s.fwdUsers)]
	for _, p := range parts {
		part := d
		part.users, users = users[:p.n:p.n], users[p.n:]
		s.fwdEntries = s.deliverTo(p.shard, part, s.fwdEntries)
	}
	entries := s.fwdEntries[base:len(s.fwdEntries):len(s.fwdEntries)]
	s.fwdEntries, s.fwdUsers, s.fwdParts = s.fwdEntries[:base], s.fwdUsers[:ub], s.fwdParts[:pb]
	return entries
}

// fwdPart is the users of one shard among a delivery's: n of them.
type fwdPart struct {
	shard uint16
	n     int
	at    int // where partByShard puts the part's next user
}

// partByShard appends to s.fwdParts the shards of users in the order they
// first appear, and to s.fwdUsers the users grouped by part, in their
// order within each. It asks the Forwarder for each user's shard once,
// and takes time in proportion to len(users) however many shards they
// span.
func (s *Shard) partByShard(users []uint64) {
	if len(users) == 0 {
		return
	}
	shards := s.fwdShards[:0]
	for _, u := range users {
		shards = append(shards, s.cfg.Forwarder.ShardOf(u))
	}
	s.fwdShards = shards
	if !slices.ContainsFunc(shards[1:], func(id uint16) bool { return id != shards[0] }) {
		// One user, or a group whose members live together.
		s.fwdParts = append(s.fwdParts, fwdPart{shard: shards[0], n: len(users)})
		s.fwdUsers = append(s.fwdUsers, users...)
		return
	}
	pb := len(s.fwdParts)
	for _, id := range shards {
		if s.partOf[id] == 0 {
			s.fwdParts = append(s.fwdParts, fwdPart{shard: id})
			s.partOf[id] = uint16(len(s.fwdParts) - pb) // 1-based: 0 is no part yet
		}
		s.fwdParts[pb+int(s.partOf[id])-1].n++
	}
	parts := s.fwdParts[pb:]
	at := 0
	for i := range parts {
		parts[i].at = at
		at += parts[i].n
	}
	ub := len(s.fwdUsers)
	s.fwdUsers = slices.Grow(s.fwdUsers, len(users))[:ub+len(users)]
	for i, u := range users {
		p := &parts[s.partOf[shards[i]]-1]
		s.fwdUsers[ub+p.at] = u
		p.at++
	}
	for _, p := range parts {
		s.partOf[p.shard] = 0
	}
}

// deliverTo applies part, whose users are all of shard id, here if id is
// this shard, else writes it to the outbox towards id, appending the
// outbox entry to entries. A delivery applied here reads each of its
// users before it appends anything for that user.
func (s *Shard) deliverTo(id uint16, part delivery, entries []pairSeq) []pairSeq {
	if id == s.cfg.ID {
		s.applyDelivery(&part)
		return entries
	}
	s.fwdVal = part.encode(s.fwdVal[:0])
	seq := s.enqueue(id, s.fwdVal, part.entry)
	return append(entries, pairSeq{id, seq})
}

// fwdChunkSize is the size of the chunks forwarded values are carved from;
// a value larger than an eighth of it gets a slice of its own.
const fwdChunkSize = 64 << 10

// forwardBuf returns an empty slice with room for an outbox value of n
// bytes, carved from the shard's current forward chunk. A forward carries
// its value to the destination's actor (OpForward.Entry, which the
// destination reads in its own cycle and may keep until that cycle's
// pump), so what is carved is never written again: a full chunk is left
// to the values carved from it, and the garbage collector frees it with
// the last of them.
func (s *Shard) forwardBuf(n int) []byte {
	if n > fwdChunkSize/8 {
		return make([]byte, 0, n)
	}
	if cap(s.fwdChunk)-len(s.fwdChunk) < n {
		s.fwdChunk = make([]byte, 0, fwdChunkSize)
	}
	start := len(s.fwdChunk)
	s.fwdChunk = s.fwdChunk[:start+n]
	return s.fwdChunk[start : start : start+n]
}

// applyDelivery appends d's entry to its users here. It reports false when
// the entry cannot be applied: the cycle is aborted (a storage error) or
// the entry is corrupt; then it wrote nothing that will commit.
func (s *Shard) applyDelivery(d *delivery) bool {
	if d.group != 0 {
		return s.applyGroupDelivery(d)
	}
	if len(d.entry) > 0 && d.entry[0] == kindToMembers {
		return s.applyToMembers(d) // a KEYS_CHANGED for groups' members (shard_keys.go)
	}
	if handled, ok := s.applyControlDelivery(d); handled {
		return ok // a timer change or a disappearing copy (shard_timer.go)
	}
	for _, id := range d.users {
		u, err := s.loadUser(id)
		if err != nil {
			return false
		}
		if u == nil || (d.flags&FlagCompanions != 0 && u.activeDevices() < 2) {
			continue // gone, or no other device to tell
		}
		s.appendLocal(u, d.entry)
	}
	return true
}
