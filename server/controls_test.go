package server_test

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/internal/node"
	"github.com/parley-im/parley/internal/nodetest"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// TestControlsRefused sends the conformance cases of the conversation
// controls (spec.md section 18) over the wire and checks each refusal's
// code, its rid, and that the connection stays up (message scope).
func TestControlsRefused(t *testing.T) {
	clk := &nodetest.Clock{}
	n := nodetest.Start(t, func(c *node.Config) { c.Storage.Now = clk.Now })
	alice, bob, mallory := n.RegisterOn(t, 0), n.RegisterOn(t, 1), n.RegisterOn(t, 1)
	a, _ := n.Login(t, alice, 0)
	a.Expect(protocol.KindSynced)
	m, _ := n.Login(t, mallory, 0)
	m.Expect(protocol.KindSynced)
	id := a.SendText(bob.ID, 1, "hello")

	tests := []struct {
		name string
		msg  func(rid uint32) (protocol.Kind, proto.Message)
		code protocol.Code
	}{
		{"revoke without an id", func(rid uint32) (protocol.Kind, proto.Message) {
			return protocol.KindRevoke, &pb.Revoke{Rid: rid, To: bob.ID}
		}, protocol.CodeInvalidArgument},
		{"revoke naming a user and a group", func(rid uint32) (protocol.Kind, proto.Message) {
			return protocol.KindRevoke, &pb.Revoke{Rid: rid, To: bob.ID, Group: 12293, Id: id}
		}, protocol.CodeInvalidArgument},
		{"revoke of another's message", func(rid uint32) (protocol.Kind, proto.Message) {
			return protocol.KindRevoke, &pb.Revoke{Rid: rid, To: bob.ID, Id: id}
		}, protocol.CodeNotSender},
		{"revoke of an unknown message", func(rid uint32) (protocol.Kind, proto.Message) {
			return protocol.KindRevoke, &pb.Revoke{Rid: rid, To: bob.ID, Id: id + 1}
		}, protocol.CodeMessageNotFound},
		{"revoke in a group not joined", func(rid uint32) (protocol.Kind, proto.Message) {
			return protocol.KindRevoke, &pb.Revoke{Rid: rid, Group: 12293, Id: id}
		}, protocol.CodeNotMember},
		{"block oneself", func(rid uint32) (protocol.Kind, proto.Message) {
			return protocol.KindBlock, &pb.Block{Rid: rid, User: mallory.ID}
		}, protocol.CodeInvalidArgument},
		{"block user 0", func(rid uint32) (protocol.Kind, proto.Message) {
			return protocol.KindBlock, &pb.Block{Rid: rid}
		}, protocol.CodeInvalidArgument},
		{"unblock oneself", func(rid uint32) (protocol.Kind, proto.Message) {
			return protocol.KindUnblock, &pb.Unblock{Rid: rid, User: mallory.ID}
		}, protocol.CodeInvalidArgument},
		{"timer beyond the limit", func(rid uint32) (protocol.Kind, proto.Message) {
			return protocol.KindSetTimer, &pb.SetTimer{Rid: rid, To: bob.ID, TtlS: protocol.MaxTimer + 1}
		}, protocol.CodeInvalidArgument},
		{"timer naming nobody", func(rid uint32) (protocol.Kind, proto.Message) {
			return protocol.KindSetTimer, &pb.SetTimer{Rid: rid, TtlS: 60}
		}, protocol.CodeInvalidArgument},
		{"timer of a group not joined", func(rid uint32) (protocol.Kind, proto.Message) {
			return protocol.KindSetTimer, &pb.SetTimer{Rid: rid, Group: 12293, TtlS: 60}
		}, protocol.CodeNotMember},
		{"report with no message", func(rid uint32) (protocol.Kind, proto.Message) {
			return protocol.KindReport, &pb.Report{Rid: rid, User: bob.ID, Reason: "spam"}
		}, protocol.CodeInvalidArgument},
		{"report of oneself", func(rid uint32) (protocol.Kind, proto.Message) {
			return protocol.KindReport, &pb.Report{Rid: rid, User: mallory.ID, Messages: []*pb.ReportedMessage{{Id: id}}}
		}, protocol.CodeInvalidArgument},
		{"report of a message without an id", func(rid uint32) (protocol.Kind, proto.Message) {
			return protocol.KindReport, &pb.Report{Rid: rid, User: bob.ID, Messages: []*pb.ReportedMessage{{Body: []byte("x")}}}
		}, protocol.CodeInvalidArgument},
		{"report of too many messages", func(rid uint32) (protocol.Kind, proto.Message) {
			r := &pb.Report{Rid: rid, User: bob.ID}
			for i := range protocol.MaxReportMessages + 1 {
				r.Messages = append(r.Messages, &pb.ReportedMessage{Id: uint64(i + 1)})
			}
			return protocol.KindReport, r
		}, protocol.CodeInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rid := m.NextRID()
			k, msg := tt.msg(rid)
			m.Send(k, msg)
			if e := m.ExpectError(tt.code); e.Rid != rid {
				t.Fatalf("error names rid %d, want %d", e.Rid, rid)
			}
			m.Ping()
			m.Expect(protocol.KindPong)
		})
	}

	// SENDs of the conversation controls ([S-18-12]): refused by cmid.
	for i, tt := range []struct {
		name string
		send codec.Send
		code protocol.Code
	}{
		{"reaction without a ref", codec.Send{To: bob.ID, Body: []byte("+1"), Type: pb.ContentType_CONTENT_REACTION}, protocol.CodeInvalidArgument},
		{"edit without a ref", codec.Send{To: bob.ID, Body: []byte("fixed"), Type: pb.ContentType_CONTENT_EDIT}, protocol.CodeInvalidArgument},
		{"edit without a body", codec.Send{To: bob.ID, Type: pb.ContentType_CONTENT_EDIT, Ref: id}, protocol.CodeInvalidArgument},
		{"text without a body", codec.Send{To: bob.ID, Ref: id}, protocol.CodeInvalidArgument},
		{"withdrawn reaction", codec.Send{To: bob.ID, Type: pb.ContentType_CONTENT_REACTION, Ref: id}, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.send.CMID = uint64(100 + i)
			m.Write(codec.AppendSend(nil, tt.send))
			if tt.code == 0 {
				var sent pb.Sent
				m.ExpectProto(protocol.KindSent, &sent)
				return
			}
			if e := m.ExpectError(tt.code); e.Cmid != tt.send.CMID {
				t.Fatalf("error names cmid %d, want %d", e.Cmid, tt.send.CMID)
			}
		})
	}

	// After the limit, even the sender may not.
	clk.Advance(48*time.Hour + time.Minute)
	rid := a.NextRID()
	a.Send(protocol.KindRevoke, &pb.Revoke{Rid: rid, To: bob.ID, Id: id})
	if e := a.ExpectError(protocol.CodeRevokeExpired); e.Rid != rid {
		t.Fatalf("error names rid %d, want %d", e.Rid, rid)
	}
}
