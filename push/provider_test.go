package push_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/parley-im/parley/internal/pushtest"
	"github.com/parley-im/parley/push"
)

// providers returns the three providers, configured against srv.
func providers(t testing.TB, srv *pushtest.Server) map[string]push.Provider {
	t.Helper()
	apns, err := push.NewAPNs(push.APNsConfig{Key: pushtest.APNsKey(t), KeyID: "KEY1234567", TeamID: "TEAM123456",
		Topic: "im.parley.app", Host: srv.URL(), TLS: srv.TLS()})
	if err != nil {
		t.Fatal(err)
	}
	fcm, err := push.NewFCM(push.FCMConfig{ServiceAccount: srv.ServiceAccount(t, "parley-test"), Endpoint: srv.URL(), HTTPClient: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	hook, err := push.NewWebhook(push.WebhookConfig{Secret: pushtest.WebhookSecret, AllowPrivate: true, TLS: srv.TLS()})
	if err != nil {
		t.Fatal(err)
	}
	return map[string]push.Provider{"apns": apns, "fcm": fcm, "webhook": hook}
}

// TestProviders sends through each provider to a server answering as the
// real service does: taken, bad token, throttled, down; and checks what
// the push carried ([S-19-5]).
func TestProviders(t *testing.T) {
	srv := pushtest.Start(t)
	for name, p := range providers(t, srv) {
		t.Run(name, func(t *testing.T) {
			token := func(mode string) string {
				if name == "webhook" {
					return srv.WebhookURL(mode)
				}
				return strings.Repeat("ab", 32) + mode
			}
			for _, c := range []struct {
				mode  pushtest.Mode
				class push.Class
				retry bool
			}{
				{pushtest.OK, 0, false},
				{pushtest.BadToken, push.ClassInvalidToken, false},
				{pushtest.Throttled, push.ClassThrottled, name != "apns"}, // APNs names no wait
				{pushtest.Down, push.ClassUnavailable, false},
			} {
				tok := token(strings.ToLower(strings.ReplaceAll(name+"-"+string(rune('a'+c.mode)), " ", "")))
				srv.SetMode(tok, c.mode)
				err := p.Send(context.Background(), push.Notification{ID: "n1", Token: tok, Count: 3, ShowSender: c.mode == pushtest.OK, Sender: 4102, Group: 7})
				if c.mode == pushtest.OK {
					if err != nil {
						t.Fatalf("send: %v", err)
					}
					got := srv.PushesTo(tok)
					if len(got) != 1 || got[0].Count != 3 || got[0].Sender != 4102 || got[0].Group != 7 || got[0].Provider != name {
						t.Fatalf("pushes %+v, want one with count 3, sender 4102, group 7", got)
					}
					continue
				}
				var pe *push.Error
				if !errors.As(err, &pe) || pe.Class != c.class {
					t.Fatalf("mode %d: err %v, want class %v", c.mode, err, c.class)
				}
				if c.retry && pe.RetryAfter != time.Second {
					t.Errorf("mode %d: retry after %v, want 1s", c.mode, pe.RetryAfter)
				}
			}
		})
	}
}

// TestPushCarriesNoSenderUnlessAllowed: without ShowSender a push names
// only the count ([S-19-5]).
func TestPushCarriesNoSenderUnlessAllowed(t *testing.T) {
	srv := pushtest.Start(t)
	for name, p := range providers(t, srv) {
		tok := strings.Repeat("cd", 32)
		if name == "webhook" {
			tok = srv.WebhookURL("quiet")
		}
		if err := p.Send(context.Background(), push.Notification{ID: "n2", Token: tok, Count: 2, Sender: 4102, Group: 7}); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, got := range srv.PushesTo(tok) {
			if got.Provider == name && (got.Sender != 0 || got.Group != 0 || strings.Contains(string(got.Body), "4102")) {
				t.Errorf("%s: push names the sender without leave: %s", name, got.Body)
			}
		}
	}
}

// TestAPNsRequest: the APNs push is an alert that collapses, for the
// configured topic, with the count as badge ([S-19-5]).
func TestAPNsRequest(t *testing.T) {
	srv := pushtest.Start(t)
	p := providers(t, srv)["apns"]
	tok := strings.Repeat("ef", 32)
	if err := p.Send(context.Background(), push.Notification{ID: "n3", Token: tok, Count: 5}); err != nil {
		t.Fatal(err)
	}
	got := srv.PushesTo(tok)[0]
	for h, want := range map[string]string{"apns-topic": "im.parley.app", "apns-push-type": "alert", "apns-collapse-id": "parley", "apns-priority": "10"} {
		if v := got.Header.Get(h); v != want {
			t.Errorf("%s: %q, want %q", h, v, want)
		}
	}
	var body struct {
		APS struct {
			Badge int `json:"badge"`
		} `json:"aps"`
	}
	if err := json.Unmarshal(got.Body, &body); err != nil || body.APS.Badge != 5 {
		t.Errorf("payload %s: badge %d, want 5", got.Body, body.APS.Badge)
	}
}

// TestWebhookRefusesPrivateAddresses: a registered URL may not reach the
// server's own network unless the operator allows it.
func TestWebhookRefusesPrivateAddresses(t *testing.T) {
	srv := pushtest.Start(t)
	hook, err := push.NewWebhook(push.WebhookConfig{Secret: pushtest.WebhookSecret, TLS: srv.TLS()})
	if err != nil {
		t.Fatal(err)
	}
	err = hook.Send(context.Background(), push.Notification{ID: "n4", Token: srv.WebhookURL("inside"), Count: 1})
	if err == nil || srv.Attempts(srv.WebhookURL("inside")) != 0 {
		t.Fatalf("a push to a loopback URL: err %v, attempts %d; want refused before any request", err, srv.Attempts(srv.WebhookURL("inside")))
	}
	if err := hook.Send(context.Background(), push.Notification{ID: "n5", Token: "http://example.com/x", Count: 1}); err == nil {
		t.Fatal("a plain-http URL was taken")
	}
}

// TestProviderConfigErrors: a bad configuration names every problem and
// never the secret.
func TestProviderConfigErrors(t *testing.T) {
	_, err := push.NewAPNs(push.APNsConfig{Key: []byte("-----BEGIN PRIVATE KEY-----\nsecretstuff\n-----END PRIVATE KEY-----\n")})
	if err == nil || !strings.Contains(err.Error(), "key id") || !strings.Contains(err.Error(), "topic") || strings.Contains(err.Error(), "secretstuff") {
		t.Errorf("APNs config error %v", err)
	}
	_, err = push.NewFCM(push.FCMConfig{ServiceAccount: []byte(`{"private_key":"secretstuff"}`)})
	if err == nil || !strings.Contains(err.Error(), "project_id") || strings.Contains(err.Error(), "secretstuff") {
		t.Errorf("FCM config error %v", err)
	}
	if _, err := push.NewWebhook(push.WebhookConfig{Secret: []byte("short")}); err == nil {
		t.Error("a short webhook secret was taken")
	}
}
