package nodetest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/parley-im/parley/internal/node"
	"github.com/parley-im/parley/internal/wiretest"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// Timeout bounds every wait for something a node does: generous, for a
// loaded 2-core machine running the race detector.
const Timeout = 30 * time.Second

// Node is a node started in this process for one test.
type Node struct {
	*node.Node
	// Codes catches the verification codes the node sends.
	Codes *Codes

	mu        sync.Mutex
	nextPhone int // guarded by mu: the next candidate of Phone and PhoneOn

	cfg node.Config // what Start started, for Restart
}

// Start starts a node for t and shuts it down when t ends. The node has
// 2 shards, a fresh data directory, every listener on a free loopback
// port (client, media; the admin endpoint only if change asks for one,
// with AdminAddr "127.0.0.1:0"), Codes as its code sender, and a logger
// that writes warnings and errors to t's output; its codes are outside
// the code limits (node.Config.FreeCodes). change, if not nil,
// edits the configuration before the start.
func Start(t testing.TB, change func(*node.Config)) *Node {
	t.Helper()
	codes := NewCodes()
	cfg := node.Config{
		DataDir:   t.TempDir(),
		Listen:    "127.0.0.1:0",
		MediaAddr: "127.0.0.1:0",
		Shards:    2,
		Codes:     codes,
		FreeCodes: true, // Codes only catches them: outside the code limits
		Logger:    Logger(t),
	}
	if change != nil {
		change(&cfg)
	}
	n, err := node.Start(cfg)
	if err != nil {
		t.Fatalf("nodetest: start node: %v", err)
	}
	nn := &Node{Node: n, Codes: codes, cfg: cfg}
	t.Cleanup(func() {
		if nn.Node == nil {
			return // a Restart failed and said so
		}
		if err := nn.shutdown(); err != nil {
			t.Errorf("nodetest: shutdown: %v", err)
		}
	})
	return nn
}

// DataDir returns the node's data directory.
func (n *Node) DataDir() string { return n.cfg.DataDir }

func (n *Node) shutdown() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return n.Shutdown(ctx)
}

// Restart shuts the node down cleanly and starts it again on the same
// data directory and the same client address, as an operator's restart
// does: what was stored survives, every connection is closed, and
// clients reconnect to the same address (the media and admin endpoints
// take new free ports). For the test's goroutine, while no Device
// connects: it replaces the embedded node.
func (n *Node) Restart(t testing.TB) {
	t.Helper()
	n.RestartWith(t, nil)
}

// RestartWith is Restart with between(dataDir), if not nil, run while the
// node is down: a test wipes the data directory there, or restores a
// backup into it.
func (n *Node) RestartWith(t testing.TB, between func(dataDir string)) {
	t.Helper()
	cfg := n.cfg
	cfg.Listen = n.Addr().String()
	if err := n.shutdown(); err != nil {
		t.Fatalf("nodetest: restart: shutdown: %v", err)
	}
	if between != nil {
		between(cfg.DataDir)
	}
	nn, err := node.Start(cfg)
	if err != nil {
		n.Node = nil
		t.Fatalf("nodetest: restart: %v", err)
	}
	n.Node = nn
}

// Logger returns a logger that writes warnings and errors to t's output
// (shown for a failed test, or with -v) until t ends, and drops what
// comes later.
func Logger(t testing.TB) *slog.Logger {
	w := &testWriter{w: t.Output()}
	// Registered before the node's shutdown, so it runs after it: the
	// shutdown's own warnings still reach the test.
	t.Cleanup(w.close)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// testWriter forwards to a test's output until closed: writing to it after
// the test ends would panic.
type testWriter struct {
	mu     sync.Mutex
	w      io.Writer // guarded by mu; nil once closed
	closed bool      // guarded by mu
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return len(p), nil
	}
	return w.w.Write(p)
}

func (w *testWriter) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
}

// Codes is a storage.CodeSender that keeps the latest code sent to each
// phone and lets a test wait for one. Its methods are safe for
// concurrent use.
type Codes struct {
	mu      sync.Mutex
	codes   map[string]string // guarded by mu: phone → latest code
	changed chan struct{}     // guarded by mu: closed and replaced on every code
}

// NewCodes returns an empty Codes.
func NewCodes() *Codes {
	return &Codes{codes: map[string]string{}, changed: make(chan struct{})}
}

// SendCode implements storage.CodeSender: it keeps the code and reports
// it sent at once.
func (c *Codes) SendCode(phone, code string, done func(error)) {
	c.mu.Lock()
	c.codes[phone] = code
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
	done(nil)
}

// Get returns the latest code sent to phone, or "" if none was.
func (c *Codes) Get(phone string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.codes[phone]
}

// Lookup waits up to Timeout for a code for phone and returns it, or ""
// with an error if none came. It may be called from any goroutine.
func (c *Codes) Lookup(phone string) (string, error) {
	deadline := time.NewTimer(Timeout)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		code, changed := c.codes[phone], c.changed
		c.mu.Unlock()
		if code != "" {
			return code, nil
		}
		select {
		case <-changed:
		case <-deadline.C:
			return "", fmt.Errorf("nodetest: no code sent to %s in %v", phone, Timeout)
		}
	}
}

