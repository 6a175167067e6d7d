package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parley-im/parley/internal/node"
)

// These tests run the command against a real node in this process: two
// people register, look each other up, send, listen and chat, as they
// would from two terminals.

// codeBox catches the verification codes the node sends.
type codeBox struct {
	mu    sync.Mutex
	codes map[string]string
}

func (b *codeBox) SendCode(phone, code string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.codes[phone] = code
}

func (b *codeBox) wait(t *testing.T, phone string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		b.mu.Lock()
		code := b.codes[phone]
		b.mu.Unlock()
		if code != "" {
			return code
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no code sent to %s", phone)
	return ""
}

// syncBuffer is an io.Writer that tests read while the command writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor waits until the output contains want.
func (s *syncBuffer) waitFor(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(s.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("output lacks %q:\n%s", want, s)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// terminal is one person's machine: a configuration directory and the
// server's address in the environment.
type terminal struct {
	t       *testing.T
	dir     string
	environ map[string]string
}

// command is one running parley command.
type command struct {
	in       *io.PipeWriter
	out, err *syncBuffer
	cancel   context.CancelFunc
	done     chan int
}

// start runs parley with args in the background.
func (tm *terminal) start(args ...string) *command {
	r, w := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	c := &command{in: w, out: &syncBuffer{}, err: &syncBuffer{}, cancel: cancel, done: make(chan int, 1)}
	e := env{
		stdin: r, stdout: c.out, stderr: c.err,
		getenv:    func(k string) string { return tm.environ[k] },
		configDir: func() (string, error) { return tm.dir, nil },
		hostname:  func() (string, error) { return "e2e", nil },
	}
	go func() {
		c.done <- run(ctx, args, e)
		_ = r.Close()
	}()
	tm.t.Cleanup(func() { cancel(); _ = w.Close() })
	return c
}

// exit waits for the command's exit status.
func (c *command) exit(t *testing.T) int {
	t.Helper()
	select {
	case code := <-c.done:
		return code
	case <-time.After(20 * time.Second):
		t.Fatalf("command did not exit; stdout:\n%s\nstderr:\n%s", c.out, c.err)
	}
	return -1
}

// ok runs parley with args to completion and returns its stdout.
func (tm *terminal) ok(args ...string) string {
	tm.t.Helper()
	c := tm.start(args...)
	_ = c.in.Close()
	if code := c.exit(tm.t); code != 0 {
		tm.t.Fatalf("parley %s: exit %d\n%s", strings.Join(args, " "), code, c.err)
	}
	return c.out.String()
}

func startNode(t *testing.T) (*node.Node, *codeBox) {
	t.Helper()
	codes := &codeBox{codes: make(map[string]string)}
	n, err := node.Start(node.Config{
		DataDir: t.TempDir(),
		Listen:  "127.0.0.1:0",
		Shards:  2,
		Codes:   codes,
		Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = n.Shutdown(ctx)
	})
	return n, codes
}

// register registers phone on a new terminal.
func register(t *testing.T, n *node.Node, codes *codeBox, phone string) *terminal {
	t.Helper()
	tm := &terminal{t: t, dir: t.TempDir(), environ: map[string]string{
		"PARLEY_SERVER": n.Addr().String(), "PARLEY_FINGERPRINT": n.Fingerprint(),
	}}
	c := tm.start("register", "--phone", phone, "--plain")
	code := codes.wait(t, phone)
	c.err.waitFor(t, "Code: ")
	if _, err := io.WriteString(c.in, "000000\n"); err != nil { // a typo first
		t.Fatal(err)
	}
	c.err.waitFor(t, "That code is wrong")
	if _, err := io.WriteString(c.in, code+"\n"); err != nil {
		t.Fatal(err)
	}
	if status := c.exit(t); status != 0 {
		t.Fatalf("register %s: exit %d\n%s", phone, status, c.err)
	}
	c.out.waitFor(t, "Registered "+phone+" as user ")
	tm.environ = nil // later commands use what the profile stored
	return tm
}

func TestEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node")
	}
	n, codes := startNode(t)
	alice := register(t, n, codes, "+447700900123")
	bob := register(t, n, codes, "+15551234567")

	out := alice.ok("lookup", "+15551234567", "+15550000000")
	if !strings.Contains(out, "+15550000000\tnot registered") || !strings.Contains(out, "+15551234567\t") {
		t.Errorf("lookup printed %q", out)
	}
	if out := alice.ok("send", "--plain", "--to", "+1 555 123 4567", "see", "you", "at", "eight"); !strings.HasPrefix(out, "sent to +15551234567 at ") {
		t.Errorf("send printed %q", out)
	}

	lb := bob.start("listen", "--plain")
	lb.out.waitFor(t, ": see you at eight\n")
	// Alice hears that it arrived.
	la := alice.start("listen", "--plain")
	la.out.waitFor(t, "delivered by +15551234567")
	for _, c := range []*command{lb, la} {
		c.cancel()
		if code := c.exit(t); code != 0 {
			t.Errorf("listen exit %d\n%s", code, c.err)
		}
	}
	// Bob's listen acknowledged the message: he does not get it again.
	lb = bob.start("listen", "--plain")
	lb.err.waitFor(t, "up to date")
	lb.cancel()
	lb.exit(t)
	if strings.Contains(lb.out.String(), "see you at eight") {
		t.Errorf("message delivered twice:\n%s", lb.out)
	}

	// Two terminals chat.
	ca := alice.start("chat", "--plain", "--to", "+15551234567")
	cb := bob.start("chat", "--plain", "--to", "+447700900123")
	ca.err.waitFor(t, "Chatting with +15551234567")
	cb.err.waitFor(t, "Chatting with +447700900123")
	io.WriteString(ca.in, "are we still on?\n")
	cb.out.waitFor(t, "+447700900123: are we still on?")
	ca.out.waitFor(t, "read: are we still on?") // bob's chat showed it, so marked it read
	io.WriteString(cb.in, "yes!\n")
	ca.out.waitFor(t, "+15551234567: yes!")
	cb.out.waitFor(t, "read: yes!")
	io.WriteString(ca.in, "/quit\n")
	_ = cb.in.Close() // Ctrl-D
	for _, c := range []*command{ca, cb} {
		if code := c.exit(t); code != 0 {
			t.Errorf("chat exit %d\n%s", code, c.err)
		}
	}
}
