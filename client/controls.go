package client

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// Conversation controls (spec.md section 18).

// Revoke deletes, for everyone, the message id this user sent to user to
// ([S-18-1]): the recipient's devices that have not been sent it never
// get it, and every device of the recipient and of this user gets a
// Revoked event. It waits for the server's OK across reconnects; a
// repeat is harmless. Errors: REVOKE_EXPIRED (the message is older than
// the server allows, 48 hours by default), MESSAGE_NOT_FOUND,
// NOT_SENDER.
func (c *Client) Revoke(ctx context.Context, to, id uint64) error {
	if to == 0 || id == 0 {
		return fmt.Errorf("%w: revoke needs a recipient and a message id", ErrInvalid)
	}
	_, err := doAs[*pb.Ok](ctx, c, revokeRequest(to, 0, id))
	return err
}

// RevokeGroup is Revoke for a message this user sent to group; only a
// member may delete (NOT_MEMBER), and every member gets a Revoked event
// ([S-18-3]).
func (c *Client) RevokeGroup(ctx context.Context, group, id uint64) error {
	if group == 0 || id == 0 {
		return fmt.Errorf("%w: revoke needs a group and a message id", ErrInvalid)
	}
	_, err := doAs[*pb.Ok](ctx, c, revokeRequest(0, group, id))
	return err
}

func revokeRequest(to, group, id uint64) *request {
	return &request{kind: protocol.KindRevoke, body: func(rid uint32) proto.Message {
		return &pb.Revoke{Rid: rid, To: to, Group: group, Id: id}
	}}
}

// Revoked is a delete-for-everyone inbox entry ([S-18-2], [S-18-3]): the
// sender From deleted its message ID. The application deletes the
// message if it holds it from From in that conversation, shows in its
// place that it was deleted, and ignores a Revoked whose message it holds
// from another sender. It applies only the first Revoked for an ID: the
// same ID can come twice (once in place of the message, once after it),
// and a Revoked can come for a message this device never had
// ([S-18-4]).
type Revoked struct {
	// Seq is the entry's position in this user's inbox.
	Seq uint64
	// ID is the deleted message's id.
	ID uint64
	// Time is when the deleted message was sent (from ID).
	Time time.Time
	// From is the message's sender, who deleted it.
	From uint64
	// Group is the group of a group message; 0 for a 1:1 message.
	Group uint64
	// GSeq is this entry's place in the group's order; MessageGSeq the
	// deleted message's (equal when the entry took the message's place).
	GSeq, MessageGSeq uint64
	// To is, in the entry for this user's own devices, the recipient of
	// its deleted 1:1 message; 0 otherwise.
	To uint64
}

func (Revoked) event() {}

