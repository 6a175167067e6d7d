package storage_test

import (
	"fmt"
	"strings"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
	"github.com/parley-im/parley/storage"
)

// Delete for everyone in the simulation ([S-18-1] to [S-18-3]).
//
// A device deletes one of its user's acknowledged messages now and then,
// and asks again after every reconnect until it has the Ok. The model
// checks, as frames arrive:
//
//   - a Revoked entry names a message its sender asked to delete;
//   - a device that had the message gets at most one notice after it;
//   - a 1:1 message never reaches, after the Ok, a recipient device that
//     had neither processed it nor had it waiting on its connection when
//     the Ok came (the deletion is durable in the recipient's inbox
//     before the Ok);
//   - an entry that takes a message's place names that message, and a
//     group's entries keep its gseq order (groupOrder).
//
// At the end, every device that had a deleted message got exactly one
// notice after it: every device of the recipient and, when the sender
// has several, of the sender; for a group, every member whose membership
// nobody touched from the request to the end.

// simRevoke is one message the model asked to delete.
type simRevoke struct {
	send    *simSend
	ok      bool             // Ok came
	refused protocol.Code    // NOT_MEMBER: the sender left the group
	stable  map[*simUser]int // group: members when asked and their versions
}

// pendingRevoke is a revoke waiting for its answer on one connection.
type pendingRevoke struct {
	rid uint32
	ep  *endpoint
	rev *simRevoke
}

// revokeState is a device's view of the deletions.
type revokeState struct {
	mustNot map[uint64]bool // message ids it must never get
	after   map[uint64]int  // message id → notices got after the message
}

func (s *sim) revokeOf(d *simDevice) *revokeState {
	if d.revokes == nil {
		d.revokes = &revokeState{mustNot: map[uint64]bool{}, after: map[uint64]int{}}
	}
	return d.revokes
}

// revoke has a device delete one of its user's acknowledged messages, or
// one it deleted before again (which changes nothing).
func (s *sim) revoke(d *simDevice) {
	var candidates []*simSend
	for _, k := range sortedSends(s.sends) {
		if m := s.sends[k]; m.sent && m.from.user == d.user {
			candidates = append(candidates, m)
		}
	}
	if len(candidates) == 0 {
		return
	}
	m := candidates[s.rng.IntN(len(candidates))]
	rev := s.revokes[m.id]
	if rev == nil {
		rev = &simRevoke{send: m}
		if m.group != nil {
			rev.stable = map[*simUser]int{}
			for u, st := range m.group.state {
				if st == isMember {
					rev.stable[u] = m.group.version[u]
				}
			}
		}
		s.revokes[m.id] = rev
	}
	s.note("%s deletes %q (message %d)", d.name, m.body, m.id)
	s.submitRevoke(d, rev)
}

func (s *sim) submitRevoke(d *simDevice, rev *simRevoke) {
	s.rid++
	s.pendingRevokes = append(s.pendingRevokes, pendingRevoke{rid: s.rid, ep: d.ep, rev: rev})
	op := storage.Op{Kind: storage.OpRevoke, From: d.user.id, FromDevice: d.id, UpTo: rev.send.id, RID: s.rid, Conn: d.ep.ref}
	if rev.send.group != nil {
		op.Group = rev.send.group.id
	} else {
		op.User = rev.send.to.id
	}
	s.submit(op)
}

// answerRevoke records the answer to a revoke: Ok (err nil) or an Error.
func (s *sim) answerRevoke(d *simDevice, rid uint32, err *pb.Error) bool {
	for i, p := range s.pendingRevokes {
		if p.rid != rid || p.ep != d.ep {
			continue
		}
		s.pendingRevokes = append(s.pendingRevokes[:i], s.pendingRevokes[i+1:]...)
		rev := p.rev
		switch {
		case err == nil:
			if !rev.ok && rev.send.group == nil {
				s.mustNotGet(rev)
			}
			rev.ok = true
		case err.Code == protocol.CodeNotMember && rev.send.group != nil:
			rev.refused = err.Code
		case err.Code == protocol.CodeOverloaded || err.Code == protocol.CodeInternal:
		default:
			s.fail("%s: revoke of %d refused: %v", d.name, rev.send.id, err.Code)
		}
		return true
	}
	return false
}

// mustNotGet records, at the Ok of a 1:1 message's deletion, the devices
// of the recipient that must never get the message: those that neither
// processed it nor have it waiting on their connection.
func (s *sim) mustNotGet(rev *simRevoke) {
	id := rev.send.id
	for _, dv := range rev.send.to.devices {
		if dv.count[id] > 0 || s.waiting(dv, id) {
			continue
		}
		s.revokeOf(dv).mustNot[id] = true
	}
}

// waiting reports whether message id is among the frames d has not taken.
func (s *sim) waiting(d *simDevice, id uint64) bool {
	if d.ep == nil {
		return false
	}
	d.ep.mu.Lock()
	defer d.ep.mu.Unlock()
	for _, f := range d.ep.frames {
		if m, ok := f.msg.(codec.Message); ok && m.ID == id {
			return true
		}
	}
	return false
}

