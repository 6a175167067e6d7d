package server

import (
	"crypto/rand"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
	"github.com/parley-im/parley/storage"
)

// typingPerSecond and typingBurst limit typing indicators per connection;
// the excess is dropped ([S-15-8]).
const (
	typingPerSecond = 2
	typingBurst     = 5
)

// request submits op as a request with rid and answers OVERLOADED when
// the shard refuses it.
func (c *conn) request(op storage.Op, rid uint32, w *buffer) verdict {
	if !c.submit(op) {
		w.b = codec.AppendError(w.b, protocol.CodeOverloaded, rid, 0, "", retryAfterBusyMS)
	}
	return verdict{}
}

// decode parses body into m, failing the connection if it is malformed.
func (c *conn) decode(body []byte, m proto.Message, w *buffer) (verdict, bool) {
	if err := codec.ParseProto(body, m); err != nil {
		return c.fail(w, protocol.CodeMalformedFrame), false
	}
	return verdict{}, true
}

// handleTyping relays a typing indicator, never storing it.
func (c *conn) handleTyping(body []byte, w *buffer) verdict {
	var m pb.Typing
	if v, ok := c.decode(body, &m, w); !ok {
		return v
	}
	if (m.To == 0) == (m.Group == 0) {
		return verdict{} // nothing sensible to relay; typing has no answer
	}
	now := c.srv.cfg.Now().UnixNano()
	c.typingTokens = min(typingBurst, c.typingTokens+float64(now-c.typingAt)/1e9*typingPerSecond)
	c.typingAt = now
	if c.typingTokens < 1 {
		return verdict{}
	}
	c.typingTokens--
	_ = c.srv.cfg.Router.Submit(storage.Op{Kind: storage.OpTyping, User: m.To, Group: m.Group, From: c.user, TypingState: m.State})
	return verdict{}
}

// handlePresenceSubscribe replaces the connection's presence
// subscriptions and records them as the user's contacts.
func (c *conn) handlePresenceSubscribe(body []byte, w *buffer) verdict {
	var m pb.PresenceSubscribe
	if v, ok := c.decode(body, &m, w); !ok {
		return v
	}
	if len(m.Users) > protocol.MaxPresenceSubscriptions {
		refuse(w, protocol.CodeInvalidArgument, m.Rid, 0)
		return verdict{}
	}
	want := make(map[uint64]bool, len(m.Users))
	var users []uint64
	for _, u := range m.Users {
		if u != 0 && u != c.user && !want[u] {
			want[u] = true
			users = append(users, u)
		}
	}
	r := c.srv.cfg.Router
	for _, u := range c.watching {
		if !want[u] {
			_ = r.Submit(storage.Op{Kind: storage.OpUnwatch, User: u, Conn: c.ref})
		}
	}
	had := make(map[uint64]bool, len(c.watching))
	for _, u := range c.watching {
		had[u] = true
	}
	for _, u := range users {
		if !had[u] {
			_ = r.Submit(storage.Op{Kind: storage.OpWatch, User: u, From: c.user, Conn: c.ref})
		}
	}
	c.watching = users
	return c.request(storage.Op{Kind: storage.OpSubscribe, User: c.user, Device: c.device, Users: users, RID: m.Rid, Conn: c.ref}, m.Rid, w)
}

// unwatchAll ends the connection's presence subscriptions; OnClose calls it.
func (c *conn) unwatchAll() {
	for _, u := range c.watching {
		_ = c.srv.cfg.Router.Submit(storage.Op{Kind: storage.OpUnwatch, User: u, Conn: c.ref})
	}
	c.watching = nil
}

// handleSetPrivacy sets who may see the user's presence.
func (c *conn) handleSetPrivacy(body []byte, w *buffer) verdict {
	var m pb.SetPrivacy
	if v, ok := c.decode(body, &m, w); !ok {
		return v
	}
	if _, ok := pb.Visibility_name[int32(m.Presence)]; !ok {
		refuse(w, protocol.CodeInvalidArgument, m.Rid, 0)
		return verdict{}
	}
	return c.request(storage.Op{Kind: storage.OpSetPrivacy, User: c.user, Visibility: m.Presence, RID: m.Rid, Conn: c.ref}, m.Rid, w)
}

// handleLinkRequest gives a new companion device a link code to show; the
// connection then waits, unauthenticated, for Linked ([S-9-12]).
func (c *conn) handleLinkRequest(body []byte, w *buffer) verdict {
	var m pb.LinkRequest
	if v, ok := c.decode(body, &m, w); !ok {
		return v
	}
	if m.Version != protocol.Version {
		return c.fail(w, protocol.CodeUnsupportedVersion)
	}
	if len(m.DeviceName) > protocol.MaxDeviceName || !utf8.ValidString(m.DeviceName) {
		refuse(w, protocol.CodeInvalidArgument, m.Rid, 0)
		return verdict{}
	}
	// [S-9-12] a companion needs one code, a few if the user is slow: each
	// holds a place on a shard for two minutes, so one connection may not
	// ask for many.
	if c.linkRequests++; c.linkRequests > maxLinkRequestsPerConn {
		return c.rateLimited(w, LimitLinksPerConn, m.Rid, 0, 0)
	}
	if c.ip != nil {
		if wait := c.srv.links.take(c.ip.addr, 1, c.srv.cfg.Now()); wait > 0 {
			return c.rateLimited(w, LimitLinksPerIP, m.Rid, 0, wait)
		}
	}
	var random [10]byte
	_, _ = rand.Read(random[:])
	if !c.submit(storage.Op{Kind: storage.OpLinkRequest, Code: storage.NewLinkCode(random), Name: m.DeviceName, RID: m.Rid, Conn: c.ref}) {
		w.b = codec.AppendError(w.b, protocol.CodeOverloaded, m.Rid, 0, "", retryAfterBusyMS)
		return verdict{}
	}
	c.linking.Store(true)
	return verdict{}
}

