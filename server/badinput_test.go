package server_test

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/internal/node"
	"github.com/parley-im/parley/internal/nodetest"
	"github.com/parley-im/parley/internal/wiretest"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
	"github.com/parley-im/parley/server"
)

// TestBadInput sends each kind of bad input on its own connection and
// checks the error code from spec.md's table, the close its scope
// demands, and that a bystander conversation is unaffected throughout.
func TestBadInput(t *testing.T) {
	n := nodetest.Start(t, nil)
	alice, bob := n.RegisterOn(t, 0), n.RegisterOn(t, 1)
	a, _ := n.Login(t, alice, 0)
	b, _ := n.Login(t, bob, 0)
	a.Expect(protocol.KindSynced)
	b.Expect(protocol.KindSynced)
	mallory := n.Register(t, n.Phone())

	loginBytes := func(u wiretest.User, version uint32) []byte {
		buf, _ := codec.AppendProto(nil, protocol.KindLogin, &pb.Login{Version: version, User: u.ID, Device: u.Device, Credential: u.Cred})
		return buf
	}
	send := func(s codec.Send) []byte { return codec.AppendSend(nil, s) }
	tests := []struct {
		name   string
		login  bool   // log in as mallory first
		input  []byte // what the client sends
		code   protocol.Code
		closes bool
	}{
		{"send before login", false, send(codec.Send{To: alice.ID, CMID: 1, Body: []byte("x")}), protocol.CodeUnauthenticated, true},
		{"ack before login", false, codec.AppendAck(nil, 1), protocol.CodeUnauthenticated, true},
		{"kind zero", false, []byte{0x00, 0x00}, protocol.CodeMalformedFrame, true},
		{"length prefix too long", false, []byte{0x80, 0x80, 0x80, 0x01}, protocol.CodeMalformedFrame, true},
		{"oversized frame, header only", false, codec.AppendHeader(nil, protocol.KindSend, false, protocol.MaxClientFrameBody+1), protocol.CodeFrameTooLarge, true},
		{"malformed login body", false, []byte{0x02, 0x04, 0x08, 0x80}, protocol.CodeMalformedFrame, true},
		{"unsupported version", false, loginBytes(mallory, 99), protocol.CodeUnsupportedVersion, true},
		{"wrong credential", false, loginBytes(wiretest.User{ID: mallory.ID, Device: mallory.Device, Cred: make([]byte, 32)}, protocol.Version), protocol.CodeAuthFailed, true},
		{"server kind from client", false, codec.AppendSent(nil, 1, 1), protocol.CodeProtocolViolation, true},
		{"compressed frame", false, []byte{0x01, 0x81, 0x00}, protocol.CodeProtocolViolation, true},
		{"unknown client kind", false, codec.AppendFrame(nil, 50, []byte{1, 2, 3}), protocol.CodeUnknownKind, false},
		{"unknown kind after login", true, codec.AppendFrame(nil, 50, nil), protocol.CodeUnknownKind, false},
		{"second login", true, loginBytes(mallory, protocol.Version), protocol.CodeWrongState, false},
		{"request code after login", true, func() []byte {
			b, _ := codec.AppendProto(nil, protocol.KindRequestCode, &pb.RequestCode{Rid: 1, Phone: mallory.Phone, Version: 1})
			return b
		}(), protocol.CodeWrongState, false},
		{"malformed send body", true, []byte{0x02, 0x05, 0x08, 0x80}, protocol.CodeMalformedFrame, true},
		{"send without cmid", true, send(codec.Send{To: alice.ID, Body: []byte("x")}), protocol.CodeInvalidArgument, false},
		{"empty body", true, send(codec.Send{To: alice.ID, CMID: 5}), protocol.CodeInvalidArgument, false},
		{"body over 64 KiB", true, send(codec.Send{To: alice.ID, CMID: 6, Body: make([]byte, protocol.MaxMessageBody+1)}), protocol.CodeMessageTooLarge, false},
		{"send to nobody", true, send(codec.Send{To: 1 << 40, CMID: 7, Body: []byte("x")}), protocol.CodeNotFound, false},
		{"ack beyond delivered", true, codec.AppendAck(nil, 1000), protocol.CodeProtocolViolation, true},
		{"envelopes and a body", true, protoFrame(protocol.KindSend, &pb.Send{To: alice.ID, Cmid: 8, Body: []byte("x"), Envelopes: []*pb.Envelope{{Device: 1, Body: []byte("c")}}}), protocol.CodeInvalidArgument, false},
		{"envelopes to a group", true, protoFrame(protocol.KindSend, &pb.Send{Group: 1, Cmid: 9, Envelopes: []*pb.Envelope{{Device: 1, Body: []byte("c")}}}), protocol.CodeInvalidArgument, false},
		{"a device named twice", true, protoFrame(protocol.KindSend, &pb.Send{To: alice.ID, Cmid: 10, Envelopes: []*pb.Envelope{{Device: 1, Body: []byte("c")}, {Device: 1, Body: []byte("d")}}}), protocol.CodeInvalidArgument, false},
		{"envelope over 64 KiB", true, protoFrame(protocol.KindSend, &pb.Send{To: alice.ID, Cmid: 11, Envelopes: []*pb.Envelope{{Device: 1, Body: make([]byte, protocol.MaxMessageBody+1)}}}), protocol.CodeMessageTooLarge, false},
		{"envelopes for devices without keys", true, protoFrame(protocol.KindSend, &pb.Send{To: alice.ID, Cmid: 12, Envelopes: []*pb.Envelope{{Device: 1, Body: []byte("c")}}}), protocol.CodeDevicesChanged, false},
		{"a key of the wrong shape", true, protoFrame(protocol.KindKeysPublish, &pb.KeysPublish{Rid: 1, IdentityKey: make([]byte, 32), RegistrationId: 1, SignedPrekey: &pb.SignedPreKey{Key: make([]byte, 33), Signature: make([]byte, 64)}}), protocol.CodeInvalidArgument, false},
		{"keys of user 0", true, protoFrame(protocol.KindKeysFetch, &pb.KeysFetch{Rid: 2}), protocol.CodeInvalidArgument, false},
		{"bad phone", false, func() []byte {
			b, _ := codec.AppendProto(nil, protocol.KindRequestCode, &pb.RequestCode{Rid: 3, Phone: "555-1234", Version: 1})
			return b
		}(), protocol.CodeInvalidArgument, false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c *wiretest.Client
			if tt.login {
				c, _ = n.Login(t, mallory, 0)
				c.Expect(protocol.KindSynced)
			} else {
				c = n.Dial(t)
			}
			c.Write(tt.input)
			c.ExpectError(tt.code)
			if tt.closes {
				c.ExpectClosed()
				return
			}
			c.Write(codec.AppendFrame(nil, protocol.KindPing, nil))
			c.Expect(protocol.KindPong)
		})
		// The bystanders still talk.
		id := a.SendText(bob.ID, uint64(i+1), tt.name)
		if m := b.Message(); m.ID != id {
			t.Fatalf("after %q: bob got %+v, want %d", tt.name, m, id)
		}
	}
}

