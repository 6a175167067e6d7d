package main

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parley-im/parley/internal/nodetest"
)

// These end-to-end tests check what a person sees: who wrote what and
// where, the marks of their messages, the commands inside a chat, and
// what the command says when something is wrong.

// lines returns the lines of out that contain every part.
func linesWith(out string, parts ...string) []string {
	var got []string
	for _, line := range strings.Split(out, "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			got = append(got, line)
		}
	}
	return got
}

// TestEndToEndNamesAndOtherConversations: people appear by the numbers
// the profile knows and as "You", groups as "#name", and a message of
// another conversation never reads like one of the open chat's.
func TestEndToEndNamesAndOtherConversations(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node")
	}
	n := nodetest.Start(t, nil)
	const a, b, c = "+447700900601", "+447700900602", "+447700900603"
	alice := register(t, n, a)
	bob := register(t, n, b)
	carol := register(t, n, c)
	bob.ok("lookup", a, c) // bob knows both numbers; carol knows none

	lb := bob.start("listen", "--plain")
	lb.err.waitFor(t, "up to date")
	g := groupID(t, alice.ok("group", "create", "Weekend plans", b, c))
	lb.out.waitFor(t, " to #Weekend plans")
	lb.cancel()
	lb.exit(t)
	if l := linesWith(lb.out.String(), "] "+a+" added ", "you", c, " to #Weekend plans"); len(l) != 1 {
		t.Errorf("bob's listen:\n%s", lb.out)
	}

	// Alice's chat in the group; carol writes to her privately, and to
	// the group.
	ca := alice.start("chat", "--plain", "--group", "Weekend plans")
	ca.err.waitFor(t, "Chatting in #Weekend plans (3 members)")
	ca.err.waitFor(t, "up to date")
	ca.out.waitForLine(t, "] You created #Weekend plans")
	ca.out.waitFor(t, " to #Weekend plans")
	if l := linesWith(ca.out.String(), "] You added ", b, c, " to #Weekend plans"); len(l) != 1 {
		t.Errorf("alice's chat:\n%s", ca.out)
	}
	carol.ok("send", "--to", a, "private hello")
	carol.ok("send", "--group", g, "hello group")
	ca.out.waitForLine(t, "] "+c+" (private message, not in this chat): private hello")
	ca.out.waitForLine(t, "] "+c+": hello group")
	if l := linesWith(ca.out.String(), "hello group"); len(l) != 1 || strings.Contains(l[0], "not in this chat") {
		t.Errorf("the group's own message is marked as another conversation's: %q", l)
	}
	_ = ca.in.Close()
	ca.exit(t)

	// Carol's terminal knows nobody's number: ids, but never a group
	// that reads like a person.
	lc := carol.start("listen", "--plain")
	lc.err.waitFor(t, "up to date")
	lc.cancel()
	lc.exit(t)
	if out := lc.out.String(); strings.Contains(out, " me ") || strings.Contains(out, "group "+g+" ") {
		t.Errorf("carol's listen:\n%s", out)
	}

	// Alice's chat with bob: carol's message to the group and to alice
	// are both marked.
	cb := alice.start("chat", "--plain", "--to", b)
	cb.err.waitFor(t, "Chatting with "+b)
	cb.err.waitFor(t, "up to date")
	carol.ok("send", "--group", g, "group again")
	carol.ok("send", "--to", a, "private again")
	bob.ok("send", "--to", a, "from bob")
	cb.out.waitForLine(t, "] "+c+" in #Weekend plans (not in this chat): group again")
	cb.out.waitForLine(t, "] "+c+" (private message, not in this chat): private again")
	cb.out.waitForLine(t, "] "+b+": from bob")
	_ = cb.in.Close()
	cb.exit(t)
}

