package faultproxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const waitLimit = 20 * time.Second

// echo serves an echo server until the test ends.
func echo(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); _ = c.Close() }()
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); <-done })
	return ln.Addr().String()
}

func dialProxy(t *testing.T, p *Proxy) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// roundTrip writes msg and reads it back, failing if that takes longer
// than limit.
func roundTrip(c net.Conn, msg []byte, limit time.Duration) error {
	_ = c.SetDeadline(time.Now().Add(limit))
	if _, err := c.Write(msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if !bytes.Equal(got, msg) {
		return errors.New("echo differs")
	}
	return nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestPartitionStallsThenHeals: a partition holds bytes (a read times
// out), and healing delivers them, intact and in order.
func TestPartitionStallsThenHeals(t *testing.T) {
	for _, d := range []Direction{Forward, Backward, Both} {
		t.Run(d.String(), func(t *testing.T) {
			p, err := Listen("127.0.0.1:0", echo(t))
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			c := dialProxy(t, p)
			if err := roundTrip(c, []byte("before"), waitLimit); err != nil {
				t.Fatal(err)
			}
			p.Partition(d)
			if err := roundTrip(c, []byte("during"), 100*time.Millisecond); !isTimeout(err) {
				t.Fatalf("round trip through a %s partition: %v, want a timeout", d, err)
			}
			p.Heal()
			_ = c.SetDeadline(time.Now().Add(waitLimit))
			got := make([]byte, len("during"))
			if _, err := io.ReadFull(c, got); err != nil || string(got) != "during" {
				t.Fatalf("after the heal: %q, %v", got, err)
			}
		})
	}
}

// TestResetAbortsConnections: Reset aborts open connections; Refuse
// aborts new ones until turned off.
func TestResetAbortsConnections(t *testing.T) {
	p, err := Listen("127.0.0.1:0", echo(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c := dialProxy(t, p)
	if err := roundTrip(c, []byte("x"), waitLimit); err != nil {
		t.Fatal(err)
	}
	if n := p.Reset(); n != 1 {
		t.Fatalf("Reset aborted %d connections, want 1", n)
	}
	if err := roundTrip(c, []byte("y"), waitLimit); err == nil || isTimeout(err) {
		t.Fatalf("round trip after a reset: %v, want a connection error", err)
	}
	p.Refuse(true)
	// The reset may come before the dial returns, or after.
	if c, err := net.Dial("tcp", p.Addr()); err == nil {
		err = roundTrip(c, []byte("z"), waitLimit)
		_ = c.Close()
		if err == nil || isTimeout(err) {
			t.Fatalf("round trip while refusing: %v, want a connection error", err)
		}
	}
	p.Refuse(false)
	if err := roundTrip(dialProxy(t, p), []byte("w"), waitLimit); err != nil {
		t.Fatal(err)
	}
}

// TestDelay: a delayed round trip takes at least the delay each way.
func TestDelay(t *testing.T) {
	p, err := Listen("127.0.0.1:0", echo(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c := dialProxy(t, p)
	p.SetDelay(30 * time.Millisecond)
	start := time.Now()
	if err := roundTrip(c, []byte("slow"), waitLimit); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el < 60*time.Millisecond {
		t.Fatalf("delayed round trip took %v, want at least 60ms", el)
	}
}

// TestHandler drives the proxy over HTTP, as another process would.
func TestHandler(t *testing.T) {
	p, err := Listen("127.0.0.1:0", echo(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	h := p.Handler()
	do := func(method, target string) int {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(method, target, nil))
		return rec.Code
	}
	if code := do(http.MethodPost, "/partition?dir=forward"); code != http.StatusOK || p.Status().Stalled != "forward" {
		t.Fatalf("partition: %d, %+v", code, p.Status())
	}
	if code := do(http.MethodPost, "/partition?dir=sideways"); code != http.StatusBadRequest {
		t.Fatalf("bad direction: %d", code)
	}
	if code := do(http.MethodPost, "/heal"); code != http.StatusOK || p.Status().Stalled != "none" {
		t.Fatalf("heal: %d, %+v", code, p.Status())
	}
	if code := do(http.MethodPost, "/delay?d=5ms"); code != http.StatusOK || p.Status().Delay != 5*time.Millisecond {
		t.Fatalf("delay: %d, %+v", code, p.Status())
	}
	if code := do(http.MethodPost, "/refuse?on=true"); code != http.StatusOK || !p.Status().Refuse {
		t.Fatalf("refuse: %d, %+v", code, p.Status())
	}
	if code := do(http.MethodPost, "/reset"); code != http.StatusOK {
		t.Fatalf("reset: %d", code)
	}
	if code := do(http.MethodGet, "/status"); code != http.StatusOK {
		t.Fatalf("status: %d", code)
	}
}
