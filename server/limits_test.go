package server_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/internal/node"
	"github.com/parley-im/parley/internal/nodetest"
	"github.com/parley-im/parley/internal/wiretest"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
	"github.com/parley-im/parley/server"
	"github.com/parley-im/parley/storage"
)

// Tests of the connection limits of docs/security.md, "Connections and
// TLS". Each attack runs beside a bystander conversation that must keep
// working.

// dialFrom opens a TCP connection to addr from the loopback address src
// (127.0.0.x: every one of them is local on Linux).
func dialFrom(t testing.TB, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// expectDropped dials addr from src and checks that the server closes
// (or resets) the connection within 5 s, having sent nothing. On loopback
// a reset can beat the client's connect: that counts too.
func expectDropped(t testing.TB, src, addr, what string) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if errors.Is(err, syscall.ECONNRESET) {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	expectClosedQuietly(t, c, what)
}

// expectClosedQuietly checks that the server closes c within 5 s, having
// sent nothing.
func expectClosedQuietly(t testing.TB, c net.Conn, what string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("%s: still open after 5 s", what)
	}
	if n != 0 {
		t.Fatalf("%s: the server sent %d bytes before closing", what, n)
	}
}

// waitUntil polls cond until it holds, failing after 10 s.
func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// bystanders logs two users in and returns a function that checks they
// still talk: one more message from a reaches b.
func bystanders(t *testing.T, n *nodetest.Node) func(label string) {
	t.Helper()
	alice, bob := n.Register(t, n.Phone()), n.Register(t, n.Phone())
	a, _ := n.Login(t, alice, 0)
	b, _ := n.Login(t, bob, 0)
	a.Expect(protocol.KindSynced)
	b.Expect(protocol.KindSynced)
	cmid := uint64(0)
	return func(label string) {
		t.Helper()
		cmid++
		id := a.SendText(bob.ID, cmid, label)
		if m := b.Message(); m.ID != id {
			t.Fatalf("%s: bob got %+v, want message %d", label, m, id)
		}
	}
}

// TestConnCaps: connections over the per-address cap, then over the
// global cap, are reset on arrival; what was admitted stays; a freed
// place is taken again; the bystanders talk throughout.
func TestConnCaps(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) {
		c.Server = server.Config{MaxConns: 10, MaxConnsPerIP: 4, LimitLoopback: true,
			HandshakeTimeout: time.Minute, ClientHelloTimeout: time.Minute}
	})
	talk := bystanders(t, n)
	st := n.Server().Stats()
	waitUntil(t, "the registration connections to close", func() bool { return st.Open.Load() == 2 })
	addr := n.Addr().String()

	var flood []net.Conn
	for _, src := range []string{"127.0.0.2", "127.0.0.3"} {
		for range 4 {
			flood = append(flood, dialFrom(t, src, addr))
		}
		if src == "127.0.0.2" {
			waitUntil(t, "4 connections from 127.0.0.2", func() bool { return st.Open.Load() == 6 })
			expectDropped(t, src, addr, "a 5th connection from one address")
			if got := st.RefusedPerIP.Load(); got != 1 {
				t.Fatalf("RefusedPerIP = %d, want 1", got)
			}
			talk("over the per-address cap")
		}
	}
	waitUntil(t, "10 connections", func() bool { return st.Open.Load() == 10 })
	expectDropped(t, "127.0.0.4", addr, "an 11th connection")
	if got := st.RefusedMaxConns.Load(); got != 1 {
		t.Fatalf("RefusedMaxConns = %d, want 1", got)
	}
	talk("over the global cap")

	// A place that frees is taken again.
	flood[0].Close()
	waitUntil(t, "the closed connection to go", func() bool { return st.Open.Load() == 9 })
	dialFrom(t, "127.0.0.4", addr)
	waitUntil(t, "the new connection to be admitted", func() bool { return st.Open.Load() == 10 })
	if got := st.RefusedMaxConns.Load() + st.RefusedPerIP.Load(); got != 2 {
		t.Fatalf("%d refusals in all, want 2", got)
	}
	for _, c := range flood[1:] { // the admitted ones were never touched
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); !os.IsTimeout(err) {
			t.Fatalf("an admitted connection was closed: %v", err)
		}
	}
	talk("after")
}