// protoFrame encodes a frame of kind k holding m.
func protoFrame(k protocol.Kind, m proto.Message) []byte {
	b, err := codec.AppendProto(nil, k, m)
	if err != nil {
		panic(err)
	}
	return b
}

// TestNotTLS: a client that does not speak TLS gets a TLS alert and is
// closed; TLS clients are unaffected.
func TestNotTLS(t *testing.T) {
	n := nodetest.Start(t, nil)
	conn, err := net.Dial("tcp", n.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, _ := io.ReadAll(conn)
	alert := []byte{0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 70} // fatal protocol_version
	if !bytes.Equal(got, alert) {
		t.Fatalf("non-TLS client got % x, want alert % x", got, alert)
	}
	n.Register(t, n.Phone())
}

// TestSlowHandshake: a client that stalls in the middle of its ClientHello
// is cut off after the handshake timeout.
func TestSlowHandshake(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) { c.Server = server.Config{HandshakeTimeout: 500 * time.Millisecond} })
	conn, err := net.Dial("tcp", n.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hello := clientHello(t)
	if _, err := conn.Write(hello[:len(hello)/2]); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(conn); err != nil {
		t.Fatalf("read: %v (want the server to close)", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("closed after %v, want about 0.5 s", d)
	}
	if got := n.Server().Stats().HandshakeFails.Load(); got == 0 {
		t.Fatal("handshake failure not counted")
	}
	n.Register(t, n.Phone())
}

// clientHello captures a real TLS 1.3 ClientHello.
func clientHello(t *testing.T) []byte {
	t.Helper()
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	go func() {
		_ = tls.Client(c1, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}).Handshake()
	}()
	buf := make([]byte, 4096)
	n, err := c2.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n]
}

// TestIdleTimeout: a logged-in connection that sends nothing for 1.5
// heartbeats is closed with IDLE_TIMEOUT; one that pings stays.
func TestIdleTimeout(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) { c.Server = server.Config{Heartbeat: time.Second} })
	u := n.Register(t, n.Phone())
	v := n.Register(t, n.Phone())
	start := time.Now() // before LOGIN, the last frame the silent one sends
	silent, ok := n.Login(t, u, 0)
	if ok.HeartbeatS != 1 {
		t.Fatalf("heartbeat %d, want 1", ok.HeartbeatS)
	}
	silent.Expect(protocol.KindSynced)
	busy, _ := n.Login(t, v, 0)
	busy.Expect(protocol.KindSynced)
	pinged := make(chan int, 1)
	go func() { // the busy one pings every 0.4 s, as a client's heartbeat does
		tick := time.NewTicker(400 * time.Millisecond)
		defer tick.Stop()
		sent := 0
		for time.Since(start) < 3500*time.Millisecond {
			if _, err := busy.Conn.Write(codec.AppendFrame(nil, protocol.KindPing, nil)); err == nil {
				sent++
			}
			<-tick.C
		}
		pinged <- sent
	}()
	silent.ExpectError(protocol.CodeIdleTimeout)
	silent.ExpectClosed()
	// Not before 1.5 s; the bound above only tells the heartbeat from the
	// default (a minute) with room for a loaded machine.
	if d := time.Since(start); d < 1400*time.Millisecond || d > 10*time.Second {
		t.Fatalf("closed after %v, want 1.5 s and a timer tick", d)
	}
	// Every ping written after the silent one's close is answered: the busy
	// one outlived 1.5 heartbeats of the time since its LOGIN.
	for range <-pinged {
		busy.Expect(protocol.KindPong)
	}
}

