package link

import (
	"crypto/tls"
	"testing"
	"time"

	"github.com/parley-im/parley/codec"
)

// TestBackoff: the delay doubles from BackoffMin up to BackoffMax, less a
// random part of its second half.
func TestBackoff(t *testing.T) {
	cfg := Config{BackoffMin: 10 * time.Millisecond, BackoffMax: 100 * time.Millisecond}
	for _, tc := range []struct {
		n        int
		rand     int64 // what Rand returns, as a fraction of its n: 0 or "all"
		min, max time.Duration
	}{
		{0, 0, 10 * time.Millisecond, 10 * time.Millisecond},
		{0, -1, 5*time.Millisecond + 1, 5*time.Millisecond + 1},
		{1, 0, 20 * time.Millisecond, 20 * time.Millisecond},
		{3, 0, 80 * time.Millisecond, 80 * time.Millisecond},
		{4, 0, 100 * time.Millisecond, 100 * time.Millisecond},
		{4, -1, 50*time.Millisecond + 1, 50*time.Millisecond + 1},
		{40, 0, 100 * time.Millisecond, 100 * time.Millisecond},
	} {
		cfg.Rand = func(n int64) int64 {
			if tc.rand < 0 {
				return n - 1
			}
			return 0
		}
		if d := backoff(&cfg, tc.n); d < tc.min || d > tc.max {
			t.Errorf("backoff after %d failures (rand %d) = %v, want %v to %v", tc.n, tc.rand, d, tc.min, tc.max)
		}
	}
}

// TestShortSessionsBackOff: a peer that ends every session right after
// the handshake is redialed with backoff, not in a loop.
func TestShortSessionsBackOff(t *testing.T) {
	bCred := creds(t, testCA, 2)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{bCred.Cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    bCred.CA,
	})
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan time.Time, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			// Welcome, then hang up at once.
			if _, err := codec.NewReader(c, maxFrame, nil).ReadFrame(); err == nil {
				_, _ = c.Write(appendHello(nil, kindWelcome, hello{node: 2, gen: 1}))
				select {
				case accepted <- time.Now():
				default:
				}
			}
			_ = c.Close()
		}
	}()
	defer func() { _ = ln.Close(); <-done }()
	a := startNode(t, creds(t, testCA, 1), 1, "127.0.0.1:0", func(c *Config) {
		c.BackoffMin, c.BackoffMax = 20*time.Millisecond, time.Second
		c.Rand = func(int64) int64 { return 0 } // no jitter: 20, 40, 80 ms
	})
	if err := a.SetPeer(2, ln.Addr().String()); err != nil {
		t.Fatal(err)
	}
	var at []time.Time
	for len(at) < 4 {
		select {
		case ts := <-accepted:
			at = append(at, ts)
		case <-time.After(waitLimit):
			t.Fatalf("%d sessions", len(at))
		}
	}
	// The delays cannot be shorter than the backoff; a loop would redial
	// at once.
	if d := at[3].Sub(at[0]); d < 140*time.Millisecond {
		t.Fatalf("4 sessions within %v: redialed without backoff", d)
	}
	_ = a.Close()
}
