package tls13

import (
	"bytes"
	"crypto/tls"
	"sync/atomic"
	"testing"
	"time"
)

// resumeEcho dials e with cfg, echoes messages of several sizes (the
// first server record after a ticket must use the next sequence number,
// and a ticket arrives on every handshake, resumed or not) and reports
// whether the handshake resumed a session.
func resumeEcho(t *testing.T, e *echoServer, cfg *tls.Config) bool {
	t.Helper()
	conn := e.dial(t, cfg, nil)
	for _, n := range []int{1, 300, maxPlaintext + 7} {
		if err := echo(conn, randomBytes(n)); err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
	}
	resumed := conn.ConnectionState().DidResume
	_ = conn.Close()
	return resumed
}

// TestResumption: a client with a session cache does a full handshake,
// then resumes with the ticket it was sent, and keeps resuming with the
// fresh ticket each handshake brings; data flows both ways each time.
func TestResumption(t *testing.T) {
	e := startEcho(t, Config{}, nil)
	cfg := clientTLSConfig()
	if resumeEcho(t, e, cfg) {
		t.Fatal("the first handshake resumed")
	}
	for i := range 3 {
		if !resumeEcho(t, e, cfg) {
			t.Fatalf("reconnect %d did a full handshake", i)
		}
	}
	// A client without a cache still does full handshakes.
	nocache := clientTLSConfig()
	nocache.ClientSessionCache = nil
	if resumeEcho(t, e, nocache) {
		t.Fatal("a client without a session cache resumed")
	}
}

// TestResumptionOff: with TLS.SessionTicketsDisabled no ticket is sent and
// every handshake is full.
func TestResumptionOff(t *testing.T) {
	off := serverTLSConfig()
	off.SessionTicketsDisabled = true
	e := startEcho(t, Config{TLS: off}, nil)
	cfg := clientTLSConfig()
	for i := range 2 {
		if resumeEcho(t, e, cfg) {
			t.Fatalf("handshake %d resumed with tickets disabled", i)
		}
	}
}

// TestResumptionAcrossServers: a ticket from one Server resumes on another
// built with the same TicketSecret (a restarted node), not on one with a
// different secret, which falls back to a full handshake.
func TestResumptionAcrossServers(t *testing.T) {
	secret := bytes.Repeat([]byte{0x42}, 32)
	first := startEcho(t, Config{TicketSecret: secret}, nil)
	cfg := clientTLSConfig()
	resumeEcho(t, first, cfg)
	restarted := startEcho(t, Config{TicketSecret: secret}, nil)
	if !resumeEcho(t, restarted, cfg) {
		t.Error("a ticket did not survive a restart with the same secret")
	}
	cfg2 := clientTLSConfig()
	resumeEcho(t, first, cfg2)
	other := startEcho(t, Config{TicketSecret: bytes.Repeat([]byte{0x43}, 32)}, nil)
	if resumeEcho(t, other, cfg2) {
		t.Error("a ticket resumed under another secret")
	}
}

// TestTicketRotation: a ticket issued in one period resumes in the next
// (the previous period's key is kept) but not in the one after.
func TestTicketRotation(t *testing.T) {
	var offset atomic.Int64 // periods ahead of the wall clock
	e := startEcho(t, Config{TicketRotation: time.Hour}, func(e *echoServer) {
		e.srv.now = func() time.Time { return time.Now().Add(time.Duration(offset.Load()) * time.Hour) }
	})
	issue := func() *tls.Config {
		cfg := clientTLSConfig()
		resumeEcho(t, e, cfg)
		return cfg
	}
	cfg := issue()
	offset.Store(1)
	if !resumeEcho(t, e, cfg) {
		t.Error("a ticket from the previous period did not resume")
	}
	offset.Store(0)
	cfg = issue()
	offset.Store(2)
	if resumeEcho(t, e, cfg) {
		t.Error("a ticket two periods old resumed")
	}
}

// TestTicketKeys pins the key derivation (a restart must derive the same
// keys) and the order handed to crypto/tls: current period first.
func TestTicketKeys(t *testing.T) {
	tk, err := newTicketKeys(bytes.Repeat([]byte{1}, 32), time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Unix(10*3600+5, 0)
	keys := tk.current(at)
	if len(keys) != 2 || keys[0] != tk.key(10) || keys[1] != tk.key(9) || keys[0] == keys[1] {
		t.Fatalf("keys for period 10: %x", keys)
	}
	// RFC 5869 HKDF-SHA256, computed independently (Python's hmac):
	// PRK = HMAC(32 zero bytes, secret); T(1) = HMAC(PRK, info || 0x01).
	want := unhex(t, "44faea9703e3b08610ff59c2114095c5702854e0e20d759ac4a30545a6cf3036")
	if !bytes.Equal(keys[0][:], want) {
		t.Errorf("key of period 10 = %x, want %x", keys[0], want)
	}
	if again := tk.current(at.Add(time.Minute)); &again[0] != &keys[0] {
		t.Error("keys re-derived within one period")
	}
}
