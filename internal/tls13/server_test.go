package tls13

import (
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"
)

func TestConfigValidate(t *testing.T) {
	_, err := NewServer(Config{MaxHandshakes: -1, HandshakeTimeout: -1, MaxHandshakeInput: 100, MaxPipelinedInput: -5, TicketSecret: make([]byte, 16), TicketRotation: time.Second})
	for _, want := range []string{"TLS is nil", "MaxHandshakes", "HandshakeTimeout", "MaxHandshakeInput", "MaxPipelinedInput", "TicketSecret", "TicketRotation"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("validate: %v; want it to mention %q", err, want)
		}
	}
	if _, err := NewServer(Config{TLS: &tls.Config{}}); err == nil {
		t.Error("a config without certificates was accepted")
	}
	s, err := NewServer(Config{TLS: serverTLSConfig()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.max != defaultMaxHandshakes || s.timeout != defaultHandshakeTimeout || s.maxInput != defaultMaxHandshakeInput || s.maxPipelined != defaultMaxPipelinedInput {
		t.Errorf("defaults not applied: %+v", s)
	}
	if s.tls.MinVersion != tls.VersionTLS13 || s.tls.SessionTicketsDisabled || s.tls.KeyLogWriter != nil {
		t.Error("TLS settings not forced")
	}
	if s.tickets == nil || s.tickets.rotation != defaultTicketRotation || s.tickets.secret == ([32]byte{}) {
		t.Errorf("session tickets not set up: %+v", s.tickets)
	}
	off := serverTLSConfig()
	off.SessionTicketsDisabled = true
	s2, err := NewServer(Config{TLS: off})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if s2.tickets != nil || !s2.configFor(&handshake{}).SessionTicketsDisabled {
		t.Error("TLS.SessionTicketsDisabled not honoured")
	}
}

// wakeCounter is a gnet.Conn that counts Wake calls.
type wakeCounter struct {
	gnet.Conn
	wakes atomic.Int32
}

func (w *wakeCounter) Wake(gnet.AsyncCallback) error { w.wakes.Add(1); return nil }

// TestSlotQueue walks the handshake slots and the wait queue: FIFO grants,
// a queued connection closing, a granted one closing before it starts, and
// Server.Close waking the waiters.
func TestSlotQueue(t *testing.T) {
	s, err := NewServer(Config{TLS: serverTLSConfig(), MaxHandshakes: 1})
	if err != nil {
		t.Fatal(err)
	}
	var hs [4]*handshake
	var gcs [4]*wakeCounter
	for i := range hs {
		gcs[i] = &wakeCounter{}
		hs[i] = &handshake{srv: s, gc: gcs[i]}
	}
	claim := func(i int, want bool) {
		t.Helper()
		if ok, err := s.claim(hs[i]); ok != want || err != nil {
			t.Fatalf("claim(%d) = %v, %v; want %v", i, ok, err, want)
		}
	}
	claim(0, true)
	claim(1, false)
	claim(2, false)
	claim(3, false)
	claim(1, false) // asking again does not queue twice
	s.forget(hs[1]) // closed while queued
	hs[0].started = true
	s.release(hs[0]) // hs[0]'s goroutine exits: the slot goes to hs[2], skipping hs[1]
	if gcs[1].wakes.Load() != 0 || gcs[2].wakes.Load() != 1 {
		t.Fatalf("wakes after release: %d, %d; want 0, 1", gcs[1].wakes.Load(), gcs[2].wakes.Load())
	}
	claim(2, true)
	s.forget(hs[2]) // closed after the grant, before starting: passes the slot on
	if gcs[3].wakes.Load() != 1 {
		t.Fatal("the slot was not passed to the next in line")
	}
	claim(3, true)
	s.forget(hs[3])
	if s.active != 0 || s.head != nil {
		t.Fatalf("active %d, queue %v; want 0, empty", s.active, s.head)
	}

	// Server.Close wakes whoever waits; their next claim fails, and the
	// slot of a handshake still running comes back without being passed on.
	busy := &handshake{srv: s, gc: &wakeCounter{}}
	waiting := &wakeCounter{}
	w := &handshake{srv: s, gc: waiting}
	if ok, _ := s.claim(busy); !ok {
		t.Fatal("claim of the free slot failed")
	}
	busy.started = true
	if ok, _ := s.claim(w); ok {
		t.Fatal("claim with no free slot succeeded")
	}
	s.Close()
	if waiting.wakes.Load() != 1 {
		t.Error("Close did not wake the waiting connection")
	}
	if _, err := s.claim(w); !errors.Is(err, errServerClosed) {
		t.Errorf("claim after Close: %v, want errServerClosed", err)
	}
	s.release(busy)
	if s.active != 0 || waiting.wakes.Load() != 1 {
		t.Errorf("after Close and release: active %d, wakes %d", s.active, waiting.wakes.Load())
	}
}

// reentrantConn closes tc from inside Write, as gnet does when a socket
// write fails: it runs OnClose before Write returns.
type reentrantConn struct {
	fakeConn
	tc *Conn
}

func (c *reentrantConn) Write(b []byte) (int, error) {
	c.tc.Close()
	return 0, errors.New("write: broken pipe")
}

func TestCloseInsideWrite(t *testing.T) {
	for _, name := range []string{"KeyUpdate reply", "alert"} {
		t.Run(name, func(t *testing.T) {
			server, client := connPair(suiteAES128GCM)
			c := &reentrantConn{tc: server}
			if name == "KeyUpdate reply" {
				c.in = client.Seal(client.sendKeyUpdate(nil, true), []byte("data"))
			} else {
				c.in = []byte{23, 3, 3, 0x41, 0x01}
			}
			plain, err := server.Feed(c, nil)
			if name == "KeyUpdate reply" && (err != nil || string(plain) != "data") {
				t.Fatalf("Feed = %q, %v", plain, err)
			}
			if server.Ready() || server.state != stateClosed {
				t.Fatal("Close inside Write did not stick")
			}
			// The integrator's callback goes on: nothing panics, nothing is sealed.
			if out := server.Seal(nil, []byte("reply")); len(out) != 0 {
				t.Error("Seal after Close appended bytes")
			}
			if out := server.CloseNotify(nil); len(out) != 0 {
				t.Error("CloseNotify after Close appended bytes")
			}
			if _, err := server.Feed(c, nil); err == nil {
				t.Error("Feed after Close succeeded")
			}
		})
	}
}

func TestHandshakeDeadlineWhileQueued(t *testing.T) {
	s, err := NewServer(Config{TLS: serverTLSConfig(), MaxHandshakes: 1, HandshakeTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Unix(1000, 0)
	s.now = func() time.Time { return now }
	s.active = 1 // the only slot is taken
	tc := s.NewConn()
	c := &queuedConn{fakeConn: fakeConn{in: []byte{22, 3, 1, 0, 5, 1, 0, 0, 1, 0}}} // a whole (tiny) ClientHello
	if _, err := tc.Feed(c, nil); err != nil || tc.state != stateQueued {
		t.Fatalf("first Feed: %v, state %d; want queued", err, tc.state)
	}
	now = now.Add(2 * time.Second)
	if _, err := tc.Feed(c, nil); !errors.Is(err, ErrHandshake) || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("Feed past the deadline: %v", err)
	}
	if s.head != nil {
		t.Error("the expired connection is still queued")
	}
	s.active = 0
}

// queuedConn is a fakeConn with the addresses newHandshake records.
type queuedConn struct{ fakeConn }

func (c *queuedConn) LocalAddr() net.Addr  { return nil }
func (c *queuedConn) RemoteAddr() net.Addr { return nil }
