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
