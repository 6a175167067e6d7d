package admin_test

import (
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/parley-im/parley/internal/node"
	"github.com/parley-im/parley/server"
)

// TestAttackMetrics: an operator sees connections refused by the caps,
// handshakes timed out and the handshake slots in use.
func TestAttackMetrics(t *testing.T) {
	n := startNode(t, func(c *node.Config) {
		c.Shards, c.MediaAddr = 1, "off"
		c.Server = server.Config{MaxConns: 2, MaxConnsPerIP: 1, LimitLoopback: true, Heartbeat: time.Second,
			ClientHelloTimeout: time.Second}
	})
	base := "http://" + n.AdminAddr().String()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	before := scrape(t, client, base)
	if got := before["parley_connections_max"]; got != 2 {
		t.Errorf("parley_connections_max = %v, want 2", got)
	}
	for _, name := range []string{"parley_connections_refused_total", "parley_accept_errors_total",
		"parley_tls_handshake_timeouts_total", "parley_tls_handshake_slots_busy", "parley_tls_handshakes_waiting"} {
		if _, ok := before[name]; !ok {
			t.Errorf("metric %s missing", name)
		}
	}

	// One connection from 127.0.0.2 sends nothing (and times out); a
	// second one from there is over the per-address cap; one from
	// 127.0.0.3 fills the global cap; one from 127.0.0.4 is over it.
	dialFrom := func(src string) net.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("tcp", n.Addr().String())
		if err != nil {
			return nil // reset before the connect returned
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	st := n.Server().Stats()
	accepted := func(want uint64) {
		for end := time.Now().Add(10 * time.Second); st.Accepted.Load() < want; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(end) {
				t.Fatalf("%d connections accepted, want %d", st.Accepted.Load(), want)
			}
		}
	}
	silent := dialFrom("127.0.0.2")
	accepted(1)
	dialFrom("127.0.0.2")
	dialFrom("127.0.0.3")
	accepted(2)
	dialFrom("127.0.0.4")
	_ = silent.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.Copy(io.Discard, silent) // closed at the ClientHello deadline

	after := scrape(t, client, base)
	for _, m := range []struct {
		name string
		min  float64
	}{
		{"parley_connections_refused_total", 2},
		{"parley_tls_handshake_timeouts_total", 1},
	} {
		if got := after[m.name] - before[m.name]; got < m.min {
			t.Errorf("%s moved by %v, want at least %v", m.name, got, m.min)
		}
	}
}
