package server

import (
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
	"github.com/parley-im/parley/storage"
)

// The conversation controls (spec.md section 18): each request is checked
// here for what needs no state and carried out on the shard that owns it.

// handleControl dispatches the frames of the conversation controls. It
// reports false for a kind that is not one of them.
func (c *conn) handleControl(k protocol.Kind, body []byte, w *buffer) (verdict, bool) {
	switch k {
	case protocol.KindRevoke:
		return c.handleRevoke(body, w), true
	case protocol.KindBlock:
		var m pb.Block
		if v, ok := c.decode(body, &m, w); !ok {
			return v, true
		}
		return c.handleBlock(storage.OpBlock, m.Rid, m.User, w), true
	case protocol.KindUnblock:
		var m pb.Unblock
		if v, ok := c.decode(body, &m, w); !ok {
			return v, true
		}
		return c.handleBlock(storage.OpUnblock, m.Rid, m.User, w), true
	case protocol.KindBlockList:
		var m pb.BlockList
		if v, ok := c.decode(body, &m, w); !ok {
			return v, true
		}
		return c.request(storage.Op{Kind: storage.OpBlockList, User: c.user, RID: m.Rid, EP: c}, m.Rid, w), true
	case protocol.KindSetTimer:
		return c.handleSetTimer(body, w), true
	}
	return verdict{}, false
}

// handleRevoke deletes a message for everyone on the shard of its
// recipient or of its group ([S-18-1]).
func (c *conn) handleRevoke(body []byte, w *buffer) verdict {
	var m pb.Revoke
	if v, ok := c.decode(body, &m, w); !ok {
		return v
	}
	if m.Id == 0 || (m.To == 0) == (m.Group == 0) {
		refuse(w, protocol.CodeInvalidArgument, m.Rid, 0)
		return verdict{}
	}
	return c.request(storage.Op{Kind: storage.OpRevoke, User: m.To, Group: m.Group, From: c.user, FromDevice: c.device,
		UpTo: m.Id, RID: m.Rid, EP: c}, m.Rid, w)
}

// handleBlock blocks or unblocks a user on the account's shard
// ([S-18-5]): never user 0 or the account itself.
func (c *conn) handleBlock(kind storage.OpKind, rid uint32, user uint64, w *buffer) verdict {
	if user == 0 || user == c.user {
		refuse(w, protocol.CodeInvalidArgument, rid, 0)
		return verdict{}
	}
	return c.request(storage.Op{Kind: kind, User: c.user, Peer: user, RID: rid, EP: c}, rid, w)
}

// handleSetTimer sets a conversation's disappearing-message timer on the
// shard of the other user or of the group ([S-18-8]).
func (c *conn) handleSetTimer(body []byte, w *buffer) verdict {
	var m pb.SetTimer
	if v, ok := c.decode(body, &m, w); !ok {
		return v
	}
	if (m.To == 0) == (m.Group == 0) || m.TtlS > protocol.MaxTimer {
		refuse(w, protocol.CodeInvalidArgument, m.Rid, 0)
		return verdict{}
	}
	return c.request(storage.Op{Kind: storage.OpSetTimer, User: m.To, Group: m.Group, From: c.user, TTL: m.TtlS, RID: m.Rid, EP: c}, m.Rid, w)
}

// validContent reports whether a SEND's content may be stored: a body,
// but for a reaction, which may withdraw one with none; and a reference
// for a reaction or an edit ([S-18-11], [S-18-12]).
func validContent(typ pb.ContentType, bodyLen int, ref uint64) bool {
	switch typ {
	case pb.ContentType_CONTENT_REACTION:
		return ref != 0
	case pb.ContentType_CONTENT_EDIT:
		return ref != 0 && bodyLen > 0
	}
	return bodyLen > 0
}
