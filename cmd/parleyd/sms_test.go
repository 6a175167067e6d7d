package main

import (
	"encoding/json"
	"errors"
	"flag"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parley-im/parley/internal/wiretest"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
	"github.com/parley-im/parley/sms"
)

// TestSMSFlags: the flags and the environment choose and configure the
// sender; the credentials come from files or the environment.
func TestSMSFlags(t *testing.T) {
	files := map[string]string{"/run/token": "tw-token\n", "/run/secret": "0123456789abcdef0123\n", "/run/empty": "\n"}
	readFile := func(name string) ([]byte, error) {
		if v, ok := files[name]; ok {
			return []byte(v), nil
		}
		return nil, fs.ErrNotExist
	}
	for _, tt := range []struct {
		args    []string
		env     map[string]string
		gateway string // "" for the log sender
		want    string // a part of the error, "" for none
	}{
		{nil, nil, "", ""},
		{[]string{"--sms", "twilio", "--twilio-account-sid", "AC1", "--twilio-auth-token-file", "/run/token", "--sms-from", "+15005550006"}, nil, "twilio", ""},
		{[]string{"--sms", "twilio", "--twilio-account-sid", "AC1", "--twilio-messaging-service-sid", "MG1"}, map[string]string{"PARLEY_TWILIO_AUTH_TOKEN": "tw-token"}, "twilio", ""},
		{[]string{"--sms-url", "http://127.0.0.1:9/hook", "--webhook-secret-file", "/run/secret", "--sms-deadline", "5s"}, map[string]string{"PARLEY_SMS": "webhook"}, "webhook", ""},
		{[]string{"--sms", "twilio", "--twilio-account-sid", "AC1", "--sms-from", "+1"}, nil, "", "no Twilio auth token: give --twilio-auth-token-file or set PARLEY_TWILIO_AUTH_TOKEN"},
		{[]string{"--sms", "twilio", "--twilio-auth-token-file", "/run/token"}, map[string]string{"PARLEY_TWILIO_AUTH_TOKEN": "x"}, "", "from --twilio-auth-token-file or from PARLEY_TWILIO_AUTH_TOKEN, not both"},
		{[]string{"--sms", "twilio", "--twilio-auth-token-file", "/run/nope", "--twilio-account-sid", "AC1", "--sms-from", "+1"}, nil, "", "--twilio-auth-token-file: file does not exist"},
		{[]string{"--sms", "twilio", "--twilio-auth-token-file", "/run/empty"}, nil, "", "/run/empty is empty"},
		{[]string{"--sms", "webhook", "--webhook-secret-file", "/run/secret"}, nil, "", "--sms webhook needs --sms-url"},
		{[]string{"--sms", "webhook", "--sms-url", "http://10.0.0.1/hook"}, map[string]string{"PARLEY_WEBHOOK_SECRET": "short"}, "", "want https (plain http only to a loopback address)"},
		{[]string{"--sms-url", "https://x", "--sms-from", "+1"}, nil, "", "--sms-url needs --sms twilio or webhook"},
		{[]string{"--sms", "pigeon"}, nil, "", `--sms "pigeon": want log, twilio or webhook`},
		{[]string{"--sms-queue", "0", "--sms-attempt-timeout", "0s"}, nil, "", "--sms-queue 0: want 1 or more"},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			fset := flag.NewFlagSet("parleyd", flag.ContinueOnError)
			f, err := addSMSFlags(fset)
			if err != nil {
				t.Fatal(err)
			}
			if err := fset.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			getenv := func(k string) string { return tt.env[k] }
			cfg, err := f.config(getenv, readFile)
			if tt.want != "" {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("error %v, want it to say %q", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case tt.gateway == "" && cfg.Gateway != nil:
				t.Fatalf("gateway %s, want the log sender", cfg.Gateway.Name())
			case tt.gateway != "" && (cfg.Gateway == nil || cfg.Gateway.Name() != tt.gateway):
				t.Fatalf("gateway %v, want %s", cfg.Gateway, tt.gateway)
			}
			if cfg.Text != sms.DefaultText || cfg.Attempts != sms.DefaultAttempts {
				t.Errorf("config %+v", cfg)
			}
			if tt.gateway == "webhook" && cfg.Deadline != 5*time.Second {
				t.Errorf("deadline %v, want 5s", cfg.Deadline)
			}
		})
	}
}

// TestOneLine: a configuration with several problems is reported on one
// line.
func TestOneLine(t *testing.T) {
	if got := oneLine(errors.Join(errors.New("a"), errors.New("b"))); got != "a; b" {
		t.Fatalf("oneLine = %q", got)
	}
}

// TestSMSWebhookThroughParleyd: a real parleyd configured from the
// environment sends codes to a webhook on loopback, signed; the client's
// CODE_SENT comes after the receiver took the code, which then verifies;
// a number the receiver refuses gets CODE_UNDELIVERABLE; the secret is in
// nothing parleyd prints.
func TestSMSWebhookThroughParleyd(t *testing.T) {
	const (
		secret  = "whsec-parleyd-test-0123456789"
		good    = "+447700900555"
		refused = "+447700900666"
	)
	var mu sync.Mutex
	codes := map[string]string{}
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := sms.VerifyWebhook([]byte(secret), r.Header, body, time.Now(), 5*time.Minute); err != nil {
			t.Errorf("webhook: %v", err)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var m sms.WebhookBody
		if err := json.Unmarshal(body, &m); err != nil {
			t.Errorf("webhook body: %v", err)
		}
		if m.Phone == refused {
			w.WriteHeader(http.StatusUnprocessableEntity)
			return
		}
		mu.Lock()
		codes[m.Phone] = m.Code
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer hook.Close()
	t.Setenv("PARLEY_SMS", "webhook")
	t.Setenv("PARLEY_SMS_URL", hook.URL+"/sms")
	t.Setenv("PARLEY_WEBHOOK_SECRET", secret)

	d := startDaemon(t, t.TempDir(), "")
	c := wiretest.Dial(t, d.addr, d.fingerprint(t))
	u := c.Register(good, func(phone string) string {
		mu.Lock()
		defer mu.Unlock()
		return codes[phone] // the receiver took it before CODE_SENT
	})
	c.Login(u, 0)

	c2 := wiretest.Dial(t, d.addr, d.fingerprint(t))
	c2.Send(protocol.KindRequestCode, &pb.RequestCode{Rid: 7, Phone: refused, Version: protocol.Version})
	if e := c2.ExpectError(protocol.CodeCodeUndeliverable); e.Rid != 7 {
		t.Fatalf("CODE_UNDELIVERABLE rid %d, want 7", e.Rid)
	}
	out := d.printed()
	if !strings.Contains(out, "sms=webhook") {
		t.Errorf("parleyd did not say it sends codes by webhook:\n%s", out)
	}
	if strings.Contains(out, secret) {
		t.Errorf("parleyd printed the webhook secret:\n%s", out)
	}
}