// TestHandshakeDeadlines ([S-5-5]): a connection that sends nothing is
// closed at the ClientHello deadline (5 s after the accept), one that
// sends its ClientHello and stalls at the handshake deadline (10 s), both
// without a word; one that completed TLS lives on until the login
// deadline (30 s). The server's clock is moved forward instead of
// waiting.
func TestHandshakeDeadlines(t *testing.T) {
	var skew atomic.Int64
	now := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	n := nodetest.Start(t, func(c *node.Config) {
		c.Server = server.Config{Now: now, Heartbeat: time.Second} // the timer wheel then ticks every 125 ms
	})
	st := n.Server().Stats()
	addr := n.Addr().String()
	silent := dialFrom(t, "127.0.0.1", addr)
	stalled := dialFrom(t, "127.0.0.1", addr)
	if _, err := stalled.Write(clientHello(t)); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the stalled handshake to start", func() bool { busy, _ := n.Server().HandshakeSlots(); return busy == 1 })
	open := n.Dial(t)
	open.Ping()
	open.Expect(protocol.KindPong)
	waitUntil(t, "three connections", func() bool { return st.Open.Load() == 3 })

	skew.Store(int64(5*time.Second + 200*time.Millisecond))
	expectClosedQuietly(t, silent, "a silent connection past the ClientHello deadline")
	if got, open := st.HelloTimeouts.Load(), st.Open.Load(); got != 1 || open != 2 {
		t.Fatalf("after 5.2 s: %d ClientHello timeouts and %d connections open, want 1 and 2", got, open)
	}

	skew.Store(int64(10*time.Second + 200*time.Millisecond))
	_ = stalled.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, stalled); err != nil { // the server's first flight, then EOF
		t.Fatalf("a stalled handshake past the handshake deadline: %v", err)
	}
	if got, open := st.HandshakeTimeouts.Load(), st.Open.Load(); got != 1 || open != 1 {
		t.Fatalf("after 10.2 s: %d handshake timeouts and %d connections open, want 1 and 1", got, open)
	}
	if busy, _ := n.Server().HandshakeSlots(); busy != 0 {
		waitUntil(t, "the timed-out handshake's slot", func() bool { busy, _ := n.Server().HandshakeSlots(); return busy == 0 })
	}
	open.Ping()
	open.Expect(protocol.KindPong)

	skew.Store(int64(30*time.Second + 200*time.Millisecond)) // [S-6-9]
	open.ExpectError(protocol.CodeIdleTimeout)
	open.ExpectClosed()
}

// TestSlowlorisFlood is the attack: 150 connections a second that
// each send one byte (0x16) and stall, and from another address
// connections that send a whole ClientHello and never finish. Ordinary
// clients still complete their handshakes in well under 100 ms (the
// median; none takes a second), and the bystanders talk. Before, each
// stalled byte held one of the 256 handshake slots for 10 s.
func TestSlowlorisFlood(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) { c.Server = server.Config{LimitLoopback: true} })
	talk := bystanders(t, n)
	st := n.Server().Stats()
	addr := n.Addr().String()
	hello := clientHello(t)
	opened0 := st.Accepted.Load()

	// Whole ClientHellos that stall: 16 run, holding slots; the rest of
	// that address's are refused.
	const stallers = 40
	for range stallers {
		c := dialFrom(t, "127.0.0.3", addr)
		if _, err := c.Write(hello); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, "the handshakes over the per-address limit to be refused", func() bool {
		return st.RefusedHandshakesPerIP.Load() == stallers-16
	})
	if busy, waiting := n.Server().HandshakeSlots(); busy != 16 || waiting != 0 {
		t.Fatalf("%d slots busy and %d handshakes waiting, want 16 and 0", busy, waiting)
	}

	// One-byte connections at 150 a second, at most 450 over at most 4 s.
	stop := make(chan struct{})
	var flooded atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(time.Second / 150)
		defer tick.Stop()
		for end := time.Now().Add(4 * time.Second); flooded.Load() < 450 && time.Now().Before(end); {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: time.Second}
			c, err := d.Dial("tcp", addr)
			if err != nil {
				continue
			}
			_, _ = c.Write([]byte{0x16})
			flooded.Add(1)
			t.Cleanup(func() { c.Close() })
		}
	})
	defer func() { close(stop); wg.Wait() }()
	// Measure once more stalled connections are open than there are slots.
	waitUntil(t, "300 flood connections", func() bool { return st.Accepted.Load()-opened0 >= stallers+300 })

	var took []time.Duration
	for i := range 10 {
		start := time.Now()
		raw := dialFrom(t, "127.0.0.1", addr)
		tc := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
		_ = tc.SetDeadline(time.Now().Add(3 * time.Second))
		if err := tc.Handshake(); err != nil {
			t.Fatalf("handshake %d during the flood: %v", i, err)
		}
		took = append(took, time.Since(start))
		tc.Close()
		talk(fmt.Sprint("during the flood ", i))
	}
	slices.Sort(took)
	t.Logf("handshakes during the flood: min %v, median %v, max %v; %d flood connections", took[0], took[len(took)/2], took[len(took)-1], flooded.Load())
	if took[len(took)/2] >= 100*time.Millisecond || took[len(took)-1] >= time.Second {
		t.Fatalf("handshakes during the flood took %v (sorted); want a median under 100 ms and none over 1 s", took)
	}
}

