package storage

import (
	"encoding/binary"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/parley-im/parley/analytics"
	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// joinTimeout bounds how long an add waits for the members' shards; users
// whose shard has not answered by then are refused with OVERLOADED.
const joinTimeout = 10 * time.Second

// reservationTTL is how long a user's shard holds a group slot it promised
// to a group that has not sent the add yet.
const reservationTTL = time.Minute

// groupSend is a group message waiting for every destination shard to
// store it before the sender hears Sent ([S-16-6]).
type groupSend struct {
	remaining int
	waiters   []sentWaiter
	id        uint64
}

// sentWaiter is a sender waiting for Sent.
type sentWaiter struct {
	conn ConnRef
	cmid uint64
}

// gkey names one message of one group.
type gkey struct{ group, gseq uint64 }

// applyGroupCreate creates a group on the creator's shard with the creator
// as its admin, then adds the other members ([S-16-2]).
func (s *Shard) applyGroupCreate(op *Op) {
	if !s.roomFor(op) {
		return
	}
	u, err := s.loadUser(op.User)
	if err != nil || u == nil {
		s.replyError(op.Conn, protocol.CodeInternal, op.RID, 0)
		return
	}
	n, err := s.groupCount(u)
	if err != nil {
		s.replyError(op.Conn, protocol.CodeInternal, op.RID, 0)
		return
	}
	now := s.cfg.Now()
	if n+u.reservedGroups(now) >= protocol.MaxGroupsPerUser {
		s.replyError(op.Conn, protocol.CodeTooManyGroups, op.RID, 0)
		return
	}
	if wait := u.createLimit(now, s.cfg.GroupsPerHour); wait > 0 {
		// [S-16-2] creating and leaving groups in a loop would fill the
		// disk with group records.
		s.replyRetry(op.Conn, protocol.CodeRateLimited, op.RID, 0, uint32(wait/time.Millisecond))
		return
	}
	u.groupCreates = append(u.groupCreates, now)
	slot := SlotOfUser(u.id)
	ck := appendPrefix(nil, slot, tagGroupCounter)
	var count uint64
	if v, err := s.get(ck); err != nil {
		s.replyError(op.Conn, protocol.CodeInternal, op.RID, 0)
		return
	} else if len(v) == 8 {
		count = binary.BigEndian.Uint64(v)
	}
	count++
	s.batch.Set(ck, be64(count), nil)
	nowMS := uint64(s.cfg.Now().UnixMilli())
	g := &group{id: count<<slotBits | uint64(slot), members: map[uint64]*member{},
		rec: groupRecord{Name: op.Name, Avatar: op.Body, CreatedMS: nowMS}}
	s.groups[g.id] = g
	s.groupEvent(g, u.id, pb.GroupOp_GROUP_OP_CREATE, []uint64{u.id}, nil, func(gseq uint64) {
		s.setMember(g, &member{user: u.id, role: pb.GroupRole_ROLE_ADMIN, since: gseq})
	})
	s.emit(analytics.Event{Type: analytics.TypeGroupCreated, User: u.id, Group: g.id})
	s.startJoins(g, op, others(op.Users, u.id))
}

// others returns users without self and duplicates.
func others(users []uint64, self uint64) []uint64 {
	seen := map[uint64]bool{self: true}
	var out []uint64
	for _, u := range users {
		if u != 0 && !seen[u] {
			seen[u] = true
			out = append(out, u)
		}
	}
	return out
}

// startJoins asks the shards of users whether each may join g, and answers
// op with GroupInfo once they all have.
func (s *Shard) startJoins(g *group, op *Op, users []uint64) {
	j := &joinWait{actor: op.User, conn: op.Conn, rid: op.RID, waiting: map[uint64]bool{}, started: s.cfg.Now()}
	for _, id := range users {
		j.waiting[id] = true
		s.effectWith(effForward, ConnRef{}, effectMore{op: Op{Kind: OpGroupJoin, User: id, Group: g.id, Source: s.cfg.ID}})
	}
	g.joins = append(g.joins, j)
	if len(users) == 0 {
		s.finishJoin(g, j)
	}
}

// applyGroupJoin answers, on a user's shard, whether the user may join one
// more group, and holds a slot for it until the add arrives.
func (s *Shard) applyGroupJoin(op *Op) {
	code := protocol.Code(0)
	u, err := s.loadUser(op.User)
	switch {
	case err != nil:
		code = protocol.CodeInternal
	case u == nil:
		code = protocol.CodeNotFound
	default:
		now := s.cfg.Now()
		n, err := s.groupCount(u)
		switch {
		case err != nil:
			code = protocol.CodeInternal
		case u.reserve(op.Group, now.Add(reservationTTL)):
			// this group already held a place: renewed, not doubled
		case n+u.reservedGroups(now) >= protocol.MaxGroupsPerUser:
			code = protocol.CodeTooManyGroups
		default:
			u.reserved = append(u.reserved, reservation{group: op.Group, until: now.Add(reservationTTL)})
		}
	}
	s.effectWith(effForward, ConnRef{}, effectMore{op: Op{Kind: OpGroupJoined, Group: op.Group, User: op.User, ErrCode: code}})
}

// applyGroupJoined records one user's answer to an add.
func (s *Shard) applyGroupJoined(op *Op) {
	g, err := s.loadGroup(op.Group)
	if err != nil || g == nil {
		return
	}
	for _, j := range g.joins {
		if !j.waiting[op.User] {
			continue
		}
		delete(j.waiting, op.User)
		if op.ErrCode != 0 {
			j.refused = append(j.refused, &pb.Refusal{User: op.User, Code: op.ErrCode})
		} else {
			j.ok = append(j.ok, op.User)
		}
		if len(j.waiting) == 0 {
			s.finishJoin(g, j)
		}
		return
	}
}

// finishJoin commits one add event for every user accepted (up to the
// member limit) and answers the requester.
func (s *Shard) finishJoin(g *group, j *joinWait) {
	for i, o := range g.joins {
		if o == j {
			g.joins = append(g.joins[:i], g.joins[i+1:]...)
			break
		}
	}
	var added []uint64
	slices.Sort(j.ok) // the order members load in: since, then user id
	for _, id := range j.ok {
		switch {
		case g.member(id) != nil:
		case len(g.order)+len(added) >= protocol.MaxGroupMembers:
			j.refused = append(j.refused, &pb.Refusal{User: id, Code: protocol.CodeGroupFull})
		default:
			added = append(added, id)
		}
	}
	if len(added) > 0 {
		s.groupEvent(g, j.actor, pb.GroupOp_GROUP_OP_ADD, added, nil, func(gseq uint64) {
			for _, id := range added {
				s.setMember(g, &member{user: id, role: pb.GroupRole_ROLE_MEMBER, since: gseq})
			}
		})
	}
	info := s.groupInfo(g, j.rid)
	info.Refused = j.refused
	s.replyProto(j.conn, protocol.KindGroupInfo, info)
}

// expireJoins ends adds whose members' shards did not answer in time.
func (s *Shard) expireJoins(now time.Time) {
	for _, g := range s.groups {
		for _, j := range append([]*joinWait(nil), g.joins...) {
			if now.Sub(j.started) < joinTimeout {
				continue
			}
			for id := range j.waiting {
				j.refused = append(j.refused, &pb.Refusal{User: id, Code: protocol.CodeOverloaded})
			}
			j.waiting = nil
			s.finishJoin(g, j)
		}
	}
}

// setMember writes m as a member of g.
func (s *Shard) setMember(g *group, m *member) {
	if old := g.member(m.user); old != nil {
		old.role = m.role
		m = old
	} else {
		g.add(m)
	}
	s.batch.Set(memberKey(nil, g.id, m.user), m.encode(nil), nil)
}

// dropMember deletes u from g.
func (s *Shard) dropMember(g *group, u uint64) {
	g.remove(u)
	s.batch.Delete(memberKey(nil, g.id, u), nil)
}

// groupEvent gives the next gseq of g to an event, applies it with apply
// (which changes the membership), and sends it to every member before and
// after the change, in the group's order.
func (s *Shard) groupEvent(g *group, actor uint64, gop pb.GroupOp, users []uint64, name *string, apply func(gseq uint64)) {
	g.rec.GSeq++
	gseq := g.rec.GSeq
	before := g.users()
	apply(gseq)
	after := g.users()
	ev := &pb.GroupEvent{
		Id: s.ids.next(s.cfg.Now()), Group: g.id, Gseq: gseq, Actor: actor, Op: gop, Members: users,
	}
	switch gop {
	case pb.GroupOp_GROUP_OP_CREATE, pb.GroupOp_GROUP_OP_ADD:
		ev.Name, ev.Avatar = g.rec.Name, g.rec.Avatar // added members learn them
	case pb.GroupOp_GROUP_OP_RENAME:
		ev.Name = g.rec.Name
	case pb.GroupOp_GROUP_OP_SET_AVATAR:
		ev.Avatar = g.rec.Avatar
	}
	entry, err := appendProtoEntry([]byte{byte(protocol.KindGroupEvent)}, ev)
	if err != nil {
		s.log.Error("group event", "err", err)
		return
	}
	s.batch.Set(groupKey(nil, g.id), g.rec.encode(nil), nil)
	s.deliver(delivery{users: union(before, after), group: g.id, gseq: gseq, entry: entry})
}

// union returns a then the elements of b not in a.
func union(a, b []uint64) []uint64 {
	in := make(map[uint64]bool, len(a))
	out := append([]uint64(nil), a...)
	for _, x := range a {
		in[x] = true
	}
	for _, x := range b {
		if !in[x] {
			out = append(out, x)
		}
	}
	return out
}

// applyGroupUpdate changes a group ([S-16-3]).
func (s *Shard) applyGroupUpdate(op *Op) {
	if op.GroupOp != pb.GroupOp_GROUP_OP_REMOVE && op.GroupOp != pb.GroupOp_GROUP_OP_LEAVE && !s.roomFor(op) {
		return
	}
	g, err := s.loadGroup(op.Group)
	if err != nil {
		s.replyError(op.Conn, protocol.CodeInternal, op.RID, 0)
		return
	}
	var actor *member
	if g != nil {
		actor = g.member(op.User)
	}
	if actor == nil {
		s.replyError(op.Conn, protocol.CodeNotMember, op.RID, 0)
		return
	}
	admin := actor.role == pb.GroupRole_ROLE_ADMIN
	switch op.GroupOp {
	case pb.GroupOp_GROUP_OP_ADD, pb.GroupOp_GROUP_OP_REMOVE, pb.GroupOp_GROUP_OP_PROMOTE, pb.GroupOp_GROUP_OP_DEMOTE:
		if !admin {
			s.replyError(op.Conn, protocol.CodeNotAdmin, op.RID, 0)
			return
		}
	}
	switch op.GroupOp {
	case pb.GroupOp_GROUP_OP_ADD:
		var users []uint64
		for _, id := range others(op.Users, op.User) {
			// One add at a time per user: a repeated ADD while the first
			// waits for the user's shard would only hold another of the
			// user's group places there.
			if g.member(id) == nil && !g.joining(id) {
				users = append(users, id)
			}
		}
		if len(g.order)+g.pendingJoins()+len(users) > protocol.MaxGroupMembers {
			s.replyError(op.Conn, protocol.CodeGroupFull, op.RID, 0)
			return
		}
		s.startJoins(g, op, users)
		return
	case pb.GroupOp_GROUP_OP_REMOVE:
		targets, ok := s.members(g, op, true)
		if !ok {
			return
		}
		s.groupEvent(g, op.User, op.GroupOp, targets, nil, func(uint64) {
			for _, id := range targets {
				s.dropMember(g, id)
			}
		})
	case pb.GroupOp_GROUP_OP_PROMOTE, pb.GroupOp_GROUP_OP_DEMOTE:
		targets, ok := s.members(g, op, false)
		if !ok {
			return
		}
		role := pb.GroupRole_ROLE_ADMIN
		if op.GroupOp == pb.GroupOp_GROUP_OP_DEMOTE {
			role = pb.GroupRole_ROLE_MEMBER
			demoted := 0
			for _, id := range targets {
				if g.member(id).role == pb.GroupRole_ROLE_ADMIN {
					demoted++
				}
			}
			if demoted >= g.admins() {
				s.replyError(op.Conn, protocol.CodeInvalidArgument, op.RID, 0) // [S-16-4] one admin stays
				return
			}
		}
		s.groupEvent(g, op.User, op.GroupOp, targets, nil, func(uint64) {
			for _, id := range targets {
				s.setMember(g, &member{user: id, role: role})
			}
		})
	case pb.GroupOp_GROUP_OP_RENAME:
		g.rec.Name = op.Name
		s.groupEvent(g, op.User, op.GroupOp, nil, nil, func(uint64) {})
	case pb.GroupOp_GROUP_OP_SET_AVATAR:
		g.rec.Avatar = op.Body
		s.groupEvent(g, op.User, op.GroupOp, nil, nil, func(uint64) {})
	case pb.GroupOp_GROUP_OP_LEAVE:
		s.groupEvent(g, op.User, op.GroupOp, []uint64{op.User}, nil, func(uint64) { s.dropMember(g, op.User) })
		switch {
		case len(g.order) > 0 && g.admins() == 0:
			// [S-16-4] the longest-standing member becomes admin.
			heir := g.order[0].user
			s.groupEvent(g, 0, pb.GroupOp_GROUP_OP_PROMOTE, []uint64{heir}, nil, func(uint64) {
				s.setMember(g, &member{user: heir, role: pb.GroupRole_ROLE_ADMIN})
			})
		case len(g.order) == 0 && len(g.joins) == 0:
			// [S-16-4] the last member left: the group is gone. Its id is
			// never issued again; its messages' bodies expire with them.
			s.batch.Delete(groupKey(nil, g.id), nil)
			delete(s.groups, g.id)
		}
	default:
		s.replyError(op.Conn, protocol.CodeInvalidArgument, op.RID, 0)
		return
	}
	start := len(s.out)
	s.out = codec.AppendOK(s.out, op.RID)
	s.reply(op.Conn, start)
}

// members checks that op.Users are members of g (and, if notSelf, not the
// actor), answering the request if not.
func (s *Shard) members(g *group, op *Op, notSelf bool) ([]uint64, bool) {
	users := others(op.Users, 0)
	if len(users) == 0 {
		s.replyError(op.Conn, protocol.CodeInvalidArgument, op.RID, 0)
		return nil, false
	}
	for _, id := range users {
		if g.member(id) == nil {
			s.replyError(op.Conn, protocol.CodeNotMember, op.RID, 0)
			return nil, false
		}
		if notSelf && id == op.User {
			s.replyError(op.Conn, protocol.CodeInvalidArgument, op.RID, 0) // leave with LEAVE
			return nil, false
		}
	}
	return users, true
}

// applyGroupGet answers a member with the group's state.
func (s *Shard) applyGroupGet(op *Op) {
	g, err := s.loadGroup(op.Group)
	if err != nil {
		s.replyError(op.Conn, protocol.CodeInternal, op.RID, 0)
		return
	}
	if g == nil || g.member(op.User) == nil {
		s.replyError(op.Conn, protocol.CodeNotMember, op.RID, 0)
		return
	}
	s.replyProto(op.Conn, protocol.KindGroupInfo, s.groupInfo(g, op.RID))
}

// groupInfo describes g.
func (s *Shard) groupInfo(g *group, rid uint32) *pb.GroupInfo {
	info := &pb.GroupInfo{Rid: rid, Group: g.id, Name: g.rec.Name, Avatar: g.rec.Avatar, Gseq: g.rec.GSeq, TimerS: g.rec.Timer}
	for _, m := range g.order {
		info.Members = append(info.Members, &pb.Member{User: m.user, Role: m.role, SinceGseq: m.since})
	}
	return info
}

// applyGroupList lists the groups of a user.
func (s *Shard) applyGroupList(op *Op) {
	res := &pb.GroupListResult{Rid: op.RID}
	lo := userGroupKey(nil, op.User, 0)
	it, err := s.batch.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo[:len(lo)-8])})
	if err != nil {
		s.replyError(op.Conn, protocol.CodeInternal, op.RID, 0)
		return
	}
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		res.Groups = append(res.Groups, binary.BigEndian.Uint64(k[len(k)-8:]))
	}
	_ = it.Close()
	s.replyProto(op.Conn, protocol.KindGroupListResult, res)
}

