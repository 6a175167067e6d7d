package storage

import (
	"encoding/binary"
	"errors"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// Delete for everyone (spec [S-18-1] to [S-18-3]).
//
// The shard that gave the message its id finds it through the message
// index (msgindex.go). A 1:1 message is then replaced, at its seq in the
// recipient's inbox, by the Revoked entry: the pump sends whatever the
// inbox holds at a seq, so a device that has not been sent the message
// gets the notice there instead, in order, with no gap. The notice is
// appended as well, so a device that had been sent the message learns of
// it after the message. A group message's body is
// stored once per destination shard and every member's inbox holds a
// reference to it: the deletion takes the group's next gseq, travels the
// group's path to each member's shard (the outbox, in order), replaces
// the body there by the notice (with the message's own gseq), so every
// reference not yet fetched resolves to it, and appends the notice (with
// the deletion's gseq) to each member.

// revokeEntry encodes the stored form of a Revoked entry.
func revokeEntry(r *pb.Revoked) ([]byte, error) {
	return appendProtoEntry([]byte{byte(protocol.KindRevoked)}, r)
}

// applyRevoke deletes a message for everyone, on the shard of its
// recipient (op.User) or of its group (op.Group), and answers Ok.
func (s *Shard) applyRevoke(op *Op) {
	if age := s.cfg.Now().Sub(protocol.MessageTime(op.UpTo)); age > s.cfg.RevokeLimit {
		s.replyError(op.Conn, protocol.CodeRevokeExpired, op.RID, 0)
		return
	}
	if op.Group != 0 {
		s.answerOK(op, s.revokeGroupMessage(op))
	} else {
		s.answerOK(op, s.revokeMessage(op))
	}
}

// answerOK answers request op after it ran: Ok when err is nil, nothing
// more when it was answered already (errAnswered), else INTERNAL, the
// cycle aborted.
func (s *Shard) answerOK(op *Op, err error) {
	switch {
	case errors.Is(err, errAnswered):
	case err != nil:
		s.abort(err)
		s.replyError(op.Conn, protocol.CodeInternal, op.RID, 0)
	default:
		start := len(s.out)
		s.out = codec.AppendOK(s.out, op.RID)
		s.reply(op.Conn, start)
	}
}

// errAnswered: the request was refused, and answered so.
var errAnswered = errors.New("storage: answered")

// revocable finds the message op deletes in the message index of owner
// and checks that op's user sent it. It answers op and returns
// errAnswered if not.
func (s *Shard) revocable(op *Op, kind byte, owner uint64) (msgRecord, error) {
	m, found, err := s.lookupMessage(kind, owner, op.UpTo)
	switch {
	case err != nil:
		return m, err
	case !found:
		s.replyError(op.Conn, protocol.CodeMessageNotFound, op.RID, 0)
		return m, errAnswered
	case m.From != op.From:
		s.replyError(op.Conn, protocol.CodeNotSender, op.RID, 0)
		return m, errAnswered
	}
	return m, nil
}

// revokeMessage deletes a 1:1 message on its recipient's shard
// ([S-18-2]); a message already deleted is left as it is.
func (s *Shard) revokeMessage(op *Op) error {
	id := op.UpTo
	u, err := s.loadUser(op.User)
	if err != nil {
		return err
	}
	m, err := s.revocable(op, msgToUser, op.User)
	if err != nil || m.Flags&msgRevoked != 0 {
		return err
	}
	notice, err := revokeEntry(&pb.Revoked{Id: id, From: op.From})
	if err != nil {
		return err
	}
	m.Flags |= msgRevoked
	s.indexMessage(msgToUser, op.User, id, m)
	if u != nil && m.Seq != 0 {
		s.revokeAt(u, m.Seq, notice)
	}
	if op.From != op.User {
		// The sender's other devices learn it too.
		own, err := revokeEntry(&pb.Revoked{Id: id, From: op.From, To: op.User})
		if err != nil {
			return err
		}
		s.appendEntry(op.From, own, FlagCompanions)
	}
	return nil
}

// revokeAt puts notice in place of the entry at seq of u's inbox, if it
// is still there, and appends notice, for the devices that were sent the
// entry ([S-18-2]). The server cannot tell that none was: a cursor write
// may be lost in a crash (it is not a promise, shard_sync.go), so a
// device may hold entries beyond the cursor the shard remembers.
func (s *Shard) revokeAt(u *user, seq uint64, notice []byte) {
	if seq > u.rec.Deleted && seq <= u.rec.Head {
		s.replaceEntry(u, seq, notice)
	}
	s.appendLocal(u, notice)
}

// replaceEntry sets the entry at seq of u's inbox, which holds one, to
// entry. Every device that fetches seq from now on gets entry instead.
func (s *Shard) replaceEntry(u *user, seq uint64, entry []byte) {
	k := inboxKey(nil, u.id, seq)
	old, err := s.get(k)
	if err != nil || old == nil {
		return // an error aborts the cycle; nil: gone already
	}
	if len(old) == 17 && old[0] == kindGroupRef {
		s.releaseBody(binary.BigEndian.Uint64(old[1:]), binary.BigEndian.Uint64(old[9:]))
	}
	// An inbox key is deleted with a single delete, which removes one Set
	// only (deleteAcknowledged): single-deleting the old value before
	// setting the new one leaves one Set for it, as Pebble requires.
	s.batch.SingleDelete(k, nil)
	s.batch.Set(k, entry, nil)
	s.promise() // the device that fetches seq must not see the old entry again
	u.inboxBytes += int64(len(entry) - len(old))
	u.recent.replace(seq, entry)
	s.touch(u)
}

// revokeGroupMessage deletes a group message on the group's shard: the
// deletion takes the group's next gseq and goes to every member in the
// group's order ([S-18-3]); a message already deleted is left as it is.
func (s *Shard) revokeGroupMessage(op *Op) error {
	id := op.UpTo
	g, err := s.loadGroup(op.Group)
	if err != nil {
		return err
	}
	if g == nil || g.member(op.From) == nil {
		s.replyError(op.Conn, protocol.CodeNotMember, op.RID, 0)
		return errAnswered
	}
	m, err := s.revocable(op, msgToGroup, op.Group)
	if err != nil || m.Flags&msgRevoked != 0 {
		return err
	}
	notice, err := revokeEntry(&pb.Revoked{Id: id, From: op.From, Group: g.id, Gseq: g.rec.GSeq + 1, MessageGseq: m.Seq})
	if err != nil {
		return err
	}
	m.Flags |= msgRevoked
	s.indexMessage(msgToGroup, op.Group, id, m)
	g.rec.GSeq++
	s.batch.Set(groupKey(nil, g.id), g.rec.encode(nil), nil)
	s.deliver(delivery{users: g.users(), group: g.id, gseq: g.rec.GSeq, entry: notice})
	return nil
}

// applyGroupRevokeDelivery applies a group message's deletion on a
// member's shard: the message's body, which the members' references
// resolve to, becomes the notice, and each member's inbox gets the notice
// ([S-18-3]).
func (s *Shard) applyGroupRevokeDelivery(d *delivery) bool {
	var r pb.Revoked
	if err := codec.ParseProto(d.entry[1:], &r); err != nil {
		s.log.Error("group deletion cannot be decoded", "group", d.group, "gseq", d.gseq, "err", err)
		return false
	}
	bk := bodyKey(nil, tagBody, d.group, r.MessageGseq)
	body, err := s.get(bk)
	if err != nil {
		return false
	}
	if body != nil {
		// In place of the message, the notice keeps the message's gseq:
		// each member's group entries stay in gseq order ([S-16-6]).
		r.Seq, r.Gseq = 0, r.MessageGseq
		inPlace, err := revokeEntry(&r)
		if err != nil {
			s.abort(err)
			return false
		}
		s.batch.Set(bk, inPlace, nil)
		// References appended in this cycle keep the old body in memory
		// for the pump: it must read the notice instead.
		for _, u := range s.touched {
			u.recent.forgetBody(d.group, r.MessageGseq)
		}
	}
	for _, id := range d.users {
		u, err := s.loadUser(id)
		if err != nil {
			return false
		}
		if u == nil || (id == r.From && u.activeDevices() < 2) {
			continue // gone, or the sender with no other device to tell
		}
		s.appendLocal(u, d.entry)
	}
	return true
}