// TestSlowConsumerGetsError ([S-6-14]): a client that pipelines PINGs and
// does not read until the server has given up on it then reads every
// PONG whole, ERROR SLOW_CONSUMER after the last, and EOF. Before, the
// stream was cut (mid-frame, even mid-record) without the ERROR.
func TestSlowConsumerGetsError(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) { c.Server = server.Config{MaxOutbound: 256 << 10} }) // above what one read of PINGs (64 KiB) answers
	talk := bystanders(t, n)
	st := n.Server().Stats()
	before := st.Closed[protocol.CodeSlowConsumer].Load()

	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var err error
		_ = rc.Control(func(fd uintptr) { err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 4096) })
		return err
	}}
	raw, err := d.Dial("tcp", n.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	conn := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if err := conn.Handshake(); err != nil {
		t.Fatal(err)
	}
	dec, err := codec.NewDecompressor(protocol.MaxFrameBody)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	r := codec.NewReader(conn, protocol.MaxFrameBody, dec)
	// One round trip first: until the server has read the client's
	// Finished it holds at most 256 KiB of what follows it.
	if _, err := conn.Write(codec.AppendFrame(nil, protocol.KindPing, nil)); err != nil {
		t.Fatal(err)
	}
	if f, err := r.ReadFrame(); err != nil || f.Kind != protocol.KindPong {
		t.Fatalf("first PING: %v, %v", f.Kind, err)
	}

	pings := bytes.Repeat(codec.AppendFrame(nil, protocol.KindPing, nil), 4096)
	// The kernel's socket buffers take a few MB of PONGs before gnet's
	// buffer fills; the server may also read behind the writes.
	sent, end := 0, time.Now().Add(20*time.Second)
	for st.Closed[protocol.CodeSlowConsumer].Load() == before {
		if sent >= 16<<20 || time.Now().After(end) {
			t.Fatalf("%d PINGs unread and the server has not given up", sent)
		}
		if _, err := conn.Write(pings); err != nil {
			// The server has given up and closed: it reads nothing more.
			t.Logf("writing after %d PINGs: %v", sent, err)
			break
		}
		sent += 4096
	}
	waitUntil(t, "the server to give up", func() bool { return st.Closed[protocol.CodeSlowConsumer].Load() > before })

	pongs := 0
	for {
		f, err := r.ReadFrame()
		if err != nil {
			t.Fatalf("after %d PONGs of %d PINGs: %v; want ERROR SLOW_CONSUMER", pongs, sent, err)
		}
		if f.Kind == protocol.KindPong {
			pongs++
			continue
		}
		var e pb.Error
		if f.Kind != protocol.KindError || codec.ParseProto(f.Body, &e) != nil || e.Code != protocol.CodeSlowConsumer {
			t.Fatalf("after %d PONGs: frame %v % x, want ERROR SLOW_CONSUMER", pongs, f.Kind, f.Body)
		}
		break
	}
	if _, err := r.ReadFrame(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the ERROR: %v, want EOF", err)
	}
	if pongs == 0 || pongs > sent {
		t.Fatalf("%d PONGs for %d PINGs", pongs, sent)
	}
	t.Logf("%d PINGs sent, %d PONGs read before the ERROR", sent, pongs)
	talk("after the slow consumer")
}

// fdChildEnv makes TestFDLimit the child process that runs the node.
const fdChildEnv = "PARLEY_TEST_FD_CHILD"