// applyGroupSend gives a group message its place in the group's order and
// sends it to every member's shard, the body once per shard. Sent follows
// when every shard has stored it.
func (s *Shard) applyGroupSend(op *Op) {
	g, err := s.loadGroup(op.Group)
	if err != nil {
		s.replyError(op.Conn, protocol.CodeInternal, 0, op.CMID)
		return
	}
	// A retry is answered as the first attempt was, even if the sender
	// left the group since ([S-8-14]).
	s.sendKey = groupDedupeKey(s.sendKey[:0], op.Group, op.From, op.FromDevice, op.CMID)
	dk := s.sendKey
	sum := bodySum(op)
	if prev, err := s.get(dk); err != nil {
		s.replyError(op.Conn, protocol.CodeInternal, 0, op.CMID)
		return
	} else if prev != nil {
		if len(prev) < 16 || (len(prev) >= 24 && binary.BigEndian.Uint64(prev[16:]) != sum) {
			s.replyError(op.Conn, protocol.CodeCMIDReused, 0, op.CMID)
			return
		}
		s.repeated(op)
		id, gseq := binary.BigEndian.Uint64(prev), binary.BigEndian.Uint64(prev[8:])
		if p := s.groupSends[gkey{op.Group, gseq}]; p != nil {
			p.waiters = append(p.waiters, sentWaiter{op.Conn, op.CMID})
			return
		}
		start := len(s.out)
		s.out = codec.AppendSent(s.out, op.CMID, id)
		s.reply(op.Conn, start)
		return
	}
	if s.heldBack(op) {
		return
	}
	if g == nil || g.member(op.From) == nil {
		s.replyError(op.Conn, protocol.CodeNotMember, 0, op.CMID)
		return
	}
	if !s.roomFor(op) {
		return
	}
	id := s.ids.next(s.cfg.Now())
	g.rec.GSeq++
	gseq := g.rec.GSeq
	s.key, s.rec = groupKey(s.key[:0], g.id), g.rec.encode(s.rec[:0])
	s.batch.Set(s.key, s.rec, nil)
	s.batch.Set(dk, binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(be64(id), gseq), sum), nil)
	s.indexMessage(msgToGroup, op.Group, id, msgRecord{From: op.From, Device: op.FromDevice, CMID: op.CMID, Seq: gseq})
	// The entry is built in the arena: the members' inboxes here refer to
	// it until the cycle's pump (appendRaw).
	n := len(s.arena)
	s.arena = codec.AppendMessageEntry(append(s.arena, byte(protocol.KindMessage)), codec.Message{
		ID: id, From: op.From, Body: op.Body, Type: op.Type, FromDevice: op.FromDevice, Group: g.id, GSeq: gseq, Cipher: op.Cipher,
		TTL: g.rec.Timer, Forwarded: op.Forwarded, Ref: op.Ref, // [S-18-10], [S-18-11]
	})
	entry := s.arena[n:len(s.arena):len(s.arena)]
	s.emit(analytics.Event{Type: analytics.TypeMessageAccepted, User: op.From, Device: op.FromDevice, Group: g.id, ID: id, Size: int64(len(op.Body)), Count: len(g.order)})
	s.groupUsers = g.appendUsers(s.groupUsers[:0])
	entries := s.deliver(delivery{users: s.groupUsers, group: g.id, gseq: gseq, entry: entry})
	if len(entries) == 0 {
		start := len(s.out)
		s.out = codec.AppendSent(s.out, op.CMID, id)
		s.reply(op.Conn, start)
		return
	}
	p := s.newGroupSend()
	p.remaining, p.id, p.waiters = len(entries), id, append(p.waiters, sentWaiter{op.Conn, op.CMID})
	k := gkey{g.id, gseq}
	s.groupSends[k] = p
	for _, e := range entries {
		s.outboxGroup[e] = k
	}
}

