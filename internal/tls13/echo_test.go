package tls13

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"
)

// echoServer is a gnet server that terminates TLS with Conn and echoes the
// plaintext it receives, the way the Parley server is meant to drive Conn.
type echoServer struct {
	gnet.BuiltinEventEngine

	srv  *Server
	addr string

	plain     bool // no TLS at all: echo raw bytes (memory baseline)
	idle      bool // call Idle after every OnTraffic
	keyUpdate bool // send KeyUpdate(update_requested) before every 4th echo

	booted chan struct{}
	ran    chan error
	stop   atomic.Bool

	open    atomic.Int64 // connections open now
	ready   atomic.Int64 // connections whose handshake completed
	traffic atomic.Int64 // OnTraffic calls
	errs    chan error   // Feed errors, for tests to inspect
}

// echoConn is the per-connection context.
type echoConn struct {
	tc     *Conn
	echoes int
}

// scratch buffers are per call, not per connection, as in the real server.
var scratch = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

type quietLogger struct{}

func (quietLogger) Debugf(string, ...any) {}
func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Warnf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "gnet: "+format+"\n", args...)
}
func (quietLogger) Errorf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "gnet: "+format+"\n", args...)
}
func (quietLogger) Fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "gnet: "+format+"\n", args...)
}

// startEcho runs an echo server on a loopback port with two event loops
// and stops it, and its Server, when the test ends.
func startEcho(t testing.TB, cfg Config, configure func(*echoServer)) *echoServer {
	t.Helper()
	if cfg.TLS == nil {
		cfg.TLS = serverTLSConfig()
	}
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e := &echoServer{srv: srv, booted: make(chan struct{}), ran: make(chan error, 1), errs: make(chan error, 1024)}
	if configure != nil {
		configure(e)
	}
	go func() {
		e.ran <- gnet.Run(e, "tcp4://127.0.0.1:0",
			gnet.WithMulticore(true), gnet.WithNumEventLoop(2),
			gnet.WithTicker(true), gnet.WithLogger(quietLogger{}))
	}()
	select {
	case <-e.booted:
	case err := <-e.ran:
		t.Fatalf("gnet.Run: %v", err)
	}
	t.Cleanup(func() { e.shutdown(t) })
	return e
}

func (e *echoServer) shutdown(t testing.TB) {
	t.Helper()
	if e.stop.Swap(true) {
		return
	}
	select {
	case err := <-e.ran:
		if err != nil {
			t.Errorf("gnet.Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("gnet engine did not stop")
	}
	e.srv.Close()
	if n := e.open.Load(); n != 0 {
		t.Errorf("%d connections left open after shutdown", n)
	}
}

func (e *echoServer) OnBoot(eng gnet.Engine) gnet.Action {
	fd, err := eng.Dup()
	if err != nil {
		panic(err)
	}
	sa, err := syscall.Getsockname(fd)
	_ = syscall.Close(fd)
	if err != nil {
		panic(err)
	}
	e.addr = "127.0.0.1:" + strconv.Itoa(sa.(*syscall.SockaddrInet4).Port)
	close(e.booted)
	return gnet.None
}

func (e *echoServer) OnTick() (time.Duration, gnet.Action) {
	if e.stop.Load() {
		return time.Millisecond, gnet.Shutdown
	}
	return 10 * time.Millisecond, gnet.None
}

func (e *echoServer) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	e.open.Add(1)
	if !e.plain {
		c.SetContext(&echoConn{tc: e.srv.NewConn()})
	}
	return nil, gnet.None
}

func (e *echoServer) OnClose(c gnet.Conn, _ error) gnet.Action {
	e.open.Add(-1)
	if ec, ok := c.Context().(*echoConn); ok {
		ec.tc.Close()
	}
	return gnet.None
}

func (e *echoServer) OnTraffic(c gnet.Conn) gnet.Action {
	if e.plain {
		buf, _ := c.Next(-1)
		_, _ = c.Write(buf)
		return gnet.None
	}
	e.traffic.Add(1)
	ec := c.Context().(*echoConn)
	tc := ec.tc
	bufs := scratch.Get().(*[]byte)
	defer scratch.Put(bufs)

	wasReady := tc.Ready()
	plain, err := tc.Feed(c, (*bufs)[:0])
	if !wasReady && tc.Ready() {
		e.ready.Add(1)
	}
	if len(plain) > 0 {
		out := make([]byte, 0, SealedSize(len(plain))+64)
		// Not on every echo: a client that only reads answers each request
		// with a KeyUpdate, and more than 16 records in a row without data
		// are refused (as crypto/tls does).
		if e.keyUpdate && ec.echoes%4 == 0 {
			out = tc.sendKeyUpdate(out, true)
		}
		ec.echoes++
		out = tc.Seal(out, plain)
		_, _ = c.Write(out)
	}
	*bufs = plain[:0]
	if err != nil {
		select {
		case e.errs <- err:
		default:
		}
		switch {
		case errors.Is(err, ErrNotTLS):
			_, _ = c.Write(AlertRecord(nil, uint8(alertUnexpectedMessage)))
		case err == io.EOF:
			_, _ = c.Write(tc.CloseNotify(nil))
		}
		return gnet.Close
	}
	if e.idle {
		tc.Idle()
	}
	return gnet.None
}

// nextErr waits for the next Feed error the server saw.
func (e *echoServer) nextErr(t testing.TB) error {
	t.Helper()
	select {
	case err := <-e.errs:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("server reported no error")
		return nil
	}
}

// dial opens a TLS client connection to e; wrap, if not nil, wraps the TCP
// connection under crypto/tls.
func (e *echoServer) dial(t testing.TB, cfg *tls.Config, wrap func(net.Conn) net.Conn) *tls.Conn {
	t.Helper()
	raw, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	if wrap != nil {
		raw = wrap(raw)
	}
	if cfg == nil {
		cfg = clientTLSConfig()
	}
	conn := tls.Client(raw, cfg)
	t.Cleanup(func() { _ = conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	return conn
}

// echo writes msg and reads the same number of bytes back.
func echo(conn net.Conn, msg []byte) error {
	if _, err := conn.Write(msg); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(conn, got); err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if string(got) != string(msg) {
		return errors.New("echo differs from message")
	}
	return nil
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ctxTimeout is a short helper for contexts in tests.
func ctxTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}