// TestEndToEndChatCommands: inside a chat, commands are run, never sent;
// /send-file, /approve and /help work there; another command on the
// chat's profile says to quit the chat first; a device linked from the
// chat shows no warning, in link or in listen.
func TestEndToEndChatCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node")
	}
	n := nodetest.Start(t, nil)
	const a, b = "+447700900701", "+447700900702"
	alice := register(t, n, a)
	bob := register(t, n, b)

	ca := alice.start("chat", "--plain", "--to", b)
	cb := bob.start("chat", "--plain", "--to", a)
	ca.err.waitFor(t, "up to date")
	cb.err.waitFor(t, "up to date")
	io.WriteString(cb.in, "hi alice\n") // alice's inbox moves on: a new device starts after 0
	ca.out.waitFor(t, ": hi alice")

	io.WriteString(ca.in, "/help\n")
	ca.err.waitFor(t, "/send-file PATH")
	io.WriteString(ca.in, "/frobnicate now\n")
	ca.err.waitFor(t, "/frobnicate is not a command, so it was not sent")
	io.WriteString(ca.in, "//slash at the start\n")
	cb.out.waitForLine(t, "] "+a+": /slash at the start")
	// Messages arrive in order: had a command been sent, it would be
	// there before the last message.
	if out := cb.out.String(); strings.Contains(out, "help") || strings.Contains(out, "frobnicate") {
		t.Errorf("a command reached bob:\n%s", out)
	}

	// The chat holds the profile.
	c := alice.start("send", "--to", b, "from another terminal")
	_ = c.in.Close()
	if code := c.exit(t); code != 1 || !strings.Contains(c.err.String(), "quit the chat (Ctrl-D) first") {
		t.Errorf("second command: exit %d, stderr %q", code, c.err)
	}

	// A file from inside the chat.
	file := filepath.Join(t.TempDir(), "notes.txt")
	if err := os.WriteFile(file, []byte("bring boots"), 0o600); err != nil {
		t.Fatal(err)
	}
	io.WriteString(ca.in, "/send-file "+file+"\n")
	cb.out.waitForLine(t, "] "+a+": [document notes.txt, 11 bytes] (/save ")
	ca.out.waitForLine(t, "  ", ": [notes.txt, 11 bytes]")

	// Linking a laptop from inside the chat.
	laptop := &terminal{t: t, dir: t.TempDir(), environ: map[string]string{
		"PARLEY_SERVER": n.Addr().String(), "PARLEY_FINGERPRINT": n.Fingerprint(),
	}}
	l := laptop.start("link", "--device-name", "laptop")
	l.out.waitFor(t, "Link code: ")
	l.err.waitFor(t, "(or, in a chat there, type /approve ")
	io.WriteString(ca.in, "/approve "+field(t, l.out.String(), "Link code: ")+"\n")
	ca.err.waitFor(t, `Approved: "laptop" (device 2) is now linked to this account; if you do not recognise it, run parley revoke 2.`)
	if code := l.exit(t); code != 0 {
		t.Fatalf("link: exit %d\n%s", code, l.err)
	}
	laptop.environ = nil
	ll := laptop.start("listen", "--plain")
	ll.err.waitFor(t, "up to date")
	io.WriteString(cb.in, "to both devices\n")
	ll.out.waitFor(t, ": to both devices")
	ll.cancel()
	ll.exit(t)
	for _, c := range []*command{l, ll} { // link logs in once linked, to publish its keys
		if strings.Contains(c.err.String(), "WARN") || strings.Contains(c.err.String(), "cursor") {
			t.Errorf("the new device's terminal shows a log line:\n%s", c.err)
		}
	}

	for _, c := range []*command{ca, cb} {
		io.WriteString(c.in, "/quit\n")
		if code := c.exit(t); code != 0 {
			t.Errorf("chat exit %d\n%s", code, c.err)
		}
	}
}

