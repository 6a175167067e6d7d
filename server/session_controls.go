package server

import (
	"errors"
	"time"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
	"github.com/parley-im/parley/reports"
	"github.com/parley-im/parley/storage"
)

// ReportService is the operator's queue of users' reports (spec.md
// section 18.5); reports.Queue implements it. Take must not block: it
// queues r and calls done once r is durable (nil) or lost (an error), from
// any goroutine; or it refuses r at once, calling nothing, with a
// *reports.RateLimitedError or another error.
type ReportService interface {
	Take(r reports.Report, done func(error)) error
}

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
		return c.request(storage.Op{Kind: storage.OpBlockList, User: c.user, RID: m.Rid, Conn: c.ref}, m.Rid, w), true
	case protocol.KindSetTimer:
		return c.handleSetTimer(body, w), true
	case protocol.KindReport:
		return c.handleReport(body, w), true
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
		UpTo: m.Id, RID: m.Rid, Conn: c.ref}, m.Rid, w)
}

// handleBlock blocks or unblocks a user on the account's shard
// ([S-18-5]): never user 0 or the account itself.
func (c *conn) handleBlock(kind storage.OpKind, rid uint32, user uint64, w *buffer) verdict {
	if user == 0 || user == c.user {
		refuse(w, protocol.CodeInvalidArgument, rid, 0)
		return verdict{}
	}
	return c.request(storage.Op{Kind: kind, User: c.user, Peer: user, RID: rid, Conn: c.ref}, rid, w)
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
	return c.request(storage.Op{Kind: storage.OpSetTimer, User: m.To, Group: m.Group, From: c.user, TTL: m.TtlS, RID: m.Rid, Conn: c.ref}, m.Rid, w)
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

// handleReport hands a report to the operator's queue ([S-18-13]), which
// answers Ok once it is durable.
func (c *conn) handleReport(body []byte, w *buffer) verdict {
	var m pb.Report
	if v, ok := c.decode(body, &m, w); !ok {
		return v
	}
	if !validReport(&m, c.user) {
		refuse(w, protocol.CodeInvalidArgument, m.Rid, 0)
		return verdict{}
	}
	svc := c.srv.cfg.Reports
	if svc == nil {
		refuse(w, protocol.CodeInternal, m.Rid, 0) // a server with nowhere to put them
		return verdict{}
	}
	r := reports.Report{Reporter: c.user, Device: c.device, User: m.User, Group: m.Group, Reason: m.Reason}
	for _, rm := range m.Messages {
		typ := ""
		if rm.Type != pb.ContentType_CONTENT_TEXT {
			typ = rm.Type.String()
		}
		r.Messages = append(r.Messages, reports.NewMessage(rm.Id, typ, rm.Body))
	}
	rid := m.Rid
	c.pending.Add(1)
	err := svc.Take(r, func(err error) {
		if err != nil {
			c.Reply(codec.AppendError(nil, protocol.CodeInternal, rid, 0, "", 0))
			return
		}
		c.Reply(codec.AppendOK(nil, rid))
	})
	if err == nil {
		return verdict{}
	}
	c.pending.Add(-1)
	var rl *reports.RateLimitedError
	if errors.As(err, &rl) {
		w.b = codec.AppendError(w.b, protocol.CodeRateLimited, rid, 0, "", uint32((rl.Wait+time.Millisecond-1)/time.Millisecond))
	} else {
		w.b = codec.AppendError(w.b, protocol.CodeOverloaded, rid, 0, "", retryAfterBusyMS)
	}
	return verdict{}
}

// validReport reports whether a report of user's may be taken
// ([S-18-13]): it names another user and 1 to MaxReportMessages messages,
// each with an id and a body within bounds, and a short reason (UTF-8,
// which decoding checked).
func validReport(m *pb.Report, user uint64) bool {
	if m.User == 0 || m.User == user || len(m.Messages) == 0 || len(m.Messages) > protocol.MaxReportMessages ||
		len(m.Reason) > protocol.MaxReportReason {
		return false
	}
	for _, rm := range m.Messages {
		if rm.Id == 0 || len(rm.Body) > protocol.MaxMessageBody {
			return false
		}
	}
	return true
}
