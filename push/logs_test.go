package push_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parley-im/parley/internal/pushtest"
	"github.com/parley-im/parley/protocol/pb"
	"github.com/parley-im/parley/push"
	"github.com/parley-im/parley/storage"
)

// lockedBuffer is a bytes.Buffer for a logger used from several
// goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestNoSecretsInLogs: the dispatcher's log lines for refused tokens and
// failed pushes name the provider, the status and a token's first
// characters, never a key, the webhook secret or a whole token.
func TestNoSecretsInLogs(t *testing.T) {
	srv := pushtest.Start(t)
	key := pushtest.APNsKey(t)
	account := srv.ServiceAccount(t, "parley-test")
	apns, err := push.NewAPNs(push.APNsConfig{Key: key, KeyID: "KEY1234567", TeamID: "TEAM123456", Topic: "im.parley.app", Host: srv.URL(), TLS: srv.TLS()})
	if err != nil {
		t.Fatal(err)
	}
	fcm, err := push.NewFCM(push.FCMConfig{ServiceAccount: account, Endpoint: srv.URL(), HTTPClient: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	hook, err := push.NewWebhook(push.WebhookConfig{Secret: pushtest.WebhookSecret, AllowPrivate: true, TLS: srv.TLS()})
	if err != nil {
		t.Fatal(err)
	}
	var logs lockedBuffer
	reports := make(chan storage.Op, 8)
	d, err := push.New(push.Config{APNs: apns, FCM: fcm, Webhook: hook, Attempts: 2, BackoffMin: time.Millisecond, BackoffMax: time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Submit: func(op storage.Op) error { reports <- op; return nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()

	apnsToken, fcmToken, hookURL := strings.Repeat("5e", 32), "fcm-token-secret-part", srv.WebhookURL("secret-path")
	srv.SetMode(apnsToken, pushtest.BadToken)
	srv.SetMode(fcmToken, pushtest.Down)
	srv.SetMode(hookURL, pushtest.BadToken)
	for i, j := range []storage.PushJob{
		{User: 1, Device: 1, Provider: pb.PushProvider_PUSH_APNS, Token: apnsToken, Count: 1},
		{User: 2, Device: 1, Provider: pb.PushProvider_PUSH_FCM, Token: fcmToken, Count: 1},
		{User: 3, Device: 1, Provider: pb.PushProvider_PUSH_WEBHOOK, Token: hookURL, Count: 1},
	} {
		d.PushDue(j)
		select {
		case <-reports:
		case <-time.After(30 * time.Second):
			t.Fatalf("job %d: no report", i)
		}
	}
	out := logs.String()
	if !strings.Contains(out, "push token refused") || !strings.Contains(out, "push failed after every attempt") {
		t.Fatalf("the log lacks the lines this test is about:\n%s", out)
	}
	var sa struct {
		PrivateKey string `json:"private_key"`
	}
	if err := json.Unmarshal(account, &sa); err != nil {
		t.Fatal(err)
	}
	for what, secret := range map[string]string{
		"the APNs key":            strings.Split(string(key), "\n")[1],
		"the service account key": strings.Split(sa.PrivateKey, "\n")[1],
		"the access token":        "pushtest-access",
		"the webhook secret":      string(pushtest.WebhookSecret),
		"an APNs token":           apnsToken,
		"an FCM token":            fcmToken,
		"a webhook URL's path":    "secret-path",
	} {
		if strings.Contains(out, secret) {
			t.Errorf("the log shows %s:\n%s", what, out)
		}
	}
}