// TestEndToEndMarks: a message shows ✓✓ delivered when the other side's
// device has it and read when they saw it, each once; a group message's
// mark counts both; typing shows and ends.
func TestEndToEndMarks(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node")
	}
	n := nodetest.Start(t, nil)
	const a, b, c = "+447700900801", "+447700900802", "+447700900803"
	alice := register(t, n, a)
	bob := register(t, n, b)
	carol := register(t, n, c)

	ca := alice.start("chat", "--to", b) // check marks, not --plain
	ca.err.waitFor(t, "up to date")
	lb := bob.start("listen", "--plain") // gets messages, reads none
	lb.err.waitFor(t, "up to date")
	io.WriteString(ca.in, "first\n")
	ca.out.waitForLine(t, "  ✓ sent ", ": first")
	lb.out.waitFor(t, ": first")
	ca.out.waitForLine(t, "  ✓✓ delivered: first")
	lb.cancel()
	lb.exit(t)
	io.WriteString(ca.in, "second\n")
	ca.out.waitForLine(t, "  ✓ sent ", ": second")
	cb := bob.start("chat", "--plain", "--to", a) // shows the second: both read
	ca.out.waitForLine(t, "  ✓✓ read: second (and 1 before)")
	for _, mark := range []string{"✓ sent", "✓✓ delivered"} {
		if l := linesWith(ca.out.String(), mark, ": first"); len(l) != 1 {
			t.Errorf("%q shown %d times:\n%s", mark, len(l), ca.out)
		}
	}

	// Typing: shown when bob starts, ended when he stops (the notifier
	// sends STOPPED after typingIdle without a key).
	cb.err.waitFor(t, "up to date")
	io.WriteString(cb.in, "hel")
	ca.err.waitFor(t, b+" is typing…")
	ca.err.waitFor(t, b+" stopped typing")
	io.WriteString(cb.in, "lo\n")
	ca.out.waitFor(t, b+": hello")
	_ = cb.in.Close()
	cb.exit(t)
	_ = ca.in.Close()
	ca.exit(t)

	// In a group: bob's device gets it, carol reads it.
	g := groupID(t, alice.ok("group", "create", "marks", b, c))
	ga := alice.start("chat", "--plain", "--group", g)
	ga.err.waitFor(t, "up to date")
	lb = bob.start("listen", "--plain")
	lb.err.waitFor(t, "up to date")
	gc := carol.start("chat", "--plain", "--group", g)
	gc.err.waitFor(t, "up to date")
	io.WriteString(ga.in, "to the group\n")
	ga.out.waitForLine(t, "  delivered 2/2, read 1/2: to the group")
	seen := make(map[string]bool)
	for _, l := range linesWith(ga.out.String(), ": to the group") {
		l = l[strings.Index(l, "  "):]
		if seen[l] {
			t.Errorf("line shown twice: %q\n%s", l, ga.out)
		}
		seen[l] = true
	}
	for _, c := range []*command{lb} {
		c.cancel()
		c.exit(t)
	}
	for _, c := range []*command{ga, gc} {
		_ = c.in.Close()
		c.exit(t)
	}
}

// gate stands between a command and the node: while shut, connections
// are refused as if the server were down.
type gate struct {
	mu       sync.Mutex
	shut     bool
	conns    []net.Conn
	attempts chan struct{} // a value per dial while shut
}

func newGate() *gate { return &gate{attempts: make(chan struct{}, 100)} }

func (g *gate) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	g.mu.Lock()
	shut := g.shut
	g.mu.Unlock()
	var d net.Dialer
	if shut {
		select {
		case g.attempts <- struct{}{}:
		default:
		}
		return d.DialContext(ctx, network, "127.0.0.1:1") // nothing listens there
	}
	c, err := d.DialContext(ctx, network, addr)
	if err == nil {
		g.mu.Lock()
		g.conns = append(g.conns, c)
		g.mu.Unlock()
	}
	return c, err
}

// close refuses new connections and cuts the open ones.
func (g *gate) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.shut = true
	for _, c := range g.conns {
		c.Close()
	}
	g.conns = nil
}

func (g *gate) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.shut = false
}

