package storage

import (
	"fmt"

	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// EncodeOp returns op as the pb.NodeOp a node link carries
// (protocol/node.proto). The message aliases op's slices and messages
// (Body, Users, Keys, Envelopes' bodies …): marshal it before op changes.
func EncodeOp(op *Op) *pb.NodeOp {
	m := &pb.NodeOp{
		Kind:         uint32(op.Kind),
		Flags:        uint32(op.Flags),
		Type:         op.Type,
		GroupOp:      op.GroupOp,
		Visibility:   op.Visibility,
		TypingState:  op.TypingState,
		ErrCode:      op.ErrCode,
		FromDevice:   op.FromDevice,
		Device:       op.Device,
		Target:       op.Target,
		Rid:          op.RID,
		CompanionRid: op.CompanionRID,
		Source:       uint32(op.Source),
		Dest:         uint32(op.Dest),
		User:         op.User,
		From:         op.From,
		Group:        op.Group,
		Cmid:         op.CMID,
		Seq:          op.Seq,
		UpTo:         op.UpTo,
		OutSeq:       op.OutSeq,
		Body:         op.Body,
		Credential:   op.Credential,
		Entry:        op.Entry,
		Peer:         op.Peer,
		Ttl:          op.TTL,
		Forwarded:    op.Forwarded,
		Ref:          op.Ref,
		Users:        op.Users,
		Devices:      op.Devices,
		Keys:         op.Keys,
		Cipher:       op.Cipher,
		Phone:        op.Phone,
		Code:         op.Code,
		Name:         op.Name,
		Phones:       op.Phones,
		Conn:         encodeRef(op.Conn),
		Companion:    encodeRef(op.Companion),
	}
	if e := op.Envelopes; e != nil {
		m.Envelopes = &pb.NodeEnvelopes{To: e.To, Own: e.Own, OwnChecked: e.OwnChecked, OwnStale: e.OwnStale, OwnDevices: e.OwnDevices}
	}
	if p := op.Push; p != nil {
		m.Push = &pb.NodePush{Provider: p.Provider, Token: p.Token, ShowSender: p.ShowSender, Sent: p.Sent, NextMs: p.NextMS, Outcome: uint32(p.Outcome)}
	}
	return m
}

// DecodeOp returns the Op m carries. It aliases m's slices and messages.
// It refuses what no node of this build would send: an unknown kind, or a
// shard number or flags out of range.
func DecodeOp(m *pb.NodeOp) (Op, error) {
	if m.Kind > 0xff || !OpKind(m.Kind).known() {
		return Op{}, fmt.Errorf("storage: node op of unknown kind %d", m.Kind)
	}
	if m.Source >= MaxShards || m.Dest >= MaxShards || m.Flags > 0xff || m.GetPush().GetOutcome() > 0xff {
		return Op{}, fmt.Errorf("storage: node op of kind %d: shard %d→%d, flags %#x or push outcome %d out of range",
			m.Kind, m.Source, m.Dest, m.Flags, m.GetPush().GetOutcome())
	}
	op := Op{
		Kind:         OpKind(m.Kind),
		Flags:        uint8(m.Flags),
		Type:         m.Type,
		GroupOp:      m.GroupOp,
		Visibility:   m.Visibility,
		TypingState:  m.TypingState,
		ErrCode:      m.ErrCode,
		FromDevice:   m.FromDevice,
		Device:       m.Device,
		Target:       m.Target,
		RID:          m.Rid,
		CompanionRID: m.CompanionRid,
		Source:       uint16(m.Source),
		Dest:         uint16(m.Dest),
		User:         m.User,
		From:         m.From,
		Group:        m.Group,
		CMID:         m.Cmid,
		Seq:          m.Seq,
		UpTo:         m.UpTo,
		OutSeq:       m.OutSeq,
		Body:         m.Body,
		Credential:   m.Credential,
		Entry:        m.Entry,
		Peer:         m.Peer,
		TTL:          m.Ttl,
		Forwarded:    m.Forwarded,
		Ref:          m.Ref,
		Users:        m.Users,
		Devices:      m.Devices,
		Keys:         m.Keys,
		Cipher:       m.Cipher,
		Phone:        m.Phone,
		Code:         m.Code,
		Name:         m.Name,
		Phones:       m.Phones,
		Conn:         decodeRef(m.Conn),
		Companion:    decodeRef(m.Companion),
	}
	if e := m.Envelopes; e != nil {
		op.Envelopes = &Envelopes{To: e.To, Own: e.Own, OwnChecked: e.OwnChecked, OwnStale: e.OwnStale, OwnDevices: e.OwnDevices}
	}
	if p := m.Push; p != nil {
		op.Push = &PushOp{Provider: p.Provider, Token: p.Token, ShowSender: p.ShowSender, Sent: p.Sent, NextMS: p.NextMs, Outcome: PushOutcome(p.Outcome)}
	}
	return op, nil
}

func encodeRef(r ConnRef) *pb.ConnRef {
	if r.IsZero() {
		return nil
	}
	return &pb.ConnRef{Node: r.Node, Gen: r.Gen, Id: r.ID}
}

func decodeRef(m *pb.ConnRef) ConnRef {
	return ConnRef{Node: m.GetNode(), Gen: m.GetGen(), ID: m.GetId()}
}

// RemoteEndpoint is the Endpoint of a connection on another node, as the
// router hands it to a shard: each method call becomes a pb.NodeCall that
// Send carries over the link to the connection's node, where ApplyCall
// makes it. Send must not block (docs/cluster.md, "Remote endpoints").
type RemoteEndpoint struct {
	Ref  ConnRef
	Send func(*pb.NodeCall)
}

// Post implements Endpoint. It copies frames and reports true: whether the
// far connection took them is not known here.
func (r RemoteEndpoint) Post(frames []byte) bool {
	r.Send(&pb.NodeCall{Conn: encodeRef(r.Ref), Method: pb.Method_METHOD_POST, Frames: clone(frames)})
	return true
}

// Reply implements Endpoint; it copies frames.
func (r RemoteEndpoint) Reply(frames []byte) {
	r.Send(&pb.NodeCall{Conn: encodeRef(r.Ref), Method: pb.Method_METHOD_REPLY, Frames: clone(frames)})
}

// Authenticated implements Endpoint.
func (r RemoteEndpoint) Authenticated(s Session) {
	r.Send(&pb.NodeCall{Conn: encodeRef(r.Ref), Method: pb.Method_METHOD_AUTHENTICATED, Session: &pb.NodeSession{
		User: s.User, Device: s.Device, Cursor: s.Cursor, Window: s.Window, MaxCmid: s.MaxCMID,
	}})
}

// Fail implements Endpoint.
func (r RemoteEndpoint) Fail(code protocol.Code) {
	r.Send(&pb.NodeCall{Conn: encodeRef(r.Ref), Method: pb.Method_METHOD_FAIL, Code: code})
}

// Close implements Endpoint.
func (r RemoteEndpoint) Close(code protocol.Code) {
	r.Send(&pb.NodeCall{Conn: encodeRef(r.Ref), Method: pb.Method_METHOD_CLOSE, Code: code})
}

// LookupPart implements Endpoint.
func (r RemoteEndpoint) LookupPart(lookup uint64, found []*pb.Contact) {
	r.Send(&pb.NodeCall{Conn: encodeRef(r.Ref), Method: pb.Method_METHOD_LOOKUP_PART, Lookup: lookup, Contacts: found})
}

// CallRef returns the connection a NodeCall is for, for the receiving node
// to resolve (its server's registry) before ApplyCall.
func CallRef(c *pb.NodeCall) ConnRef { return decodeRef(c.GetConn()) }

// ApplyCall makes the Endpoint call c carries on ep, the connection it
// names on this node. It refuses a call of an unknown method.
func ApplyCall(ep Endpoint, c *pb.NodeCall) error {
	switch c.GetMethod() {
	case pb.Method_METHOD_POST:
		ep.Post(c.GetFrames())
	case pb.Method_METHOD_REPLY:
		ep.Reply(c.GetFrames())
	case pb.Method_METHOD_AUTHENTICATED:
		s := c.GetSession()
		ep.Authenticated(Session{User: s.GetUser(), Device: s.GetDevice(), Cursor: s.GetCursor(), Window: s.GetWindow(), MaxCMID: s.GetMaxCmid()})
	case pb.Method_METHOD_FAIL:
		ep.Fail(c.GetCode())
	case pb.Method_METHOD_CLOSE:
		ep.Close(c.GetCode())
	case pb.Method_METHOD_LOOKUP_PART:
		ep.LookupPart(c.GetLookup(), c.GetContacts())
	default:
		return fmt.Errorf("storage: node call of unknown method %d", c.GetMethod())
	}
	return nil
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }
