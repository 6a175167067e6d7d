package client

import (
	"context"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// PushProvider names a push service a device registers with (spec.md
// section 19).
type PushProvider = pb.PushProvider

// Push providers.
const (
	PushAPNs    = pb.PushProvider_PUSH_APNS    // token: the APNs device token, hex
	PushFCM     = pb.PushProvider_PUSH_FCM     // token: the FCM registration token
	PushWebhook = pb.PushProvider_PUSH_WEBHOOK // token: a UnifiedPush endpoint's https URL
)

// RegisterPush registers this device's push token with the server, or
// replaces the one registered ([S-19-1]); showSender lets pushes carry the
// sender's user id ([S-19-5]). It returns once the registration is
// durable, or an *Error: PUSH_TOKEN_INVALID, PUSH_UNAVAILABLE (the server
// does not offer provider). Call it again whenever the platform hands the
// app a new token; once registered, a device that is not connected gets a
// push when a message waits for it.
func (c *Client) RegisterPush(ctx context.Context, provider PushProvider, token string, showSender bool) error {
	if token == "" || len(token) > protocol.MaxPushToken {
		return fmt.Errorf("%w: push token of %d bytes", ErrInvalid, len(token))
	}
	return c.pushRegister(ctx, &pb.PushRegister{Provider: provider, Token: token, ShowSender: showSender})
}

// UnregisterPush removes this device's push token: it gets no more pushes
// ([S-19-1]).
func (c *Client) UnregisterPush(ctx context.Context) error {
	return c.pushRegister(ctx, &pb.PushRegister{})
}

func (c *Client) pushRegister(ctx context.Context, m *pb.PushRegister) error {
	_, err := doAs[*pb.Ok](ctx, c, &request{kind: protocol.KindPushRegister, body: func(rid uint32) proto.Message {
		m.Rid = rid
		return m
	}})
	return err
}
