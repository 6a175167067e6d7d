package tls13

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Sizes around the 16 KiB record boundary and well past it.
var echoSizes = []int{1, 64, 1000, maxPlaintext - 1, maxPlaintext, maxPlaintext + 1, 2 * maxPlaintext, 3*maxPlaintext + 7, 100000, 1 << 20}

func TestEchoSizes(t *testing.T) {
	e := startEcho(t, Config{}, nil)
	conn := e.dial(t, nil, nil)
	for _, n := range echoSizes {
		if err := echo(conn, randomBytes(n)); err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
	}
	if got := conn.ConnectionState().CipherSuite; got != tls.TLS_AES_128_GCM_SHA256 && got != tls.TLS_CHACHA20_POLY1305_SHA256 {
		t.Errorf("suite %s", tls.CipherSuiteName(got))
	}
}

// TestEchoIdle calls Idle after every callback, so every record rebuilds
// the AEADs.
func TestEchoIdle(t *testing.T) {
	e := startEcho(t, Config{}, func(e *echoServer) { e.idle = true })
	conn := e.dial(t, nil, nil)
	for _, n := range echoSizes[:6] {
		if err := echo(conn, randomBytes(n)); err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
	}
}

// byteConn splits every write into 1-byte writes.
type byteConn struct{ net.Conn }

func (c byteConn) Write(p []byte) (int, error) {
	for i := range p {
		if _, err := c.Conn.Write(p[i : i+1]); err != nil {
			return i, err
		}
	}
	return len(p), nil
}

func TestOneByteWrites(t *testing.T) {
	e := startEcho(t, Config{}, nil)
	conn := e.dial(t, nil, func(c net.Conn) net.Conn { return byteConn{c} })
	for _, n := range []int{1, 100, 3000, maxPlaintext + 3} {
		if err := echo(conn, randomBytes(n)); err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
	}
}

// holdConn sends its first write (the ClientHello) at once and holds every
// later write until flush: the client's Finished and the application data
// written right after Handshake then reach the server in one segment.
type holdConn struct {
	net.Conn
	mu     sync.Mutex
	writes int
	held   []byte
}

func (c *holdConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes++
	if c.writes == 1 || c.writes < 0 {
		return c.Conn.Write(p)
	}
	c.held = append(c.held, p...)
	return len(p), nil
}

func (c *holdConn) flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, err := c.Conn.Write(c.held)
	c.held = nil
	c.writes = -1 << 30 // pass later writes through
	return err
}

func TestPipelinedAfterFinished(t *testing.T) {
	for _, n := range []int{64, maxPlaintext + 100, 12000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			e := startEcho(t, Config{}, nil)
			var hc *holdConn
			conn := e.dial(t, nil, func(c net.Conn) net.Conn { hc = &holdConn{Conn: c}; return hc })
			if err := conn.Handshake(); err != nil {
				t.Fatal(err)
			}
			msg := randomBytes(n)
			if _, err := conn.Write(msg); err != nil {
				t.Fatal(err)
			}
			if err := hc.flush(); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, n)
			if _, err := io.ReadFull(conn, got); err != nil || !bytes.Equal(got, msg) {
				t.Fatalf("echo: %v", err)
			}
		})
	}
}

