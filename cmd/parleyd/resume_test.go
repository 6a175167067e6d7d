package main

import (
	"crypto/tls"
	"testing"

	"github.com/parley-im/parley/internal/wiretest"
	"github.com/parley-im/parley/protocol"
)

// TestSessionResumption is [S-5-2] through real parleyd processes: a
// client that keeps the tickets it is sent resumes its TLS session on the
// next connection, and again after parleyd is killed and restarted (the
// ticket keys come from DataDir/tls/ticket.key); its stream goes on with
// no gap and no duplicate; a client without a ticket still gets a full
// handshake.
func TestSessionResumption(t *testing.T) {
	dir, addr := t.TempDir(), freeAddr(t)
	d := startDaemon(t, dir, addr)
	fp := d.fingerprint(t)
	cfg := wiretest.TLSConfig(fp)
	cfg.ClientSessionCache = tls.NewLRUClientSessionCache(1)
	dial := func(cfg *tls.Config, wantResumed bool) *wiretest.Client {
		t.Helper()
		c := wiretest.DialConfig(t, addr, cfg)
		if got := c.Conn.(*tls.Conn).ConnectionState().DidResume; got != wantResumed {
			t.Fatalf("resumed: %v, want %v", got, wantResumed)
		}
		return c
	}

	reg := dial(cfg, false)
	alice := reg.Register(phoneOn(t, 0, 0), d.code)
	bob := reg.Register(phoneOn(t, 1, 0), d.code)
	reg.Conn.Close()

	a := dial(cfg, true)
	a.Login(alice, 0)
	first := a.SendText(bob.ID, 1, "before the restart")
	a.Conn.Close()

	d.kill()
	startDaemon(t, dir, addr)
	b := dial(cfg, true)
	b.Login(bob, 0)
	if m := b.Message(); m.ID != first || m.Seq != 1 {
		t.Fatalf("after the restart bob got id %d seq %d, want id %d seq 1", m.ID, m.Seq, first)
	}
	b.Ack(1)
	b.Conn.Close()

	full := dial(wiretest.TLSConfig(fp), false)
	full.Login(bob, 1)
	a = dial(cfg, true)
	a.Login(alice, 0)
	second := a.SendText(bob.ID, 2, "after the restart")
	if m := full.Message(); m.ID != second || m.Seq != 2 {
		t.Fatalf("bob got id %d seq %d, want id %d seq 2", m.ID, m.Seq, second)
	}
	full.Ping()
	full.Expect(protocol.KindPong)
}