// handleControl applies a frame of the conversation controls: an entry
// or an answer. It reports false for a kind that is not one of them.
func (c *Client) handleControl(s *session, f codec.Frame) (bool, error) {
	var ev Event
	var seq uint64
	switch f.Kind {
	case protocol.KindBlockListResult:
		return true, handleAnswer(c, s, f.Body, &pb.BlockListResult{}, (*pb.BlockListResult).GetRid)
	case protocol.KindRevoked:
		var m pb.Revoked
		if err := codec.ParseProto(f.Body, &m); err != nil {
			return true, fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		seq, ev = m.Seq, Revoked{
			Seq: m.Seq, ID: m.Id, Time: protocol.MessageTime(m.Id), From: m.From,
			Group: m.Group, GSeq: m.Gseq, MessageGSeq: m.MessageGseq, To: m.To,
		}
	case protocol.KindBlocked:
		var m pb.Blocked
		if err := codec.ParseProto(f.Body, &m); err != nil {
			return true, fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		seq, ev = m.Seq, Blocked{Seq: m.Seq, User: m.User, Blocked: m.Blocked}
	case protocol.KindTimer:
		var m pb.Timer
		if err := codec.ParseProto(f.Body, &m); err != nil {
			return true, fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		seq, ev = m.Seq, TimerChanged{
			Seq: m.Seq, ID: m.Id, Time: protocol.MessageTime(m.Id), From: m.From, Peer: m.Peer,
			Group: m.Group, GSeq: m.Gseq, TTL: time.Duration(m.TtlS) * time.Second,
		}
	default:
		return false, nil
	}
	return true, c.handleEntry(s, seq, ev)
}

// Block blocks user for this account, every device of it ([S-18-5],
// [S-18-6]): user's 1:1 messages are answered as sent and never
// delivered, this user's presence is hidden from user, and typing between
// them is dropped; groups are not affected. The account's other devices
// get a Blocked event. Errors: TOO_MANY_BLOCKS beyond
// protocol.MaxBlocks. Blocking a user already blocked changes nothing.
func (c *Client) Block(ctx context.Context, user uint64) error {
	return c.block(ctx, protocol.KindBlock, user)
}

// Unblock ends a block of user ([S-18-5]).
func (c *Client) Unblock(ctx context.Context, user uint64) error {
	return c.block(ctx, protocol.KindUnblock, user)
}

func (c *Client) block(ctx context.Context, k protocol.Kind, user uint64) error {
	if user == 0 || user == c.User() {
		return fmt.Errorf("%w: block or unblock user %d", ErrInvalid, user)
	}
	_, err := doAs[*pb.Ok](ctx, c, &request{kind: k, body: func(rid uint32) proto.Message {
		if k == protocol.KindUnblock {
			return &pb.Unblock{Rid: rid, User: user}
		}
		return &pb.Block{Rid: rid, User: user}
	}})
	return err
}

// BlockList returns the users this account blocks, in the order it
// blocked them ([S-18-7]); a device asks once, then follows Blocked
// events.
func (c *Client) BlockList(ctx context.Context) ([]uint64, error) {
	m, err := doAs[*pb.BlockListResult](ctx, c, &request{kind: protocol.KindBlockList, body: func(rid uint32) proto.Message {
		return &pb.BlockList{Rid: rid}
	}})
	if err != nil {
		return nil, err
	}
	return m.Users, nil
}

// Blocked is an inbox entry for the account's devices: it blocked User,
// or unblocked it when Blocked is false ([S-18-7]). Every device of the
// account gets it when the account has more than one, the device that
// asked included.
type Blocked struct {
	// Seq is the entry's position in this user's inbox.
	Seq uint64
	// User is the user blocked or unblocked.
	User uint64
	// Blocked is true for a block, false for an unblock.
	Blocked bool
}

func (Blocked) event() {}

// SetTimer sets the disappearing-message timer of this user's
// conversation with peer ([S-18-8]): messages either of them sends from
// then on disappear ttl after they were sent ([S-18-10]); 0 turns it off.
// ttl is rounded down to whole seconds, at most protocol.MaxTimer. Both
// users' devices get a TimerChanged event. Errors: NOT_FOUND for a peer
// that does not exist.
func (c *Client) SetTimer(ctx context.Context, peer uint64, ttl time.Duration) error {
	if peer == 0 {
		return fmt.Errorf("%w: timer with user 0", ErrInvalid)
	}
	return c.setTimer(ctx, peer, 0, ttl)
}

// SetGroupTimer sets group's disappearing-message timer (admins only:
// NOT_ADMIN); every member gets a TimerChanged event in the group's
// order.
func (c *Client) SetGroupTimer(ctx context.Context, group uint64, ttl time.Duration) error {
	if group == 0 {
		return fmt.Errorf("%w: timer of group 0", ErrInvalid)
	}
	return c.setTimer(ctx, 0, group, ttl)
}

func (c *Client) setTimer(ctx context.Context, to, group uint64, ttl time.Duration) error {
	if ttl < 0 || ttl > protocol.MaxTimer*time.Second {
		return fmt.Errorf("%w: timer %v, want 0 to %v", ErrInvalid, ttl, protocol.MaxTimer*time.Second)
	}
	secs := uint32(ttl / time.Second)
	_, err := doAs[*pb.Ok](ctx, c, &request{kind: protocol.KindSetTimer, body: func(rid uint32) proto.Message {
		return &pb.SetTimer{Rid: rid, To: to, Group: group, TtlS: secs}
	}})
	return err
}

// TimerChanged is an inbox entry: a conversation's disappearing-message
// timer changed ([S-18-9]), the 1:1 conversation with Peer or Group's.
// Messages stored from then on carry it.
type TimerChanged struct {
	// Seq is the entry's position in this user's inbox.
	Seq uint64
	// ID is the server's id of the change; Time is when (from ID).
	ID   uint64
	Time time.Time
	// From is the user who set it.
	From uint64
	// Peer is the other user of the 1:1 conversation; 0 for a group.
	Peer uint64
	// Group is the group, GSeq the change's place in its order; 0 for a
	// 1:1 conversation.
	Group, GSeq uint64
	// TTL is the new timer; 0 when turned off.
	TTL time.Duration
}

func (TimerChanged) event() {}

// expiry returns when message id with a timer of ttl seconds expires;
// zero without a timer.
func expiry(id uint64, ttl uint32) time.Time {
	if ttl == 0 {
		return time.Time{}
	}
	return protocol.MessageTime(id).Add(time.Duration(ttl) * time.Second)
}

// Draft is a message to send with the fields of the conversation
// controls ([S-18-11]): a reply (any Type, Ref the message it answers), a
// reaction (CONTENT_REACTION, Ref the message, Body one emoji; an empty
// Body withdraws this user's reaction), an edit (CONTENT_EDIT, Ref this
// user's earlier message, Body its new content), or a forward (Forwarded
// the forwarded message's count plus one, no Ref). Exactly one of To and
// Group is set.
type Draft struct {
	To, Group uint64
	Body      []byte
	Type      pb.ContentType
	Ref       uint64
	Forwarded uint32
}

// SendDraft sends d as Send and SendGroup do, and waits for its outcome.
func (c *Client) SendDraft(ctx context.Context, d Draft) (Sent, error) {
	return c.sendWait(ctx, d.outgoing())
}

// SendDraftAsync is SendDraft without waiting, as SendAsync is Send
// without waiting.
func (c *Client) SendDraftAsync(d Draft, done func(Sent, error)) (cmid uint64, err error) {
	_, cmid, err = c.send(c.ctx, d.outgoing(), nil, done)
	return cmid, err
}

func (d Draft) outgoing() Outgoing {
	return Outgoing{To: d.To, Group: d.Group, Body: d.Body, Type: d.Type, Ref: d.Ref, Forwarded: d.Forwarded}
}

// validContent reports whether m's content may be sent: a body, but for a
// reaction, which withdraws one with none; a reference for a reaction or
// an edit ([S-18-12]).
func validContent(m Outgoing) bool {
	switch m.Type {
	case pb.ContentType_CONTENT_REACTION:
		return m.Ref != 0
	case pb.ContentType_CONTENT_EDIT:
		return m.Ref != 0 && len(m.Body) > 0
	}
	return len(m.Body) > 0
}

// Report is what a user reports to the server's operator ([S-18-13]):
// User, the Messages it sent (at least one, at most
// protocol.MaxReportMessages) in Group (0 for the 1:1 conversation), and
// the user's Reason.
type Report struct {
	User     uint64
	Group    uint64
	Messages []ReportedMessage
	Reason   string
}

// ReportedMessage is one reported message: its id and type, and the
// content this client shows for it, which only the client can reveal
// under end-to-end encryption ([S-18-14]).
type ReportedMessage struct {
	ID   uint64
	Type pb.ContentType
	Body []byte
}

// Report hands r to the server's operator and waits until it is durable
// in the operator's queue. Errors: RATE_LIMITED beyond the server's rate
// (10 reports per hour per account by default), returned rather than
// waited out (ServerError.RetryAfter says for how long). It is not
// repeated after a lost connection (ErrNoAnswer): the operator would read
// it twice.
func (c *Client) Report(ctx context.Context, r Report) error {
	if r.User == 0 || r.User == c.User() || len(r.Messages) == 0 || len(r.Messages) > protocol.MaxReportMessages ||
		len(r.Reason) > protocol.MaxReportReason {
		return fmt.Errorf("%w: a report names another user, 1 to %d of its messages and at most %d bytes of reason",
			ErrInvalid, protocol.MaxReportMessages, protocol.MaxReportReason)
	}
	m := &pb.Report{User: r.User, Group: r.Group, Reason: r.Reason}
	for _, rm := range r.Messages {
		if rm.ID == 0 || len(rm.Body) > protocol.MaxMessageBody {
			return fmt.Errorf("%w: reported message %d of %d bytes", ErrInvalid, rm.ID, len(rm.Body))
		}
		m.Messages = append(m.Messages, &pb.ReportedMessage{Id: rm.ID, Type: rm.Type, Body: bytes.Clone(rm.Body)})
	}
	_, err := doAs[*pb.Ok](ctx, c, &request{kind: protocol.KindReport, once: true, limitFinal: true, body: func(rid uint32) proto.Message {
		cp := proto.Clone(m).(*pb.Report)
		cp.Rid = rid
		return cp
	}})
	return err
}