func TestManyClients(t *testing.T) {
	e := startEcho(t, Config{MaxHandshakes: 8}, nil)
	const clients = 100
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		wg.Go(func() {
			conn := e.dial(t, nil, nil)
			for _, n := range []int{1 + i, 5000, maxPlaintext + i} {
				if err := echo(conn, randomBytes(n)); err != nil {
					errs <- fmt.Errorf("client %d, %d bytes: %w", i, n, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := e.ready.Load(); got != clients {
		t.Errorf("%d handshakes completed, want %d", got, clients)
	}
}

// TestOneHandshakeSlot runs several clients through a single handshake
// slot; each handshake is slowed down so that the others queue.
func TestOneHandshakeSlot(t *testing.T) {
	var running, maxRunning atomic.Int32
	cfg := serverTLSConfig()
	cert := cfg.Certificates[0]
	cfg.Certificates = nil
	cfg.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		n := running.Add(1)
		defer running.Add(-1)
		for m := maxRunning.Load(); n > m && !maxRunning.CompareAndSwap(m, n); m = maxRunning.Load() {
		}
		time.Sleep(30 * time.Millisecond)
		return &cert, nil
	}
	e := startEcho(t, Config{TLS: cfg, MaxHandshakes: 1}, nil)
	const clients = 6
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		wg.Go(func() {
			if err := echo(e.dial(t, nil, nil), []byte(fmt.Sprint("client ", i))); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if m := maxRunning.Load(); m != 1 {
		t.Errorf("%d handshakes ran at once, want 1", m)
	}
	e.srv.mu.Lock()
	active, queued := e.srv.active, e.srv.head != nil
	e.srv.mu.Unlock()
	if active != 0 || queued {
		t.Errorf("after all handshakes: %d slots in use, queue non-empty %v", active, queued)
	}
}

// clientHello returns the bytes of a real ClientHello.
func clientHello(t *testing.T) []byte {
	t.Helper()
	client, server := net.Pipe()
	defer server.Close()
	go func() {
		_ = tls.Client(client, clientTLSConfig()).Handshake()
		client.Close()
	}()
	buf := make([]byte, 4096)
	n, err := server.Read(buf)
	if err != nil || n < 100 {
		t.Fatalf("reading ClientHello: %d bytes, %v", n, err)
	}
	return buf[:n]
}

// TestHandshakeTimeout is the stalled-client case: a whole ClientHello
// and then nothing. The handshake, holding the only slot, times out and
// the server closes the connection.
func TestHandshakeTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	e := startEcho(t, Config{HandshakeTimeout: timeout, MaxHandshakes: 1}, nil)
	hello := clientHello(t)
	raw, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	start := time.Now()
	if _, err := raw.Write(hello); err != nil {
		t.Fatal(err)
	}
	_ = raw.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, raw); err != nil { // the server's flight, then EOF
		t.Fatalf("read: %v; want EOF", err)
	}
	if d := time.Since(start); d < timeout {
		t.Errorf("closed after %v, before the %v timeout", d, timeout)
	}
	if err := e.nextErr(t); !errors.Is(err, ErrHandshake) || !strings.Contains(err.Error(), "timed out") {
		t.Errorf("server error %v, want a timed-out ErrHandshake", err)
	}
	// The slot was given back: a real client gets through.
	if err := echo(e.dial(t, nil, nil), []byte("next")); err != nil {
		t.Fatal(err)
	}
}

// TestCloseMidHandshake closes the TCP connection while the handshake
// goroutine waits for the client's Finished: OnClose's Conn.Close stops it
// and frees the only slot.
func TestCloseMidHandshake(t *testing.T) {
	e := startEcho(t, Config{MaxHandshakes: 1}, nil)
	hello := clientHello(t)
	for range 3 {
		raw, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := raw.Write(hello); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the handshake to start", func() bool {
			e.srv.mu.Lock()
			defer e.srv.mu.Unlock()
			return e.srv.active == 1
		})
		raw.Close()
		waitFor(t, "the slot to be freed", func() bool {
			e.srv.mu.Lock()
			defer e.srv.mu.Unlock()
			return e.srv.active == 0
		})
	}
	if err := echo(e.dial(t, nil, nil), []byte("next")); err != nil {
		t.Fatal(err)
	}
}

// TestServerCloseMidHandshake closes the Server while a handshake is
// stalled and another connection waits for the slot.
func TestServerCloseMidHandshake(t *testing.T) {
	e := startEcho(t, Config{MaxHandshakes: 1}, nil)
	hello := clientHello(t)
	var raws []net.Conn
	for range 2 {
		raw, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		if _, err := raw.Write(hello); err != nil {
			t.Fatal(err)
		}
		raws = append(raws, raw)
	}
	waitFor(t, "one running and one queued handshake", func() bool {
		e.srv.mu.Lock()
		defer e.srv.mu.Unlock()
		return e.srv.active == 1 && e.srv.head != nil
	})
	e.srv.Close()
	for _, raw := range raws {
		_ = raw.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.Copy(io.Discard, raw); err != nil { // the running one's flight, then EOF
			t.Fatalf("read: %v; want EOF", err)
		}
	}
	for range 2 {
		if err := e.nextErr(t); !errors.Is(err, ErrHandshake) || !errors.Is(err, errServerClosed) {
			t.Errorf("server error %v, want ErrHandshake wrapping errServerClosed", err)
		}
	}
}

func TestHandshakeInputCap(t *testing.T) {
	e := startEcho(t, Config{MaxHandshakeInput: 4096}, nil)
	raw, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	// A record header announcing 16 KiB and a ClientHello of 5,000 bytes:
	// refused on its headers, before the bytes arrive.
	junk := []byte{22, 3, 1, 0x40, 0, 1, 0, 0x13, 0x88}
	if _, err := raw.Write(junk); err != nil {
		t.Fatal(err)
	}
	_ = raw.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.Copy(io.Discard, raw)
	if err := e.nextErr(t); !errors.Is(err, ErrHandshake) || !strings.Contains(err.Error(), "MaxHandshakeInput") {
		t.Errorf("server error %v, want ErrHandshake for MaxHandshakeInput", err)
	}
}

func TestNotTLS(t *testing.T) {
	e := startEcho(t, Config{}, nil)
	raw, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Write([]byte("GET / HTTP/1.1\r\nHost: parley\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	_ = raw.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(raw)
	if want := AlertRecord(nil, uint8(alertUnexpectedMessage)); err != nil || !bytes.Equal(got, want) {
		t.Errorf("read %x, %v; want the alert %x then EOF", got, err, want)
	}
	if err := e.nextErr(t); !errors.Is(err, ErrNotTLS) {
		t.Errorf("server error %v, want ErrNotTLS", err)
	}
}

func TestBadHandshake(t *testing.T) {
	e := startEcho(t, Config{}, nil)
	cfg := clientTLSConfig()
	cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	conn := e.dial(t, cfg, nil)
	if err := conn.Handshake(); err == nil || !strings.Contains(err.Error(), "protocol version") {
		t.Errorf("TLS 1.2 client: %v, want a protocol version alert", err)
	}
	if err := e.nextErr(t); !errors.Is(err, ErrHandshake) {
		t.Errorf("server error %v, want ErrHandshake", err)
	}
}

func TestClientCloseNotify(t *testing.T) {
	e := startEcho(t, Config{}, nil)
	conn := e.dial(t, nil, nil)
	if err := echo(conn, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := conn.CloseWrite(); err != nil { // sends close_notify
		t.Fatal(err)
	}
	if n, err := conn.Read(make([]byte, 10)); n != 0 || err != io.EOF {
		t.Errorf("Read after close_notify: %d, %v; want the server's close_notify (io.EOF)", n, err)
	}
	if err := e.nextErr(t); err != io.EOF {
		t.Errorf("server error %v, want io.EOF", err)
	}
}

// tamperConn flips a bit in the n-th write (counting from 1) after arm.
type tamperConn struct {
	net.Conn
	armed atomic.Bool
	flip  func([]byte) []byte
}

func (c *tamperConn) Write(p []byte) (int, error) {
	if c.armed.Swap(false) {
		if _, err := c.Conn.Write(c.flip(bytes.Clone(p))); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	return c.Conn.Write(p)
}

func TestBadRecords(t *testing.T) {
	tests := []struct {
		name  string
		flip  func([]byte) []byte
		alert string
	}{
		{"corrupted", func(p []byte) []byte { p[len(p)-3] ^= 0x40; return p }, "bad record MAC"},
		{"oversized", func([]byte) []byte { return []byte{23, 3, 3, 0x41, 0x01} }, "record overflow"},
		{"plaintext alert", func([]byte) []byte { return []byte{21, 3, 3, 0, 2, 1, 0} }, "unexpected message"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := startEcho(t, Config{}, nil)
			var tc *tamperConn
			conn := e.dial(t, nil, func(c net.Conn) net.Conn { tc = &tamperConn{Conn: c, flip: tt.flip}; return tc })
			if err := echo(conn, []byte("fine")); err != nil {
				t.Fatal(err)
			}
			tc.armed.Store(true)
			_, _ = conn.Write([]byte("tampered"))
			_, err := conn.Read(make([]byte, 10))
			if err == nil || !strings.Contains(err.Error(), tt.alert) {
				t.Errorf("client read error %v, want alert %q", err, tt.alert)
			}
			if err := e.nextErr(t); !errors.Is(err, ErrRecord) {
				t.Errorf("server error %v, want ErrRecord", err)
			}
		})
	}
}