// confirmGroupSend notes that outbox entry e reached its destination and,
// when it was the last one a group message waited for, answers its
// senders.
func (s *Shard) confirmGroupSend(e pairSeq) {
	k, ok := s.outboxGroup[e]
	if !ok {
		return
	}
	delete(s.outboxGroup, e)
	p := s.groupSends[k]
	if p == nil {
		return
	}
	if p.remaining--; p.remaining > 0 {
		return
	}
	delete(s.groupSends, k)
	for _, w := range p.waiters {
		start := len(s.out)
		s.out = codec.AppendSent(s.out, w.cmid, p.id)
		s.reply(w.conn, start)
	}
	if len(s.freeGroupSends) < maxFreeGroupSends {
		p.waiters = p.waiters[:0]
		s.freeGroupSends = append(s.freeGroupSends, p)
	}
}

// maxFreeGroupSends is the most answered groupSends kept for new ones.
const maxFreeGroupSends = 64

// newGroupSend returns an empty groupSend, one answered before if the
// shard kept one.
func (s *Shard) newGroupSend() *groupSend {
	n := len(s.freeGroupSends)
	if n == 0 {
		return new(groupSend)
	}
	p := s.freeGroupSends[n-1]
	s.freeGroupSends = s.freeGroupSends[:n-1]
	return p
}

