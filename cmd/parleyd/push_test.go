package main

import (
	"flag"
	"io/fs"
	"strings"
	"testing"
	"time"

	"github.com/parley-im/parley/internal/pushtest"
)

// TestPushFlags turns push flags and variables into providers, and
// reports every problem of a bad set at once, never a key's content.
func TestPushFlags(t *testing.T) {
	srv := pushtest.Start(t)
	files := map[string]string{
		"/run/apns.p8":    string(pushtest.APNsKey(t)),
		"/run/fcm.json":   string(srv.ServiceAccount(t, "parley-test")),
		"/run/hook":       "0123456789abcdef0123\n",
		"/run/secret.p8":  "-----BEGIN PRIVATE KEY-----\nc2VjcmV0c3R1ZmY=\n-----END PRIVATE KEY-----\n",
		"/run/short-hook": "short\n",
	}
	readFile := func(name string) ([]byte, error) {
		if v, ok := files[name]; ok {
			return []byte(v), nil
		}
		return nil, fs.ErrNotExist
	}
	apns := []string{"--apns-key-id", "KEY1234567", "--apns-key-file", "/run/apns.p8", "--apns-team-id", "TEAM123456", "--apns-topic", "im.parley.app"}
	for _, tt := range []struct {
		args      []string
		env       map[string]string
		providers string // the providers configured, "" for none
		want      []string
	}{
		{nil, nil, "", nil},
		{apns, nil, "apns", nil},
		{[]string{"--fcm-service-account-file", "/run/fcm.json", "--push-interval", "1m"}, nil, "fcm", nil},
		{[]string{"--push-webhook"}, map[string]string{"PARLEY_PUSH_WEBHOOK_SECRET": "0123456789abcdef"}, "webhook", nil},
		{append(append([]string{}, apns...), "--push-webhook", "--push-webhook-secret-file", "/run/hook"), map[string]string{"PARLEY_FCM_SERVICE_ACCOUNT": files["/run/fcm.json"]}, "apns fcm webhook", nil},
		{[]string{"--apns-key-id", "KEY1234567", "--apns-key-file", "/run/secret.p8", "--push-webhook", "--push-webhook-secret-file", "/run/short-hook", "--push-queue", "0"},
			nil, "", []string{"not a PKCS#8 EC key", "no team id", "no topic", "a secret of 5 bytes", "--push-queue 0"}},
		{[]string{"--apns-topic", "im.parley.app", "--push-webhook-secret-file", "/run/hook", "--push-interval", "0s"}, nil, "",
			[]string{"need --apns-key-id", "need --push-webhook", "--push-interval 0s"}},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			fset := flag.NewFlagSet("parleyd", flag.ContinueOnError)
			f, err := addPushFlags(fset)
			if err != nil {
				t.Fatal(err)
			}
			if err := fset.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			cfg, err := f.config(func(k string) string { return tt.env[k] }, readFile)
			if tt.want != nil {
				if err == nil {
					t.Fatal("no error")
				}
				for _, w := range tt.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not say %q", oneLine(err), w)
					}
				}
				if strings.Contains(err.Error(), "c2VjcmV0c3R1ZmY") || strings.Contains(err.Error(), "secretstuff") {
					t.Errorf("error %q shows the key", oneLine(err))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, p := range []interface{ Name() string }{cfg.APNs, cfg.FCM, cfg.Webhook} {
				if p != nil {
					got = append(got, p.Name())
				}
			}
			if strings.Join(got, " ") != tt.providers {
				t.Errorf("providers %q, want %q", got, tt.providers)
			}
			if want := map[bool]time.Duration{true: time.Minute, false: 30 * time.Second}[strings.Contains(strings.Join(tt.args, " "), "1m")]; cfg.Interval != want {
				t.Errorf("interval %v, want %v", cfg.Interval, want)
			}
		})
	}
}
