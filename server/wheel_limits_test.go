package server

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

// TestWheelHandshakeDeadlines pins the timer's decisions before OPEN
// ([S-5-5]): the ClientHello deadline, then the handshake deadline, both
// from the accept, then the login deadline; and a closing connection is
// looked at every tick.
func TestWheelHandshakeDeadlines(t *testing.T) {
	cfg := Config{}
	cfg.setDefaults()
	w := newWheel(&Server{cfg: cfg})
	const opened = int64(1_000_000_000_000)
	at := func(d time.Duration) int64 { return opened + int64(d) }
	for _, tt := range []struct {
		name    string
		phase   uint32
		closing bool
		now     int64
		want    wheelAction
		due     int64 // nanos the next check is due at, when kept
	}{
		{"silent, just before the ClientHello deadline", phaseHello, false, at(5*time.Second - 1), wheelKeep, at(5 * time.Second)},
		{"silent at the ClientHello deadline", phaseHello, false, at(5 * time.Second), wheelHello, 0},
		{"ClientHello in, before the handshake deadline", phaseHandshake, false, at(9 * time.Second), wheelKeep, at(10 * time.Second)},
		{"ClientHello in, at the handshake deadline", phaseHandshake, false, at(10 * time.Second), wheelHandshake, 0},
		{"TLS done, past the handshake deadline", phaseOpen, false, at(11 * time.Second), wheelTrim, at(30 * time.Second)},
		{"TLS done, at the login deadline", phaseOpen, false, at(30 * time.Second), wheelExpire, 0},
		{"closing", phaseOpen, true, at(time.Second), wheelDrain, 0},
	} {
		c := &conn{openedAt: opened}
		c.phase.Store(tt.phase)
		c.closing.Store(tt.closing)
		c.lastActive.Store(opened)
		due, act := w.check(c, tt.now)
		if act != tt.want {
			t.Errorf("%s: action %d, want %d", tt.name, act, tt.want)
		}
		if tt.due != 0 && due != (tt.due+w.unit-1)/w.unit {
			t.Errorf("%s: next check at tick %d, want %d", tt.name, due, (tt.due+w.unit-1)/w.unit)
		}
	}
}

// TestWheelLoginBringsIdleDeadline ([S-6-8]): a connection the timer
// looked at during its handshake sits in the slot of the handshake
// deadline, 10 s on; once it logs in, its idle timeout (1.5 heartbeats of
// 1 s) fires on time, not at that slot.
func TestWheelLoginBringsIdleDeadline(t *testing.T) {
	const opened = int64(1_000_000_000_000)
	at := func(d time.Duration) time.Time { return time.Unix(0, opened+int64(d)) }
	cfg := Config{Heartbeat: time.Second, Now: func() time.Time { return at(0) }}
	cfg.setDefaults()
	w := newWheel(&Server{cfg: cfg})
	c := &conn{openedAt: opened, wslot: -1, closed: true} // closed: the timer's Close is a no-op
	c.phase.Store(phaseHandshake)
	c.lastActive.Store(opened)
	w.add(c)
	w.tick(at(200 * time.Millisecond)) // in the handshake: next look at 10 s
	if c.wslot < 0 {
		t.Fatal("a connection in its handshake left the wheel")
	}
	// LOGIN at 0.3 s, the last the connection sends.
	c.phase.Store(phaseOpen)
	c.heartbeatS = 1
	c.lastActive.Store(opened + int64(300*time.Millisecond))
	c.authed.Store(true)
	w.authenticated(c)
	w.tick(at(1700 * time.Millisecond))
	if c.wslot < 0 {
		t.Fatal("idle timeout before 1.5 heartbeats")
	}
	w.tick(at(1800*time.Millisecond + time.Duration(w.unit)))
	if c.wslot >= 0 {
		t.Fatal("no idle timeout a tick after 1.5 heartbeats")
	}
}

// TestLimitKey: the address a client is counted under.
func TestLimitKey(t *testing.T) {
	for _, tt := range []struct {
		addr      string
		plaintext bool
		loopback  bool // LimitLoopback
		want      string
	}{
		{"192.0.2.7:5000", false, false, "192.0.2.7"},
		{"[2001:db8:1:2:3:4:5:6]:5000", false, false, "2001:db8:1:2::"}, // one /64
		{"[::ffff:192.0.2.7]:5000", false, false, "192.0.2.7"},
		{"127.0.0.2:5000", false, false, ""}, // loopback: exempt
		{"[::1]:5000", false, false, ""},
		{"127.0.0.2:5000", false, true, "127.0.0.2"},
		{"192.0.2.7:5000", true, false, ""}, // plaintext: everyone is the proxy
	} {
		s := &Server{cfg: Config{Plaintext: tt.plaintext, LimitLoopback: tt.loopback}}
		ap := netip.MustParseAddrPort(tt.addr)
		got := s.limitKey(net.TCPAddrFromAddrPort(ap))
		want := netip.Addr{}
		if tt.want != "" {
			want = netip.MustParseAddr(tt.want)
		}
		if got != want {
			t.Errorf("limitKey(%s, plaintext %v, loopback %v) = %v, want %v", tt.addr, tt.plaintext, tt.loopback, got, want)
		}
	}
}