// Wait is Lookup for the test's goroutine: it fails t if no code comes.
func (c *Codes) Wait(t testing.TB, phone string) string {
	t.Helper()
	code, err := c.Lookup(phone)
	if err != nil {
		t.Fatal(err)
	}
	return code
}

// waitOrEmpty is Lookup for wiretest.Client.Register, whose caller fails
// the test on the wrong answer an empty code gets.
func (c *Codes) waitOrEmpty(phone string) string {
	code, _ := c.Lookup(phone)
	return code
}

// phoneNumber is the i-th test phone number: +1555 and seven digits.
func phoneNumber(i int) string { return fmt.Sprintf("+1555%07d", i) }

// Phone returns a phone number that no earlier Phone or PhoneOn of n
// returned, on any shard.
func (n *Node) Phone() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.nextPhone++
	return phoneNumber(n.nextPhone)
}

// PhoneOn returns a phone number that no earlier Phone or PhoneOn of n
// returned, whose slot the node's router maps to shard: an account
// registered with it lives on that shard (storage.SlotOfPhone; a user
// id's slot is its phone's). shard must be below the node's shard count.
func (n *Node) PhoneOn(shard int) string {
	if shard < 0 || shard >= n.Router().Shards() {
		panic(fmt.Sprintf("nodetest: shard %d of %d", shard, n.Router().Shards()))
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for {
		n.nextPhone++
		if p := phoneNumber(n.nextPhone); int(n.Router().ShardOfPhone(p)) == shard {
			return p
		}
	}
}

// Dial opens a raw wire connection to the node's client listener.
func (n *Node) Dial(t testing.TB) *wiretest.Client {
	t.Helper()
	return wiretest.Dial(t, n.Addr().String(), n.Fingerprint())
}

// DialFrom is Dial from the source address src, such as 127.0.0.2: the
// node counts the connection against that address's limits (with
// server.Config.LimitLoopback).
func (n *Node) DialFrom(t testing.TB, src string) *wiretest.Client {
	t.Helper()
	return wiretest.DialFrom(t, src, n.Addr().String(), n.Fingerprint())
}

// Register registers phone on a fresh connection and returns the
// device's credentials.
func (n *Node) Register(t testing.TB, phone string) wiretest.User {
	t.Helper()
	c := n.Dial(t)
	defer c.Conn.Close()
	return c.Register(phone, n.Codes.waitOrEmpty)
}

// RegisterOn registers a new account on shard and returns its first
// device's credentials.
func (n *Node) RegisterOn(t testing.TB, shard int) wiretest.User {
	t.Helper()
	u := n.Register(t, n.PhoneOn(shard))
	if got := int(n.Router().ShardOf(u.ID)); got != shard {
		t.Fatalf("nodetest: user %d registered on shard %d, want %d", u.ID, got, shard)
	}
	return u
}

// RegisterMany registers count new accounts on any shards (phone numbers
// from Phone), pipelining the requests over a few connections.
func (n *Node) RegisterMany(t testing.TB, count int) []wiretest.User {
	t.Helper()
	const perConn = 64 // well under the 128 requests a connection may have in flight
	users := make([]wiretest.User, 0, count)
	for len(users) < count {
		phones := make([]string, min(perConn, count-len(users)))
		for i := range phones {
			phones[i] = n.Phone()
		}
		users = append(users, n.registerBatch(t, phones)...)
	}
	return users
}

// registerBatch registers phones on one connection: every REQUEST_CODE,
// then every VERIFY, answers matched by rid.
func (n *Node) registerBatch(t testing.TB, phones []string) []wiretest.User {
	t.Helper()
	c := n.Dial(t)
	defer c.Conn.Close()
	for i, p := range phones {
		c.Send(protocol.KindRequestCode, &pb.RequestCode{Rid: uint32(i + 1), Phone: p, Version: protocol.Version})
	}
	for range phones {
		var sent pb.CodeSent
		c.ExpectProto(protocol.KindCodeSent, &sent)
	}
	for i, p := range phones {
		c.Send(protocol.KindVerify, &pb.Verify{Rid: uint32(i + 1), Phone: p, Code: n.Codes.Wait(t, p), DeviceName: "test"})
	}
	users := make([]wiretest.User, len(phones))
	for range phones {
		var reg pb.Registered
		c.ExpectProto(protocol.KindRegistered, &reg)
		i := int(reg.Rid) - 1
		if i < 0 || i >= len(phones) || users[i].ID != 0 {
			t.Fatalf("nodetest: Registered with rid %d", reg.Rid)
		}
		users[i] = wiretest.User{Phone: phones[i], ID: reg.User, Device: reg.Device, Cred: reg.Credential}
	}
	return users
}

// Login opens a connection logged in as u, resuming after cursor.
func (n *Node) Login(t testing.TB, u wiretest.User, cursor uint64) (*wiretest.Client, *pb.LoginOk) {
	t.Helper()
	c := n.Dial(t)
	return c, c.Login(u, cursor)
}

// Link links a new companion device, named name, to the account logged
// in on primary, and returns its credentials.
func (n *Node) Link(t testing.TB, primary *wiretest.Client, name string) wiretest.User {
	t.Helper()
	return wiretest.Link(t, n.Addr().String(), n.Fingerprint(), primary, name)
}
