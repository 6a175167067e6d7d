package client

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

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

// controlEntry turns an entry of the conversation controls into its
// event; ok is false for a kind that is not one of them.
func controlEntry(k protocol.Kind, body []byte) (seq uint64, ev Event, ok bool, err error) {
	switch k {
	case protocol.KindRevoked:
		var m pb.Revoked
		if err := proto.Unmarshal(body, &m); err != nil {
			return 0, nil, true, err
		}
		return m.Seq, Revoked{
			Seq: m.Seq, ID: m.Id, Time: protocol.MessageTime(m.Id), From: m.From,
			Group: m.Group, GSeq: m.Gseq, MessageGSeq: m.MessageGseq, To: m.To,
		}, true, nil
	}
	return 0, nil, false, nil
}