// applyGroupDelivery stores a group message or event for its recipients on
// this shard: a message body once, with a small reference in each inbox;
// an event in each inbox, keeping the users' group lists in step.
func (s *Shard) applyGroupDelivery(d *delivery) bool {
	if len(d.entry) == 0 {
		return true
	}
	switch protocol.Kind(d.entry[0]) {
	case protocol.KindMessage:
		m, err := codec.ParseMessage(d.entry[1:])
		if err != nil {
			s.log.Error("group delivery cannot be decoded", "group", d.group, "gseq", d.gseq, "err", err)
			return false
		}
		ref := s.groupRef[:] // appendRaw copies it
		ref[0] = kindGroupRef
		binary.BigEndian.PutUint64(ref[1:], d.group)
		binary.BigEndian.PutUint64(ref[9:], d.gseq)
		refs := 0
		for _, id := range d.users {
			u, err := s.loadUser(id)
			if err != nil {
				return false
			}
			if u == nil || (id == m.From && u.activeDevices() < 2) {
				continue // the sender's own device needs no copy
			}
			s.appendRaw(u, ref, d.entry)
			refs++
		}
		if refs > 0 {
			s.batch.Set(bodyKey(nil, tagBody, d.group, d.gseq), d.entry, nil)
			s.rec = binary.AppendUvarint(s.rec[:0], uint64(refs))
			s.batch.Set(bodyKey(nil, tagBodyRefs, d.group, d.gseq), s.rec, nil)
			s.batch.Set(bodyExpiryKey(nil, s.day(), d.group, d.gseq), nil, nil)
			if m.TTL != 0 {
				s.indexExpiringBody(d.group, d.gseq, expiryOf(m.ID, m.TTL))
			}
		}
	case protocol.KindRevoked:
		return s.applyGroupRevokeDelivery(d)
	case protocol.KindTimer:
		return s.appendEach(d)
	case protocol.KindGroupEvent:
		var ev pb.GroupEvent
		if err := codec.ParseProto(d.entry[1:], &ev); err != nil {
			s.log.Error("group event delivery cannot be decoded", "group", d.group, "gseq", d.gseq, "err", err)
			return false
		}
		for _, id := range d.users {
			u, err := s.loadUser(id)
			if err != nil {
				return false
			}
			if u == nil {
				continue
			}
			s.trackMembership(u, &ev)
			s.appendLocal(u, d.entry)
		}
	}
	return true
}