// revoked checks a new Revoked entry.
func (s *sim) revoked(d *simDevice, r *pb.Revoked) {
	rev := s.revokes[r.Id]
	switch {
	case rev == nil:
		s.fail("%s: Revoked for message %d, which nobody deleted", d.name, r.Id)
		return
	case r.From != rev.send.from.user.id:
		s.fail("%s: Revoked for %d names sender %d, want %d", d.name, r.Id, r.From, rev.send.from.user.id)
	}
	m := rev.send
	if m.group != nil {
		if r.Group != m.group.id {
			s.fail("%s: Revoked for group message %d names group %d", d.name, r.Id, r.Group)
		}
		s.groupOrder(d, r.Group, r.Gseq)
		if !d.member[r.Group] {
			s.fail("%s: group %d Revoked (gseq %d) while not a member", d.name, r.Group, r.Gseq)
		}
	} else {
		switch d.user {
		case m.to:
			if r.To != 0 {
				s.fail("%s: Revoked for incoming %d has To %d", d.name, r.Id, r.To)
			}
		case m.from.user:
			if r.To != m.to.id {
				s.fail("%s: own Revoked for %d says To %d, want %d", d.name, r.Id, r.To, m.to.id)
			}
		default:
			s.fail("%s: Revoked for u%d's message %d", d.name, m.to.idx, r.Id)
		}
	}
	if d.count[r.Id] > 0 {
		st := s.revokeOf(d)
		if st.after[r.Id]++; st.after[r.Id] > 1 {
			s.fail("%s: %d notices after message %d", d.name, st.after[r.Id], r.Id)
		}
	}
}

// gotRevoked checks a new Message against the deletions.
func (s *sim) gotRevoked(d *simDevice, id uint64) {
	if d.revokes != nil && d.revokes.mustNot[id] {
		s.fail("%s got message %d after its deletion was acknowledged", d.name, id)
	}
}

// sameEntry reports whether two entries seen at one seq agree: equal, or
// a message and the notice that took its place ([S-18-2]).
func sameEntry(a, b string) bool {
	if a == b {
		return true
	}
	fa, fb := strings.Fields(a), strings.Fields(b)
	if len(fa) < 2 || len(fb) < 2 || fa[1] != fb[1] {
		return false
	}
	return (fa[0] == "M" && fb[0] == "X") || (fa[0] == "X" && fb[0] == "M")
}

// revokesUnanswered resubmits, from an online device of the sender, each
// deletion with no answer yet; it reports how many there are.
func (s *sim) revokesUnanswered() int {
	n := 0
	for _, id := range sortedKeys(s.revokes) {
		rev := s.revokes[id]
		if rev.ok || rev.refused != 0 {
			continue
		}
		n++
		if s.revokePending(rev) {
			continue
		}
		for _, d := range rev.send.from.user.devices {
			if d.ep != nil {
				s.submitRevoke(d, rev)
				break
			}
		}
	}
	return n
}

// revokesUnsettled names a deletion still unanswered, for a failure.
func (s *sim) revokesUnsettled() string {
	for _, id := range sortedKeys(s.revokes) {
		if rev := s.revokes[id]; !rev.ok && rev.refused == 0 {
			return fmt.Sprintf("the deletion of %q (message %d) is unanswered (pending: %v)", rev.send.body, id, s.revokePending(rev))
		}
	}
	return ""
}

// revokePending reports whether rev waits for its answer on a connection
// that is still up; one asked on a connection that closed since is
// forgotten (its answer is lost).
func (s *sim) revokePending(rev *simRevoke) bool {
	for i := 0; i < len(s.pendingRevokes); i++ {
		p := s.pendingRevokes[i]
		if p.rev != rev {
			continue
		}
		if s.live(p.ep) {
			return true
		}
		s.pendingRevokes = append(s.pendingRevokes[:i], s.pendingRevokes[i+1:]...)
		i--
	}
	return false
}

// live reports whether ep is the connection of some device now.
func (s *sim) live(ep *endpoint) bool {
	for _, d := range s.devices {
		if d.ep == ep {
			return true
		}
	}
	return false
}

// checkRevokes verifies, at the end, that every device that had a deleted
// message got one notice after it.
func (s *sim) checkRevokes() {
	for _, id := range sortedKeys(s.revokes) {
		rev := s.revokes[id]
		if !rev.ok {
			continue
		}
		m := rev.send
		var users []*simUser
		if m.group == nil {
			users = append(users, m.to)
			if len(m.from.user.devices) > 1 {
				users = append(users, m.from.user)
			}
		} else {
			for u, v := range rev.stable {
				if m.group.state[u] == isMember && m.group.version[u] == v && (u != m.from.user || len(u.devices) > 1) {
					users = append(users, u)
				}
			}
		}
		for _, u := range users {
			for _, d := range u.devices {
				if d.count[id] > 0 && (d.revokes == nil || d.revokes.after[id] != 1) {
					got := 0
					if d.revokes != nil {
						got = d.revokes.after[id]
					}
					s.fail("%s had message %d (%q), deleted, and got %d notices after it", d.name, id, m.body, got)
				}
			}
		}
	}
}