// TestNegotiatedHeartbeat: a client that asks for a heartbeat in LOGIN
// gets it clamped into the server's bounds in LOGIN_OK, and the idle
// timeout follows its own heartbeat, not the default ([S-6-8]).
func TestNegotiatedHeartbeat(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) {
		c.Server = server.Config{Heartbeat: time.Second, MinHeartbeat: time.Second, MaxHeartbeat: 2 * time.Second}
	})
	login := func(u wiretest.User, asked uint32) (*wiretest.Client, uint32) {
		c := n.Dial(t)
		c.Send(protocol.KindLogin, &pb.Login{Version: protocol.Version, User: u.ID, Device: u.Device, Credential: u.Cred, HeartbeatS: asked})
		var ok pb.LoginOk
		c.ExpectProto(protocol.KindLoginOK, &ok)
		c.Expect(protocol.KindSynced)
		return c, ok.HeartbeatS
	}
	u, v := n.Register(t, n.Phone()), n.Register(t, n.Phone())
	if _, got := login(u, 0); got != 1 {
		t.Fatalf("asked for no heartbeat, got %d s, want the default 1", got)
	}
	if _, got := login(v, 3600); got != 2 {
		t.Fatalf("asked for 3600 s, got %d s, want the maximum 2", got)
	}
	short, got := login(u, 1)
	if got != 1 {
		t.Fatalf("asked for 1 s, got %d", got)
	}
	start := time.Now()
	long, _ := login(v, 2)
	short.ExpectError(protocol.CodeIdleTimeout)
	shortAfter := time.Since(start)
	long.ExpectError(protocol.CodeIdleTimeout)
	longAfter := time.Since(start)
	// 1.5 s and 3 s of silence, give or take the timer's resolution; the
	// long one would close with the short one if the default applied.
	if longAfter < 2800*time.Millisecond || longAfter-shortAfter < time.Second {
		t.Fatalf("closed after %v (heartbeat 1 s) and %v (heartbeat 2 s)", shortAfter, longAfter)
	}
}

// TestShutdownSendsGoAway: a graceful shutdown tells every client when to
// come back.
func TestShutdownSendsGoAway(t *testing.T) {
	n := nodetest.Start(t, nil)
	u := n.Register(t, n.Phone())
	c, _ := n.Login(t, u, 0)
	c.Expect(protocol.KindSynced)
	fresh := n.Dial(t)
	fresh.Write(codec.AppendFrame(nil, protocol.KindPing, nil))
	fresh.Expect(protocol.KindPong)
	go func() { _ = n.Server().Shutdown(t.Context()) }()
	for _, cl := range []*wiretest.Client{c, fresh} {
		var g pb.GoAway
		cl.ExpectProto(protocol.KindGoAway, &g)
		if g.Code != protocol.CodeShuttingDown || g.ReconnectAfterMs == 0 {
			t.Fatalf("GoAway = %v", &g)
		}
		cl.ExpectClosed()
	}
}

// TestLoginOverloadedGoesAway: a LOGIN the shard cannot take is answered
// with GOAWAY OVERLOADED and a close, so the frames pipelined behind it are
// not mistaken for unauthenticated ones ([S-7-3]).
func TestLoginOverloadedGoesAway(t *testing.T) {
	n := nodetest.Start(t, nil)
	u := n.Register(t, n.Phone())
	for _, s := range n.Shards() {
		s.Close() // a closed shard refuses every op, as a full one refuses logins
	}
	c := n.Dial(t)
	login, _ := codec.AppendProto(nil, protocol.KindLogin, &pb.Login{Version: protocol.Version, User: u.ID, Device: u.Device, Credential: u.Cred})
	c.Write(append(login, codec.AppendSend(nil, codec.Send{To: u.ID, CMID: 1, Body: []byte("x")})...))
	var g pb.GoAway
	c.ExpectProto(protocol.KindGoAway, &g)
	if g.Code != protocol.CodeOverloaded || g.ReconnectAfterMs == 0 {
		t.Fatalf("GoAway = %v, want OVERLOADED with a delay", &g)
	}
	c.ExpectClosed()
}
