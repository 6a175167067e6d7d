package tls13

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestHelloComplete(t *testing.T) {
	hello := clientHello(t)
	// Every strict prefix of a real ClientHello asks for more; the whole
	// one is complete.
	for i := range len(hello) {
		if done, err := helloComplete(hello[:i], defaultMaxHandshakeInput); done || err != nil {
			t.Fatalf("prefix of %d of %d bytes: %v, %v; want incomplete", i, len(hello), done, err)
		}
	}
	if done, err := helloComplete(hello, defaultMaxHandshakeInput); !done || err != nil {
		t.Fatalf("whole ClientHello: %v, %v", done, err)
	}

	// The same message split over three records, the handshake header
	// itself split: complete only with the last record.
	body := hello[recordHeaderLen:]
	split := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, typeHandshake, 3, 3, byte(len(p)>>8), byte(len(p)))
			b = append(b, p...)
		}
		return b
	}
	frag := split(body[:2], body[2:100], body[100:])
	if done, err := helloComplete(frag[:len(frag)-1], defaultMaxHandshakeInput); done || err != nil {
		t.Fatalf("fragmented, one byte short: %v, %v", done, err)
	}
	if done, err := helloComplete(frag, defaultMaxHandshakeInput); !done || err != nil {
		t.Fatalf("fragmented: %v, %v", done, err)
	}

	for _, tt := range []struct {
		name string
		in   []byte
		want string
	}{
		{"alert record", []byte{21, 3, 1, 0, 2, 2, 40}, "record of type 21"},
		{"second record not handshake", append(split(body[:2]), 23, 3, 3, 0, 1, 0), "record of type 23"},
		{"empty record", []byte{22, 3, 1, 0, 0}, "handshake record of 0 bytes"},
		{"oversized record", []byte{22, 3, 1, 0x40, 1}, "handshake record of 16385 bytes"},
		{"ServerHello", []byte{22, 3, 3, 0, 4, 2, 0, 0, 0}, "type 2, not a ClientHello"},
		{"ClientHello declared too long", []byte{22, 3, 1, 0x40, 0, 1, 0, 0x40, 0}, "exceeds MaxHandshakeInput"},
	} {
		if _, err := helloComplete(tt.in, defaultMaxHandshakeInput); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want an error containing %q", tt.name, err, tt.want)
		}
	}
	// Many tiny records that never finish one declared within the cap.
	var tiny []byte
	tiny = append(tiny, split([]byte{1, 0, 0x0f, 0})...) // a ClientHello of 3,844 bytes
	for len(tiny) < 5000 {
		tiny = append(tiny, split([]byte{0})...)
	}
	if _, err := helloComplete(tiny, 4096); err == nil || !strings.Contains(err.Error(), "without a whole ClientHello") {
		t.Errorf("1-byte records past the cap: %v", err)
	}
}

// TestPartialHelloTakesNoSlot is the slowloris case: clients that send a
// first byte, or all of a ClientHello but its last byte, and then stall
// take no handshake slot, so a real client gets through at once although
// there is only one slot and the stalled ones have not timed out.
func TestPartialHelloTakesNoSlot(t *testing.T) {
	e := startEcho(t, Config{MaxHandshakes: 1}, nil)
	hello := clientHello(t)
	const stalled = 6
	for i := range stalled {
		raw, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		part := hello[:1]
		if i%2 == 1 {
			part = hello[:len(hello)-1]
		}
		if _, err := raw.Write(part); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the server to read every stalled client", func() bool { return e.traffic.Load() >= stalled })
	if busy, waiting := e.srv.Slots(); busy != 0 || waiting != 0 {
		t.Fatalf("stalled clients hold %d slots and %d places in the queue, want none", busy, waiting)
	}
	conn := e.dial(t, nil, nil)
	_ = conn.SetDeadline(time.Now().Add(3 * time.Second)) // far below HandshakeTimeout (10 s)
	if err := echo(conn, []byte("through")); err != nil {
		t.Fatal(err)
	}
}

// TestHandshakesPerSource: a source with MaxHandshakesPerSource handshakes
// stalled waiting for the client's Finished cannot start another; the
// refused connection is closed, other sources are unaffected, and the
// count comes back when a stalled one goes away.
func TestHandshakesPerSource(t *testing.T) {
	limited := netip.MustParseAddr("192.0.2.1")
	var flooder atomic.Bool
	e := startEcho(t, Config{
		MaxHandshakes:          8,
		MaxHandshakesPerSource: 2,
		Source: func(net.Addr) netip.Addr {
			if flooder.Load() {
				return limited
			}
			return netip.Addr{}
		},
	}, nil)
	hello := clientHello(t)
	flooder.Store(true)
	var stalled []net.Conn
	for range 2 {
		raw, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		if _, err := raw.Write(hello); err != nil {
			t.Fatal(err)
		}
		stalled = append(stalled, raw)
	}
	waitFor(t, "two running handshakes", func() bool { busy, _ := e.srv.Slots(); return busy == 2 })
	third, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	if _, err := third.Write(hello); err != nil {
		t.Fatal(err)
	}
	if err := e.nextErr(t); !errors.Is(err, ErrHandshake) || !errors.Is(err, ErrTooManyHandshakes) {
		t.Fatalf("server error %v, want ErrHandshake wrapping ErrTooManyHandshakes", err)
	}
	_ = third.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := io.Copy(io.Discard, third); err != nil || n != 0 {
		t.Fatalf("refused connection: read %d bytes, %v; want EOF and nothing written", n, err)
	}

	flooder.Store(false) // another source gets a slot meanwhile
	if err := echo(e.dial(t, nil, nil), []byte("other source")); err != nil {
		t.Fatal(err)
	}
	flooder.Store(true)
	stalled[0].Close()
	waitFor(t, "the closed handshake's slot", func() bool { busy, _ := e.srv.Slots(); return busy == 1 })
	if err := echo(e.dial(t, nil, nil), []byte("limited source again")); err != nil {
		t.Fatal(err)
	}
	// A handshake's goroutine wakes its connection, then gives back its
	// slot and count: the echo may come first.
	waitFor(t, "the source's count to be its one stalled handshake", func() bool {
		e.srv.mu.Lock()
		defer e.srv.mu.Unlock()
		return e.srv.sources[limited] == 1
	})
}