// TestFDLimit is the file-descriptor attack on a node whose
// process may hold 512 files: 600 idle connections, then a process with
// no descriptor left at all. The node resets what it cannot take, never
// stops accepting, and serves again as soon as the attack ends. The node
// runs in a child process (this test binary again), whose limit is set
// without touching this one's.
func TestFDLimit(t *testing.T) {
	if os.Getenv(fdChildEnv) != "" {
		fdChild(t)
		return
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestFDLimit$", "-test.count=1")
	cmd.Env = append(os.Environ(), fdChildEnv+"=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(out)
	ask := func(command string) string { // one command, one answer line
		t.Helper()
		if command != "" {
			fmt.Fprintln(in, command)
		}
		for lines.Scan() {
			if rest, ok := strings.CutPrefix(lines.Text(), "fd-child: "); ok {
				return rest
			}
		}
		t.Fatalf("child gone (%v) waiting for the answer to %q; stderr:\n%s", lines.Err(), command, stderr.String())
		return ""
	}
	defer func() {
		in.Close()
		if err := cmd.Wait(); err != nil {
			t.Errorf("child: %v; stderr:\n%s", err, stderr.String())
		}
	}()
	var addr, fp string
	var maxConns int
	if _, err := fmt.Sscanf(ask(""), "addr=%s fp=%s max=%d", &addr, &fp, &maxConns); err != nil {
		t.Fatal(err)
	}
	if maxConns != 256 { // 512 less the node's reserve (256 with one shard and no media)
		t.Fatalf("connection cap %d under a 512-file limit, want 256", maxConns)
	}
	stats := func() (s fdStats) {
		t.Helper()
		if _, err := fmt.Sscanf(ask("stats"), "open=%d accepted=%d refused=%d fd=%d errors=%d",
			&s.open, &s.accepted, &s.refused, &s.shed, &s.acceptErrors); err != nil {
			t.Fatal(err)
		}
		return s
	}

	// 600 idle connections: 256 admitted, the rest reset at once.
	var idle []net.Conn
	for range 600 {
		c, err := net.Dial("tcp", addr)
		if errors.Is(err, syscall.ECONNRESET) {
			continue // refused before the connect returned
		}
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
	}
	waitUntil(t, "every connection admitted or refused", func() bool { s := stats(); return s.accepted+s.refused >= 600 })
	if s := stats(); s.accepted > 256 || s.refused < 600-256 || s.open > 256 {
		t.Fatalf("after 600 connections: %+v; want at most 256 admitted and open", s)
	}
	// The admitted ones are closed at the ClientHello deadline; then the
	// node serves ordinary clients.
	waitUntil(t, "the idle connections to time out", func() bool { return stats().open == 0 })
	for _, c := range idle {
		c.Close()
	}
	fdClientsTalk(t, addr, fp, 1)

	// No descriptor left in the whole process: new connections are reset
	// at once (accepted with the spare descriptor, then closed), and
	// accepting goes on.
	if got := ask("exhaust"); !strings.HasPrefix(got, "exhausted") {
		t.Fatal(got)
	}
	for range 3 {
		expectDropped(t, "127.0.0.1", addr, "a connection to a process out of files")
	}
	if got := ask("release"); got != "released" {
		t.Fatal(got)
	}
	fdClientsTalk(t, addr, fp, 2)
	if s := stats(); s.acceptErrors == 0 || s.shed < 3 {
		t.Fatalf("after the exhaustion: %+v; want accept errors and 3 connections shed", s)
	}
	if got := ask("quit"); got != "bye" {
		t.Fatal(got)
	}
}

type fdStats struct{ open, accepted, refused, shed, acceptErrors int }

// fdClientsTalk registers two users on the child's node and has one
// message go from one to the other.
func fdClientsTalk(t *testing.T, addr, fp string, round int) {
	t.Helper()
	code := func(string) string { return "123456" }
	c := wiretest.Dial(t, addr, fp)
	alice := c.Register(fmt.Sprintf("+1999%07d", 2*round), code)
	bob := c.Register(fmt.Sprintf("+1999%07d", 2*round+1), code)
	c.Conn.Close()
	a := wiretest.Dial(t, addr, fp)
	a.Login(alice, 0)
	b := wiretest.Dial(t, addr, fp)
	b.Login(bob, 0)
	b.Expect(protocol.KindSynced)
	id := a.SendText(bob.ID, 1, "still here")
	if m := b.Message(); m.ID != id {
		t.Fatalf("round %d: bob got %+v, want %d", round, m, id)
	}
}

// fdChild runs the node for TestFDLimit under a 512-file limit and
// answers the parent's commands on stdin, one line each on stdout.
func fdChild(t *testing.T) {
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: 512, Max: 512}); err != nil {
		t.Fatal(err)
	}
	n := nodetest.Start(t, func(c *node.Config) {
		c.Shards = 1
		c.MediaAddr = "off"
		c.Storage = storage.Config{TestPrefix: "+1999", TestCode: "123456"}
		c.Server = server.Config{ClientHelloTimeout: 3 * time.Second}
	})
	say := func(format string, a ...any) { fmt.Printf("fd-child: "+format+"\n", a...) }
	st := n.Server().Stats()
	say("addr=%s fp=%s max=%d", n.Addr(), n.Fingerprint(), n.Server().MaxConns())
	var held []*os.File
	defer func() {
		for _, f := range held {
			f.Close()
		}
	}()
	cmds := bufio.NewScanner(os.Stdin)
	for cmds.Scan() {
		switch cmds.Text() {
		case "stats":
			say("open=%d accepted=%d refused=%d fd=%d errors=%d", st.Open.Load(), st.Accepted.Load(),
				st.RefusedMaxConns.Load(), st.RefusedFDLimit.Load(), st.AcceptErrors.Load())
		case "exhaust":
			for {
				f, err := os.Open(os.DevNull)
				if err != nil {
					break
				}
				held = append(held, f)
			}
			say("exhausted %d", len(held))
		case "release":
			for _, f := range held {
				f.Close()
			}
			held = nil
			say("released")
		case "quit":
			say("bye")
			return
		}
	}
}
