package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parley-im/parley/internal/pushtest"
	"github.com/parley-im/parley/internal/wiretest"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// TestPushAfterKill9 kills parleyd with SIGKILL after it decided a push
// and handed it to the provider, before the provider answered: the
// restarted parleyd sends it, once, with the message counted ([S-19-6]).
func TestPushAfterKill9(t *testing.T) {
	fake := pushtest.Start(t)
	certFile := filepath.Join(t.TempDir(), "fake.pem")
	if err := os.WriteFile(certFile, fake.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SSL_CERT_FILE", certFile) // parleyd trusts the fake service
	t.Setenv("PARLEY_PUSH_WEBHOOK", "1")
	t.Setenv("PARLEY_PUSH_WEBHOOK_ALLOW_PRIVATE", "1")
	t.Setenv("PARLEY_PUSH_WEBHOOK_SECRET", string(pushtest.WebhookSecret))
	dir := t.TempDir()
	d := startDaemon(t, dir, "")
	addr, fp := d.addr, d.fingerprint(t)

	a := wiretest.Dial(t, addr, fp)
	alice := a.Register("+15550002001", d.code)
	a.Login(alice, 0)
	b := wiretest.Dial(t, addr, fp)
	bob := b.Register("+15550002002", d.code)
	b.Login(bob, 0)
	hook := fake.WebhookURL("alice")
	a.Send(protocol.KindPushRegister, &pb.PushRegister{Rid: a.NextRID(), Provider: pb.PushProvider_PUSH_WEBHOOK, Token: hook})
	a.Expect(protocol.KindOK, protocol.KindSynced)
	b.Send(protocol.KindPresenceSubscribe, &pb.PresenceSubscribe{Rid: b.NextRID(), Users: []uint64{alice.ID}})
	a.Conn.Close()
	b.ExpectOffline(alice.ID, true)

	fake.SetMode(hook, pushtest.Hang)
	b.SendText(alice.ID, 1, "one")
	fake.WaitFor(t, 30*time.Second, "the push reaching the provider", func(s *pushtest.Server) bool { return s.Attempts(hook) >= 1 })
	d.kill()
	if n := len(fake.PushesTo(hook)); n != 0 {
		t.Fatalf("%d pushes taken before the kill, want 0", n)
	}

	fake.SetMode(hook, pushtest.OK)
	d = startDaemon(t, dir, addr)
	fake.WaitFor(t, 30*time.Second, "the push after the restart", func(s *pushtest.Server) bool { return len(s.PushesTo(hook)) == 1 })
	if p := fake.PushesTo(hook)[0]; p.Count != 1 || p.Sender != 0 {
		t.Fatalf("push after the restart %+v %s, want count 1 and no sender", p, p.Body)
	}
	if out := d.printed(); !strings.Contains(out, "push=webhook") || strings.Contains(out, string(pushtest.WebhookSecret)) {
		t.Errorf("parleyd did not say it pushes by webhook, or printed the secret:\n%s", out)
	}
}
