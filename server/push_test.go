package server_test

import (
	"strings"
	"testing"

	"github.com/parley-im/parley/internal/nodetest"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// TestPushRegisterRefused sends the refusals of PUSH_REGISTER ([S-19-1])
// over the wire to a node that offers no push: malformed tokens are
// PUSH_TOKEN_INVALID whatever the node offers, a well-formed one
// PUSH_UNAVAILABLE, and removing a registration is OK; the connection
// stays up (message scope).
func TestPushRegisterRefused(t *testing.T) {
	n := nodetest.Start(t, nil)
	alice := n.RegisterOn(t, 0)
	a, _ := n.Login(t, alice, 0)
	a.Expect(protocol.KindSynced)
	hex64 := strings.Repeat("0f", 32)
	for _, tt := range []struct {
		name     string
		provider pb.PushProvider
		token    string
		code     protocol.Code
	}{
		{"APNs token too short", pb.PushProvider_PUSH_APNS, hex64[:62], protocol.CodePushTokenInvalid},
		{"APNs token not hex", pb.PushProvider_PUSH_APNS, strings.Repeat("zz", 32), protocol.CodePushTokenInvalid},
		{"FCM token with a space", pb.PushProvider_PUSH_FCM, "abc def", protocol.CodePushTokenInvalid},
		{"webhook over plain http", pb.PushProvider_PUSH_WEBHOOK, "http://push.example/up1", protocol.CodePushTokenInvalid},
		{"webhook with user information", pb.PushProvider_PUSH_WEBHOOK, "https://me:pw@push.example/up1", protocol.CodePushTokenInvalid},
		{"a token with no provider", pb.PushProvider_PUSH_NONE, hex64, protocol.CodePushTokenInvalid},
		{"an unknown provider", pb.PushProvider(9), hex64, protocol.CodePushTokenInvalid},
		{"a token over MaxPushToken", pb.PushProvider_PUSH_FCM, strings.Repeat("x", protocol.MaxPushToken+1), protocol.CodePushTokenInvalid},
		{"a provider the node does not offer", pb.PushProvider_PUSH_APNS, hex64, protocol.CodePushUnavailable},
		{"a webhook the node does not offer", pb.PushProvider_PUSH_WEBHOOK, "https://push.example/up1", protocol.CodePushUnavailable},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rid := a.NextRID()
			a.Send(protocol.KindPushRegister, &pb.PushRegister{Rid: rid, Provider: tt.provider, Token: tt.token})
			if e := a.ExpectError(tt.code); e.Rid != rid {
				t.Fatalf("error names rid %d, want %d", e.Rid, rid)
			}
			a.Ping()
			a.Expect(protocol.KindPong)
		})
	}
	rid := a.NextRID()
	a.Send(protocol.KindPushRegister, &pb.PushRegister{Rid: rid})
	var ok pb.Ok
	a.ExpectProto(protocol.KindOK, &ok)
	if ok.Rid != rid {
		t.Fatalf("OK names rid %d, want %d", ok.Rid, rid)
	}
}
