package client

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/parley-im/parley/internal/node"
	"github.com/parley-im/parley/internal/pushtest"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/push"
)

// TestRegisterPush registers and removes a push token through a real node
// that offers webhooks only: a webhook is taken, APNs is refused
// PUSH_UNAVAILABLE, an empty token never leaves the SDK ([S-19-1]).
func TestRegisterPush(t *testing.T) {
	fake := pushtest.Start(t)
	hook, err := push.NewWebhook(push.WebhookConfig{Secret: pushtest.WebhookSecret, AllowPrivate: true, TLS: fake.TLS()})
	if err != nil {
		t.Fatal(err)
	}
	n := startE2ENodeWith(t, func(c *node.Config) { c.Push.Webhook = hook })
	ctx := context.Background()
	alice := n.start(t, n.register(t, n.PhoneOn(0)))

	if err := alice.RegisterPush(ctx, PushWebhook, fake.WebhookURL("alice"), true); err != nil {
		t.Fatalf("register a webhook: %v", err)
	}
	if err := alice.RegisterPush(ctx, PushAPNs, strings.Repeat("ab", 32), false); CodeOf(err) != protocol.CodePushUnavailable {
		t.Fatalf("register APNs: %v, want PUSH_UNAVAILABLE", err)
	}
	if err := alice.RegisterPush(ctx, PushFCM, "", false); !errors.Is(err, ErrInvalid) {
		t.Fatalf("an empty token: %v, want ErrInvalid", err)
	}
	if err := alice.UnregisterPush(ctx); err != nil {
		t.Fatalf("unregister: %v", err)
	}
}
