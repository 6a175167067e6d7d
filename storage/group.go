package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/parley-im/parley/protocol/pb"
)

// kindGroupRef marks an inbox entry that refers to a group message body
// stored once per shard: kindGroupRef, group (8 bytes), gseq (8 bytes). It
// never reaches the wire: the pump resolves it into a Message frame.
const kindGroupRef = 0xff

// groupRecord is the persistent state of a group.
type groupRecord struct {
	Name      string
	Avatar    []byte
	CreatedMS uint64
	GSeq      uint64 // the last event or message of the group
	Timer     uint32 // the disappearing-message timer in seconds, 0: off (added later)
}

func (g *groupRecord) encode(dst []byte) []byte {
	w := newRecordWriter(dst)
	w.string(g.Name)
	w.bytes(g.Avatar)
	w.uint(g.CreatedMS)
	w.uint(g.GSeq)
	w.uint(uint64(g.Timer))
	return w.b
}

func (g *groupRecord) decode(b []byte) error {
	r := newRecordReader(b)
	g.Name = r.string()
	g.Avatar = append([]byte(nil), r.bytes()...)
	g.CreatedMS = r.uint()
	g.GSeq = r.uint()
	g.Timer = uint32(r.optUint())
	return r.done("group")
}

// member is one member of a group.
type member struct {
	user  uint64
	role  pb.GroupRole
	since uint64 // the gseq of the event that added it
}

func (m *member) encode(dst []byte) []byte {
	w := newRecordWriter(dst)
	w.uint(uint64(m.role))
	w.uint(m.since)
	return w.b
}

// group is a group's state in memory. Actor-owned.
type group struct {
	id      uint64
	rec     groupRecord
	members map[uint64]*member
	order   []*member   // by since: the longest-standing first
	joins   []*joinWait // adds waiting for the members' shards
}

// joinWait is a GroupCreate or ADD waiting for the shards of the users it
// adds to say whether each may join one more group.
type joinWait struct {
	actor   uint64
	conn    ConnRef
	rid     uint32
	waiting map[uint64]bool
	ok      []uint64
	refused []*pb.Refusal
	started time.Time
}

func (g *group) member(u uint64) *member { return g.members[u] }

// admins returns how many admins g has.
func (g *group) admins() int {
	n := 0
	for _, m := range g.order {
		if m.role == pb.GroupRole_ROLE_ADMIN {
			n++
		}
	}
	return n
}

// pendingJoins returns how many users the group's open adds wait for.
func (g *group) pendingJoins() int {
	n := 0
	for _, j := range g.joins {
		n += len(j.waiting) + len(j.ok)
	}
	return n
}

// joining reports whether an open add of g already waits for, or has
// accepted, user u.
func (g *group) joining(u uint64) bool {
	for _, j := range g.joins {
		if j.waiting[u] || slices.Contains(j.ok, u) {
			return true
		}
	}
	return false
}

// add makes u a member.
func (g *group) add(m *member) {
	g.members[m.user] = m
	g.order = append(g.order, m)
}

// remove drops u from the members.
func (g *group) remove(u uint64) {
	delete(g.members, u)
	for i, m := range g.order {
		if m.user == u {
			g.order = append(g.order[:i], g.order[i+1:]...)
			return
		}
	}
}

// users returns the members' ids in order.
func (g *group) users() []uint64 {
	return g.appendUsers(make([]uint64, 0, len(g.order)))
}

// appendUsers appends the members' ids in order to dst.
func (g *group) appendUsers(dst []uint64) []uint64 {
	for _, m := range g.order {
		dst = append(dst, m.user)
	}
	return dst
}

// loadGroup returns group id's state, reading it on first use; nil when
// the group does not exist.
func (s *Shard) loadGroup(id uint64) (*group, error) {
	if g, ok := s.groups[id]; ok {
		return g, nil
	}
	g, err := s.readGroup(id)
	if err != nil {
		s.abort(err)
	}
	return g, err
}

func (s *Shard) readGroup(id uint64) (*group, error) {
	v, err := s.get(groupKey(nil, id))
	if err != nil || v == nil {
		return nil, err
	}
	g := &group{id: id, members: map[uint64]*member{}}
	if err := g.rec.decode(v); err != nil {
		return nil, fmt.Errorf("group %d: %w", id, err)
	}
	lo := memberKey(nil, id, 0)
	it, err := s.reader().NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo[:len(lo)-8])})
	if err != nil {
		return nil, fmt.Errorf("storage: members of %d: %w", id, err)
	}
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		r := newRecordReader(it.Value())
		m := &member{user: binary.BigEndian.Uint64(k[len(k)-8:]), role: pb.GroupRole(r.uint()), since: r.uint()}
		if err := r.done("member"); err != nil {
			_ = it.Close()
			return nil, err
		}
		g.members[m.user] = m
		g.order = append(g.order, m)
	}
	if err := it.Close(); err != nil {
		return nil, err
	}
	sortMembers(g.order)
	s.groups[id] = g
	return g, nil
}

// sortMembers orders members by since, then user id (insertion sort: the
// list is read once and is at most 1024 long).
func sortMembers(ms []*member) {
	for i := 1; i < len(ms); i++ {
		for j := i; j > 0 && (ms[j].since < ms[j-1].since || ms[j].since == ms[j-1].since && ms[j].user < ms[j-1].user); j-- {
			ms[j], ms[j-1] = ms[j-1], ms[j]
		}
	}
}

// groupCount returns how many groups u belongs to, reading it on first use.
func (s *Shard) groupCount(u *user) (int, error) {
	if u.groups >= 0 {
		return u.groups, nil
	}
	lo := userGroupKey(nil, u.id, 0)
	it, err := s.reader().NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo[:len(lo)-8])})
	if err != nil {
		return 0, err
	}
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		n++
	}
	if err := it.Close(); err != nil {
		return 0, err
	}
	u.groups = n
	return n, nil
}

// errNoBody: a group message's body expired before a device fetched it.
var errNoBody = errors.New("storage: group body gone")
