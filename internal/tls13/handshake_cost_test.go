package tls13

// The handshake-cost measurement: server CPU and bytes on the wire per
// connection, full handshakes against resumed ones. Off by default; run it
// with
//
//	go test -count=1 -run HandshakeCost -v ./internal/tls13 -args -tls13.mem -tls13.mem.n=5000 -tls13.hs.rounds=3
//
// The clients run in a child process, so the CPU figure is the server's
// alone. Each round runs every kind of handshake once, one after the
// other, so that a shared machine's noise falls on all of them alike.

import (
	"crypto/tls"
	"flag"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const (
	envResume = "TLS13_TEST_RESUME"
	// envCurve, set to "x25519", makes the clients offer X25519 alone
	// instead of Go's default key shares (X25519MLKEM768 and X25519).
	envCurve = "TLS13_TEST_CURVE"
)

var hsRounds = flag.Int("tls13.hs.rounds", 1, "rounds of TestHandshakeCost, each running every kind of handshake once")

func init() {
	children["handshake-clients"] = handshakeClients
}

// handshakeClients runs in a child process: N connections, 16 at a time,
// each a handshake, one 64-byte echo and a close_notify. With resumption
// (TLS13_TEST_RESUME=1) each worker keeps its own session cache and
// primes it first (not counted); with TLS13_TEST_RESUME=fresh every
// connection has a new, empty cache, so it is sent a ticket it never uses. It prints "<bytes up> <bytes down> <resumed>" in total over
// the N connections.
func handshakeClients() error {
	n, err := strconv.Atoi(os.Getenv(envConns))
	if err != nil {
		return err
	}
	base, err := childConfig()
	if err != nil {
		return err
	}
	if os.Getenv(envCurve) == "x25519" {
		base.CurvePreferences = []tls.CurveID{tls.X25519}
	}
	resume := os.Getenv(envResume) == "1"
	fresh := os.Getenv(envResume) == "fresh" // asks for tickets, never resumes
	const workers = 16
	var up, down, resumed atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	msg := randomBytes(64)
	for w := range workers {
		cfg := base.Clone()
		if resume {
			cfg.ClientSessionCache = tls.NewLRUClientSessionCache(1)
		}
		one := func(count bool) error {
			raw, err := net.Dial("tcp", os.Getenv(envAddr))
			if err != nil {
				return err
			}
			cc := &byteCounter{Conn: raw}
			if fresh {
				cfg.ClientSessionCache = tls.NewLRUClientSessionCache(1)
			}
			c := tls.Client(cc, cfg)
			_ = c.SetDeadline(time.Now().Add(30 * time.Second))
			if err := echo(c, msg); err != nil {
				c.Close()
				return err
			}
			err = c.Close()
			if count {
				up.Add(cc.up)
				down.Add(cc.down)
				if c.ConnectionState().DidResume {
					resumed.Add(1)
				}
			}
			return err
		}
		wg.Go(func() {
			if resume {
				if err := one(false); err != nil {
					errs <- err
					return
				}
			}
			for i := w; i < n; i += workers {
				if err := one(true); err != nil {
					errs <- fmt.Errorf("connection %d: %w", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	fmt.Println(up.Load(), down.Load(), resumed.Load())
	return nil
}

// byteCounter counts what crosses one socket; used by one goroutine.
type byteCounter struct {
	net.Conn
	up, down int64
}

func (c *byteCounter) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.down += int64(n)
	return n, err
}

func (c *byteCounter) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.up += int64(n)
	return n, err
}

// TestHandshakeCost measures, per connection (accept, handshake, one
// 64-byte echo, close), the server's CPU and the bytes each way, for full
// handshakes that get no ticket (as before resumption), full handshakes
// that are sent one, and resumed ones (which are sent a fresh one); each
// with the clients offering Go's default key shares (X25519MLKEM768, as
// the SDK does) and X25519 alone (a client without post-quantum key
// exchange).
func TestHandshakeCost(t *testing.T) {
	if !*memTest {
		t.Skip("run with -tls13.mem")
	}
	n := *memConns
	var report strings.Builder
	fmt.Fprintf(&report, "\n%d connections per run, 16 at a time, %s\n%-5s %-10s %-14s %12s %12s %14s %9s\n", n, runtime.Version(),
		"round", "handshake", "key share", "bytes up", "bytes down", "server CPU µs", "resumed")
	var modes []handshakeMode
	for _, curve := range []string{"", "x25519"} {
		for _, m := range []handshakeMode{{"no ticket", false, "", ""}, {"full", true, "fresh", ""}, {"resumed", true, "1", ""}} {
			m.curve = curve
			modes = append(modes, m)
		}
	}
	for round := 1; round <= *hsRounds; round++ {
		for _, m := range modes {
			handshakeCost(t, &report, round, n, m)
		}
	}
	t.Log(report.String())
}

// handshakeMode is one kind of handshake TestHandshakeCost measures.
type handshakeMode struct {
	name    string
	tickets bool   // the server sends tickets
	resume  string // the clients' envResume
	curve   string // the clients' envCurve
}

// handshakeCost runs n connections of kind m against a fresh echo server
// and writes a line of the report.
func handshakeCost(t *testing.T, report *strings.Builder, round, n int, m handshakeMode) {
	resume := m.resume == "1"
	tc := serverTLSConfig()
	tc.SessionTicketsDisabled = !m.tickets
	e := startEcho(t, Config{TLS: tc}, nil)
	defer e.shutdown(t)
	env := []string{envConns + "=" + strconv.Itoa(n), envResume + "=" + m.resume, envCurve + "=" + m.curve}
	cmd := childCommand(t, e, "handshake-clients", env...)
	cpu0 := cpuTime()
	out, err := cmd.Output()
	cpu := cpuTime() - cpu0
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	var up, down, resumed int64
	if _, err := fmt.Sscan(string(out), &up, &down, &resumed); err != nil {
		t.Fatalf("child printed %q: %v", out, err)
	}
	if (resumed == int64(n)) != resume || (!resume && resumed != 0) {
		t.Fatalf("%s: %d of %d connections resumed", m.name, resumed, n)
	}
	share := "X25519MLKEM768"
	if m.curve == "x25519" {
		share = "X25519"
	}
	fmt.Fprintf(report, "%-5d %-10s %-14s %12.0f %12.0f %14.0f %9d\n", round, m.name, share,
		float64(up)/float64(n), float64(down)/float64(n), float64(cpu.Microseconds())/float64(n), resumed)
}
