package main

import (
	"crypto/tls"
	"testing"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/internal/wiretest"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// TestSessionResumption is [S-5-2] through real parleyd processes: a
// client that keeps the tickets it is sent resumes its TLS session on the
// next connection, and again after parleyd is killed and restarted (the
// ticket keys come from DataDir/tls/ticket.key); its stream goes on with
// no gap and no duplicate; a client without a ticket still gets a full
// handshake.
func TestSessionResumption(t *testing.T) {
	dir := t.TempDir()
	d := startDaemon(t, dir, "")
	addr, fp := d.addr, d.fingerprint(t)
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

// TestNewNetworkResumes is issue 13's "a device that reconnects over a new
// network resumes its stream with no duplicate and no gap", with
// resumption on: bob's phone reads entries 1–3 on one network (source
// 127.0.0.2) and acks only 1–2; it moves to another network (127.0.0.3)
// while its old connection is still open as far as parleyd knows, and
// entry 4 is sent while it moves. The phone resumes its TLS
// session from the new address and logs in with its cursor at 3: it gets
// 4, then 5, nothing twice and nothing skipped, and the old connection is
// told SESSION_REPLACED ([S-5-2], [S-6-11], [S-8-7]).
func TestNewNetworkResumes(t *testing.T) {
	dir := t.TempDir()
	d := startDaemon(t, dir, "")
	addr, fp := d.addr, d.fingerprint(t)
	alice, bob := registerPair(t, d, fp)

	phone := wiretest.TLSConfig(fp) // bob's phone: one session cache across networks
	phone.ClientSessionCache = tls.NewLRUClientSessionCache(1)
	old := wiretest.DialConfigFrom(t, "127.0.0.2", addr, phone)
	old.Login(bob, 0)
	old.Expect(protocol.KindSynced)
	a := wiretest.Dial(t, addr, fp)
	a.Login(alice, 0)
	var ids []uint64
	for cmid := uint64(1); cmid <= 3; cmid++ {
		ids = append(ids, a.SendText(bob.ID, cmid, "on wi-fi"))
	}
	for seq := uint64(1); seq <= 3; seq++ {
		if m := old.Message(); m.Seq != seq || m.ID != ids[seq-1] {
			t.Fatalf("on the first network bob got id %d seq %d, want id %d seq %d", m.ID, m.Seq, ids[seq-1], seq)
		}
	}
	old.Ack(2)
	old.Ping() // the ack is in before the pong
	old.Expect(protocol.KindPong)
	ids = append(ids, a.SendText(bob.ID, 4, "while moving")) // to the old connection, never read

	moved := wiretest.DialConfigFrom(t, "127.0.0.3", addr, phone)
	if !moved.Conn.(*tls.Conn).ConnectionState().DidResume {
		t.Fatal("the phone on its new network did a full handshake, want a resumed one")
	}
	moved.Login(bob, 3)
	if m := moved.Message(); m.Seq != 4 || m.ID != ids[3] {
		t.Fatalf("on the new network bob got id %d seq %d first, want id %d seq 4", m.ID, m.Seq, ids[3])
	}
	ids = append(ids, a.SendText(bob.ID, 5, "on mobile data"))
	if m := moved.Message(); m.Seq != 5 || m.ID != ids[4] {
		t.Fatalf("then id %d seq %d, want id %d seq 5", m.ID, m.Seq, ids[4])
	}
	moved.Ping()
	moved.Expect(protocol.KindPong) // nothing else came: no entry twice
	// The old connection may have been written entry 4 before it was
	// replaced, and nothing after it but SESSION_REPLACED.
	for {
		f := old.Expect(protocol.KindError, protocol.KindMessage)
		if f.Kind == protocol.KindError {
			var e pb.Error
			if err := codec.ParseProto(f.Body, &e); err != nil || e.Code != protocol.CodeSessionReplaced {
				t.Fatalf("the old connection got error %v (%v), want SESSION_REPLACED", e.Code, err)
			}
			return
		}
		if m, err := codec.ParseMessage(f.Body); err != nil || m.Seq != 4 {
			t.Fatalf("the old connection got seq %d (%v) after the move, want 4 at most", m.Seq, err)
		}
	}
}