// maxLinkRequestsPerConn is how many LINK_REQUESTs one connection may send.
const maxLinkRequestsPerConn = 3

// handleLinkApprove approves a companion's link code from this device.
func (c *conn) handleLinkApprove(body []byte, w *buffer) verdict {
	var m pb.LinkApprove
	if v, ok := c.decode(body, &m, w); !ok {
		return v
	}
	if _, ok := storage.LinkCodeSlot(m.Code); !ok {
		refuse(w, protocol.CodeLinkExpired, m.Rid, 0)
		return verdict{}
	}
	return c.request(storage.Op{Kind: storage.OpLinkApprove, Code: m.Code, User: c.user, Device: c.device, RID: m.Rid, Conn: c.ref}, m.Rid, w)
}

// handleDevices lists the account's devices.
func (c *conn) handleDevices(body []byte, w *buffer) verdict {
	var m pb.Devices
	if v, ok := c.decode(body, &m, w); !ok {
		return v
	}
	return c.request(storage.Op{Kind: storage.OpDevices, User: c.user, Device: c.device, RID: m.Rid, Conn: c.ref}, m.Rid, w)
}

// handleRevokeDevice revokes a device of the account.
func (c *conn) handleRevokeDevice(body []byte, w *buffer) verdict {
	var m pb.RevokeDevice
	if v, ok := c.decode(body, &m, w); !ok {
		return v
	}
	return c.request(storage.Op{Kind: storage.OpRevokeDevice, User: c.user, Device: c.device, Target: m.Device, RID: m.Rid, Conn: c.ref}, m.Rid, w)
}

// validGroupName reports whether name is 1–100 bytes of UTF-8.
func validGroupName(name string) bool {
	return name != "" && len(name) <= protocol.MaxGroupName && utf8.ValidString(name)
}

// handleGroupCreate creates a group on the creator's shard.
func (c *conn) handleGroupCreate(body []byte, w *buffer) verdict {
	var m pb.GroupCreate
	if v, ok := c.decode(body, &m, w); !ok {
		return v
	}
	if !validGroupName(m.Name) || len(m.Avatar) > protocol.MaxAvatar {
		refuse(w, protocol.CodeInvalidArgument, m.Rid, 0)
		return verdict{}
	}
	if len(m.Members) >= protocol.MaxGroupMembers {
		refuse(w, protocol.CodeGroupFull, m.Rid, 0)
		return verdict{}
	}
	return c.request(storage.Op{Kind: storage.OpGroupCreate, User: c.user, Name: m.Name, Body: m.Avatar, Users: m.Members, RID: m.Rid, Conn: c.ref}, m.Rid, w)
}

// handleGroupUpdate changes a group on its shard.
func (c *conn) handleGroupUpdate(body []byte, w *buffer) verdict {
	var m pb.GroupUpdate
	if v, ok := c.decode(body, &m, w); !ok {
		return v
	}
	bad := m.Group == 0 || len(m.Members) > protocol.MaxGroupMembers
	switch m.Op {
	case pb.GroupOp_GROUP_OP_ADD, pb.GroupOp_GROUP_OP_REMOVE, pb.GroupOp_GROUP_OP_PROMOTE, pb.GroupOp_GROUP_OP_DEMOTE:
		bad = bad || len(m.Members) == 0
	case pb.GroupOp_GROUP_OP_RENAME:
		bad = bad || !validGroupName(m.Name)
	case pb.GroupOp_GROUP_OP_SET_AVATAR:
		bad = bad || len(m.Avatar) > protocol.MaxAvatar
	case pb.GroupOp_GROUP_OP_LEAVE:
	default:
		bad = true
	}
	if bad {
		refuse(w, protocol.CodeInvalidArgument, m.Rid, 0)
		return verdict{}
	}
	return c.request(storage.Op{Kind: storage.OpGroupUpdate, Group: m.Group, User: c.user, GroupOp: m.Op,
		Users: m.Members, Name: m.Name, Body: m.Avatar, RID: m.Rid, Conn: c.ref}, m.Rid, w)
}

// handleGroupGet asks the group's shard for its state.
func (c *conn) handleGroupGet(body []byte, w *buffer) verdict {
	var m pb.GroupGet
	if v, ok := c.decode(body, &m, w); !ok {
		return v
	}
	if m.Group == 0 {
		refuse(w, protocol.CodeInvalidArgument, m.Rid, 0)
		return verdict{}
	}
	return c.request(storage.Op{Kind: storage.OpGroupGet, Group: m.Group, User: c.user, RID: m.Rid, Conn: c.ref}, m.Rid, w)
}

// handleGroupList asks the user's shard for its groups.
func (c *conn) handleGroupList(body []byte, w *buffer) verdict {
	var m pb.GroupList
	if v, ok := c.decode(body, &m, w); !ok {
		return v
	}
	return c.request(storage.Op{Kind: storage.OpGroupList, User: c.user, RID: m.Rid, Conn: c.ref}, m.Rid, w)
}
