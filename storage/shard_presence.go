package storage

import (
	"time"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

const (
	// presenceThrottle is the least time between two presence
	// notifications for one user: a flapping connection does not flood
	// its watchers ([S-15-4]).
	presenceThrottle = time.Second
	// maxWatchers bounds the connections watching one user.
	maxWatchers = 4096
)

// watcher is a connection subscribed to a user's presence.
type watcher struct {
	conn ConnRef
	user uint64 // who is watching, for the privacy check
}

// applySubscribe records the contacts of one device: the users it
// subscribes to. A user's contacts are those of all its devices
// ([S-15-2]). The server sends the watches themselves to the targets'
// shards.
func (s *Shard) applySubscribe(op *Op) {
	if !s.roomFor(op) {
		return
	}
	u, err := s.loadUser(op.User)
	if err != nil || u == nil {
		s.replyError(op.Conn, protocol.CodeInternal, op.RID, 0)
		return
	}
	lo := contactKey(nil, u.id, op.Device, 0)
	s.batch.DeleteRange(lo, prefixEnd(lo[:len(lo)-8]), nil)
	for _, c := range op.Users {
		s.batch.Set(contactKey(nil, u.id, op.Device, c), nil, nil)
	}
	start := len(s.out)
	s.out = codec.AppendOK(s.out, op.RID)
	s.reply(op.Conn, start)
}

// applyWatch subscribes a connection to a user's presence and tells it the
// current state if the user's privacy allows.
func (s *Shard) applyWatch(op *Op) {
	u, err := s.loadUser(op.User)
	if err != nil || u == nil {
		return
	}
	ws := s.watchers[u.id]
	for _, w := range ws {
		if w.conn == op.Conn {
			return
		}
	}
	if len(ws) >= maxWatchers {
		return
	}
	s.watchers[u.id] = append(ws, watcher{conn: op.Conn, user: op.From})
	s.postPresence(u, watcher{conn: op.Conn, user: op.From})
}

// applyUnwatch removes a connection's subscription to a user.
func (s *Shard) applyUnwatch(op *Op) {
	ws := s.watchers[op.User]
	for i, w := range ws {
		if w.conn == op.Conn {
			ws = append(ws[:i], ws[i+1:]...)
			break
		}
	}
	if len(ws) == 0 {
		delete(s.watchers, op.User)
	} else {
		s.watchers[op.User] = ws
	}
}

// applySetPrivacy sets who may see a user's presence and tells the
// watchers what they may see now.
func (s *Shard) applySetPrivacy(op *Op) {
	u, err := s.loadUser(op.User)
	if err != nil || u == nil {
		s.replyError(op.Conn, protocol.CodeInternal, op.RID, 0)
		return
	}
	u.rec.Visibility = uint8(op.Visibility)
	s.markDirty(u)
	start := len(s.out)
	s.out = codec.AppendOK(s.out, op.RID)
	s.reply(op.Conn, start)
	s.presenceChanged(u)
}

// visible reports whether watcher may see u's presence ([S-15-5]): never
// when u blocks watcher ([S-18-6]).
func (s *Shard) visible(u *user, watcher uint64) bool {
	if s.blocks(u, watcher) {
		return false
	}
	switch pb.Visibility(u.rec.Visibility) {
	case pb.Visibility_VISIBILITY_EVERYONE:
		return true
	case pb.Visibility_VISIBILITY_CONTACTS:
		for _, d := range u.devices {
			if d.rec.Revoked {
				continue
			}
			if v, err := s.get(contactKey(nil, u.id, d.id, watcher)); err == nil && v != nil {
				return true
			}
		}
		return false
	}
	return watcher == u.id
}

// postPresence tells one watcher u's presence, or nothing but "offline,
// never seen" if u's privacy hides it.
func (s *Shard) postPresence(u *user, w watcher) {
	p := pb.Presence{User: u.id}
	if s.visible(u, w.user) {
		p.Online = u.live > 0
		if !p.Online {
			p.LastSeenMs = u.rec.LastSeenMS
		}
	}
	start := len(s.out)
	out, err := codec.AppendProto(s.out, protocol.KindPresence, &p)
	if err != nil {
		return
	}
	s.out = out
	s.post(w.conn, start)
}

// presenceChanged notifies u's watchers now, or at the end of the throttle
// window if u changed a moment ago.
func (s *Shard) presenceChanged(u *user) {
	if len(s.watchers[u.id]) == 0 {
		return
	}
	now := s.cfg.Now()
	if now.Sub(u.presenceAt) < presenceThrottle {
		s.presencePending[u.id] = struct{}{}
		return
	}
	u.presenceAt = now
	for _, w := range s.watchers[u.id] {
		s.postPresence(u, w)
	}
}

// flushPresence sends the notifications the throttle held back.
func (s *Shard) flushPresence(now time.Time) {
	for id := range s.presencePending {
		u := s.users[id]
		if u == nil {
			delete(s.presencePending, id)
			continue
		}
		if now.Sub(u.presenceAt) >= presenceThrottle {
			delete(s.presencePending, id)
			s.presenceChanged(u)
		}
	}
}

// applyTyping relays a typing indicator to the live devices of its target,
// or, for a group, to every member's shard. Nothing is stored ([S-15-7]).
func (s *Shard) applyTyping(op *Op) {
	if op.User != 0 && op.Group == 0 && op.Flags&FlagTypingChecked == 0 {
		s.typingFrom(op) // on the sender's shard: its blocks ([S-18-6])
		return
	}
	if op.User == 0 {
		g, err := s.loadGroup(op.Group)
		if err != nil || g == nil || g.member(op.From) == nil {
			return
		}
		for _, m := range g.order {
			if m.user != op.From {
				s.effectWith(effForward, ConnRef{}, effectMore{op: Op{
					Kind: OpTyping, User: m.user, From: op.From, Group: op.Group, TypingState: op.TypingState,
					Flags: FlagTypingChecked,
				}})
			}
		}
		return
	}
	u := s.users[op.User] // not in memory: not online, nobody to tell
	if u == nil || u.live == 0 || (op.Group == 0 && s.blocks(u, op.From)) {
		return
	}
	start := len(s.out)
	out, err := codec.AppendProto(s.out, protocol.KindIsTyping, &pb.IsTyping{From: op.From, Group: op.Group, State: op.TypingState})
	if err != nil {
		return
	}
	s.out = out
	for _, d := range u.devices {
		if d.sess != nil {
			s.effects = append(s.effects, effect{kind: effPost, conn: d.sess.conn, start: start, end: len(s.out)})
		}
	}
}