// TestEndToEndServerAway: a one-shot command says at once that the
// server cannot be reached; a chat says once that the connection is
// lost, retries quietly, and says when it is back.
func TestEndToEndServerAway(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node")
	}
	n := nodetest.Start(t, nil)
	const a, b = "+447700900901", "+447700900902"
	alice := register(t, n, a)
	bob := register(t, n, b)
	bob.ok("lookup", a)

	g := newGate()
	alice.dial = g.dial
	ca := alice.start("chat", "--plain", "--to", b)
	ca.err.waitFor(t, "up to date")
	g.close()
	addr := n.Addr().String()
	ca.err.waitFor(t, "lost the connection to "+addr)
	for range 3 { // three attempts in vain
		select {
		case <-g.attempts:
		case <-time.After(30 * time.Second):
			t.Fatalf("no attempt to reconnect:\n%s", ca.err)
		}
	}
	bob.ok("send", "--to", a, "while you were away")
	g.open()
	ca.err.waitFor(t, "reconnected to "+addr)
	ca.out.waitFor(t, b+": while you were away")
	if l := linesWith(ca.err.String(), addr); len(l) != 3 { // connected, lost, reconnected
		t.Errorf("want three lines about the connection, not one per attempt:\n%s", ca.err)
	}
	_, during, _ := strings.Cut(ca.err.String(), "lost the connection to "+addr)
	during, _, _ = strings.Cut(during, "reconnected to "+addr)
	if strings.Count(during, "\n") != 1 { // the end of the "lost" line
		t.Errorf("lines while the server was away:\n%s", ca.err)
	}
	_ = ca.in.Close()
	ca.exit(t)

	// send, with the server gone and a long --timeout: it says so at once.
	// Alice has written to Bob before, so her device knows his devices and
	// has sessions with them: it encrypts without the server and queues.
	alice.ok("send", "--to", b, "hello first")
	g.close()
	c := alice.start("send", "--timeout", "1h", "--to", b, "queued")
	_ = c.in.Close()
	if code := c.exit(t); code != 1 || !strings.Contains(c.err.String(), "cannot reach the server at "+addr+" (connection refused); the message stays queued") {
		t.Errorf("send with the server away: exit %d, stderr %q", code, c.err)
	}
	g.open()
	la := alice.start("listen", "--plain") // the next command sends it
	lb := bob.start("listen", "--plain")
	lb.out.waitFor(t, a+": queued")
	for _, c := range []*command{la, lb} {
		c.cancel()
		c.exit(t)
	}
}

// TestEndToEndTrouble: the wrong fingerprint is refused without showing
// the server's, and a file that cannot be saved is named as the user
// named it.
func TestEndToEndTrouble(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node")
	}
	n := nodetest.Start(t, nil)
	const a, b = "+447700900951", "+447700900952"
	alice := register(t, n, a)
	bob := register(t, n, b)

	wrong := strings.Repeat("ab", 32)
	mallory := &terminal{t: t, dir: t.TempDir(), environ: map[string]string{
		"PARLEY_SERVER": n.Addr().String(), "PARLEY_FINGERPRINT": wrong,
	}}
	c := mallory.start("register", "--phone", "+447700900953")
	_ = c.in.Close()
	code := c.exit(t)
	stderr := c.err.String()
	if code != 1 || !strings.Contains(stderr, "does not match the fingerprint given") ||
		!strings.Contains(stderr, "parleyd printed when it started") || strings.Contains(stderr, n.Fingerprint()) {
		t.Errorf("wrong fingerprint: exit %d, stderr %q", code, stderr)
	}

	file := filepath.Join(t.TempDir(), "plan.txt")
	if err := os.WriteFile(file, []byte("the plan"), 0o600); err != nil {
		t.Fatal(err)
	}
	alice.ok("send-file", "--to", b, file)
	lb := bob.start("listen", "--plain")
	lb.out.waitFor(t, "plan.txt, 8 bytes] (parley save-file ")
	lb.cancel()
	lb.exit(t)
	seq := field(t, lb.out.String(), "plan.txt, 8 bytes] (parley save-file ")
	dst := filepath.Join(t.TempDir(), "missing", "plan.txt")
	c = bob.start("save-file", seq, dst)
	_ = c.in.Close()
	if code := c.exit(t); code != 1 || !strings.Contains(c.err.String(), "could not save "+dst+": no such file or directory") ||
		strings.Contains(c.err.String(), tempPrefix) {
		t.Errorf("save into a missing directory: exit %d, stderr %q", code, c.err)
	}
}