// trackMembership keeps u's list of groups in step with an event it gets.
func (s *Shard) trackMembership(u *user, ev *pb.GroupEvent) {
	joined, left := false, false
	switch ev.Op {
	case pb.GroupOp_GROUP_OP_CREATE, pb.GroupOp_GROUP_OP_ADD:
		joined = contains(ev.Members, u.id)
	case pb.GroupOp_GROUP_OP_REMOVE, pb.GroupOp_GROUP_OP_LEAVE:
		left = contains(ev.Members, u.id)
	}
	switch {
	case joined:
		s.batch.Set(userGroupKey(nil, u.id, ev.Group), nil, nil)
		u.release(ev.Group)
		if u.groups >= 0 {
			u.groups++
		}
	case left:
		s.batch.Delete(userGroupKey(nil, u.id, ev.Group), nil)
		if u.groups > 0 {
			u.groups--
		}
	}
}

func contains(xs []uint64, x uint64) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// groupBody returns the stored Message entry of a group message.
func (s *Shard) groupBody(group, gseq uint64) ([]byte, error) {
	v, err := s.get(bodyKey(nil, tagBody, group, gseq))
	if err != nil {
		return nil, err
	}
	if v == nil {
		return nil, errNoBody
	}
	return v, nil
}

// releaseBody drops one inbox's reference to a group message body. The
// cycle's releases are counted and applied at its end, once per body
// (flushReleases): the members of a fan-out acknowledging in one cycle
// rewrite the body's reference count once, not once each.
func (s *Shard) releaseBody(group, gseq uint64) {
	if s.releases == nil {
		s.releases = make(map[gkey]uint64)
	}
	s.releases[gkey{group, gseq}]++
}

// flushReleases applies the cycle's body releases: each body's reference
// count drops by its releases, and the body goes with its last reference.
// Nothing reads a count or a released body between releaseBody and here:
// a body whose count reaches zero is referred to by no entry left.
func (s *Shard) flushReleases() {
	for b, n := range s.releases {
		s.key = bodyKey(s.key[:0], tagBodyRefs, b.group, b.gseq)
		rk := s.key
		v, err := s.getAppend(s.val, rk)
		if err != nil {
			break // the cycle is aborted
		}
		if v == nil {
			continue
		}
		s.val = v
		refs, k := binary.Uvarint(v)
		if k <= 0 || refs <= n {
			s.batch.Delete(rk, nil)
			s.batch.Delete(bodyKey(nil, tagBody, b.group, b.gseq), nil)
			continue
		}
		s.rec = binary.AppendUvarint(s.rec[:0], refs-n)
		s.batch.Set(rk, s.rec, nil)
	}
	clear(s.releases)
}
