package storage

import (
	"crypto/sha256"
	"crypto/subtle"

	"github.com/parley-im/parley/analytics"
	"github.com/parley-im/parley/protocol"
)

// applyLogin authenticates a device and starts its stream.
func (s *Shard) applyLogin(op *Op) {
	u, err := s.loadUser(op.User)
	if err != nil {
		s.log.Error("login: load user", "user", op.User, "err", err)
		s.effects = append(s.effects, effect{kind: effFail, conn: op.Conn, code: protocol.CodeInternal})
		return
	}
	var d *device
	if u != nil {
		d = u.device(op.Device)
	}
	if d == nil || !credentialMatches(d.rec.CredHash, op.Credential) {
		s.effects = append(s.effects, effect{kind: effFail, conn: op.Conn, code: protocol.CodeAuthFailed})
		return
	}
	if d.rec.Revoked {
		s.effects = append(s.effects, effect{kind: effFail, conn: op.Conn, code: protocol.CodeDeviceRevoked})
		return
	}
	if d.sess != nil {
		s.effects = append(s.effects, effect{kind: effClose, conn: d.sess.conn, code: protocol.CodeSessionReplaced})
		s.endSession(u, d)
	}
	// [S-8-7] resume from the later of the stored and the client's cursor.
	if c := min(op.Seq, u.rec.Head); c > d.cursor {
		s.advanceCursor(u, d, c)
	}
	d.sess = &session{conn: op.Conn, device: d.id, sent: max(d.cursor, u.rec.Deleted)}
	s.pushOnline(u, d) // [S-19-4] nothing is owed to a device online
	u.recent.start(u.rec.Head)
	if u.live++; u.live == 1 {
		s.presenceChanged(u)
	}
	s.emit(analytics.Event{Type: analytics.TypeLogin, User: u.id, Device: d.id})
	s.effectWith(effAuthenticated, op.Conn, effectMore{session: Session{
		User: u.id, Device: d.id, Cursor: d.sess.sent, Window: uint32(s.cfg.Window), MaxCMID: d.rec.MaxCMID,
	}})
	s.touch(u)
}

// applyLogout ends the session of a connection that closed, and lowers
// its order barriers here. A logout with Device 0 only lowers them: the
// server sends one to each other shard the connection sent a SEND to,
// where a refusal may have raised a barrier ([S-8-13], shard_order.go).
func (s *Shard) applyLogout(op *Op) {
	if s.barriers.Len() > 0 {
		s.dropBarriers(func(r ConnRef) bool { return r == op.Conn })
	}
	if op.Device == 0 {
		return
	}
	u := s.users[op.User]
	if u == nil && op.CMID > 0 {
		u, _ = s.loadUser(op.User)
	}
	if u == nil {
		return
	}
	d := u.device(op.Device)
	if d == nil {
		return
	}
	if op.CMID > d.rec.MaxCMID {
		d.rec.MaxCMID = op.CMID
		s.batch.Set(deviceKey(nil, tagDevice, u.id, d.id), d.rec.encode(nil), nil)
	}
	if d.sess != nil && d.sess.conn == op.Conn {
		s.endSession(u, d)
	}
}

// applyConnGone ends the sessions and presence watches of the
// connections of node op.Conn.Node up to generation op.Conn.Gen, and
// closes them with SHUTTING_DOWN: should the node still serve them (it
// left the cluster's membership while alive), their clients reconnect and
// log in again rather than wait on a session that no longer exists. The
// users in memory are all that can hold a session. Then it kicks the
// outbox (kickOutbox): what the node's shards had not confirmed goes
// again now, not after a backoff of up to 30 s.
func (s *Shard) applyConnGone(op *Op) {
	gone := func(r ConnRef) bool { return r.Node == op.Conn.Node && r.Gen <= op.Conn.Gen && !r.IsZero() }
	s.dropBarriers(gone)
	for _, u := range s.users {
		for _, d := range u.devices {
			if d.sess != nil && gone(d.sess.conn) {
				s.effects = append(s.effects, effect{kind: effClose, conn: d.sess.conn, code: protocol.CodeShuttingDown})
				s.endSession(u, d)
			}
		}
	}
	for user, ws := range s.watchers {
		kept := ws[:0]
		for _, w := range ws {
			if !gone(w.conn) {
				kept = append(kept, w)
			}
		}
		if len(kept) == 0 {
			delete(s.watchers, user)
		} else {
			s.watchers[user] = kept
		}
	}
	s.kickOutbox(s.cfg.Now())
}

// endSession forgets d's live connection; the user's last seen is now if
// it was the last.
func (s *Shard) endSession(u *user, d *device) {
	d.sess = nil
	if u.live--; u.live == 0 {
		u.recent.stop()
		u.rec.LastSeenMS = uint64(s.cfg.Now().UnixMilli())
		s.markDirty(u)
		s.presenceChanged(u)
	}
}

// credentialMatches compares a presented credential with the stored hash
// in constant time.
func credentialMatches(hash, credential []byte) bool {
	if len(credential) != protocol.CredentialLen || len(hash) != sha256.Size {
		return false
	}
	sum := sha256.Sum256(credential)
	return subtle.ConstantTimeCompare(sum[:], hash) == 1
}
