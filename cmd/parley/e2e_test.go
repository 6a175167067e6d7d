package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parley-im/parley/internal/nodetest"
)

// These tests run the command against a real node in this process: two
// people register, look each other up, send, listen and chat, as they
// would from two terminals.

// syncBuffer is an io.Writer that tests read while the command writes.
type syncBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer  // guarded by mu
	changed chan struct{} // guarded by mu: closed and replaced on every write
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.changed != nil {
		close(s.changed)
		s.changed = nil
	}
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// wait waits until the output satisfies cond, checking it after every
// write, for up to nodetest.Timeout.
func (s *syncBuffer) wait(t *testing.T, cond func(out string) bool) bool {
	t.Helper()
	deadline := time.NewTimer(nodetest.Timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		if s.changed == nil {
			s.changed = make(chan struct{})
		}
		out, changed := s.b.String(), s.changed
		s.mu.Unlock()
		if cond(out) {
			return true
		}
		select {
		case <-changed:
		case <-deadline.C:
			return false
		}
	}
}

// waitFor waits until the output contains want.
func (s *syncBuffer) waitFor(t *testing.T, want string) {
	t.Helper()
	if !s.wait(t, func(out string) bool { return strings.Contains(out, want) }) {
		t.Fatalf("output lacks %q:\n%s", want, s)
	}
}

// waitForLine waits until a line of the output holds every part, in
// order.
func (s *syncBuffer) waitForLine(t *testing.T, parts ...string) {
	t.Helper()
	if !s.wait(t, func(out string) bool {
		for _, line := range strings.Split(out, "\n") {
			rest, ok := line, true
			for _, p := range parts {
				var found bool
				if _, rest, found = strings.Cut(rest, p); !found {
					ok = false
					break
				}
			}
			if ok {
				return true
			}
		}
		return false
	}) {
		t.Fatalf("output lacks a line with %q:\n%s", parts, s)
	}
}

// terminal is one person's machine: a configuration directory and the
// server's address in the environment.
type terminal struct {
	t       *testing.T
	dir     string
	environ map[string]string
	dial    func(ctx context.Context, network, addr string) (net.Conn, error) // nil: a net.Dialer
	now     func() time.Time                                                  // nil: time.Now
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
		dial:      tm.dial,
		now:       tm.now,
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

// register registers phone on a new terminal.
func register(t *testing.T, n *nodetest.Node, phone string) *terminal {
	t.Helper()
	tm := &terminal{t: t, dir: t.TempDir(), environ: map[string]string{
		"PARLEY_SERVER": n.Addr().String(), "PARLEY_FINGERPRINT": n.Fingerprint(),
	}}
	c := tm.start("register", "--phone", phone, "--plain")
	code := n.Codes.Wait(t, phone)
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
	n := nodetest.Start(t, nil)
	alice := register(t, n, "+447700900123")
	bob := register(t, n, "+15551234567")

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

// userID returns the user id the profile of tm is registered as.
func (tm *terminal) userID() string {
	tm.t.Helper()
	o := options{profile: "default"}
	st, err := o.openStore(env{configDir: func() (string, error) { return tm.dir, nil }}, false)
	if err != nil {
		tm.t.Fatal(err)
	}
	defer st.Close()
	s, err := st.Load()
	if err != nil {
		tm.t.Fatal(err)
	}
	return strconv.FormatUint(s.Credentials.User, 10)
}

// field returns the text after prefix in out, up to the next space or
// line break.
func field(t *testing.T, out, prefix string) string {
	t.Helper()
	_, rest, ok := strings.Cut(out, prefix)
	if !ok {
		t.Fatalf("output lacks %q:\n%s", prefix, out)
	}
	if i := strings.IndexAny(rest, " \n"); i >= 0 {
		rest = rest[:i]
	}
	return rest
}

// groupID returns the id in what group create printed.
func groupID(t *testing.T, out string) string {
	t.Helper()
	return strings.TrimSuffix(field(t, out, "(group "), ")")
}

// TestEndToEndGroups: three people make a group, chat in it with typing
// and per-message receipt counts, and change it.
func TestEndToEndGroups(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node")
	}
	n := nodetest.Start(t, nil)
	alice := register(t, n, "+447700900201")
	bob := register(t, n, "+447700900202")
	carol := register(t, n, "+447700900203")

	out := alice.ok("group", "create", "Saturday hike", "+447700900202", "+447700900203")
	if !strings.Contains(out, "Created #Saturday hike (group ") || !strings.Contains(out, ") with 3 members.") {
		t.Fatalf("group create printed %q", out)
	}
	g := groupID(t, out)
	if out := bob.ok("groups"); !strings.Contains(out, g+"\t#Saturday hike\t3 members") {
		t.Errorf("groups printed %q", out)
	}
	if out := alice.ok("group", "info", "Saturday hike"); !strings.Contains(out, "+447700900201\tadmin (you)") ||
		!strings.Contains(out, "+447700900202\tmember") {
		t.Errorf("group info printed %q", out)
	}

	aliceID := alice.userID()
	ca := alice.start("chat", "--plain", "--group", g)
	cb := bob.start("chat", "--plain", "--group", "Saturday hike") // the name bob's groups learnt
	cc := carol.start("chat", "--plain", "--group", g)
	for _, c := range []*command{ca, cb, cc} {
		c.err.waitFor(t, "Chatting in #Saturday hike (3 members)")
		c.err.waitFor(t, "up to date")
	}
	io.WriteString(ca.in, "who brings the map?\n")
	cb.out.waitFor(t, "user "+aliceID+": who brings the map?")
	cc.out.waitFor(t, ": who brings the map?")
	ca.out.waitForLine(t, "read 2/2", ": who brings the map?") // both chats showed it, so marked it read

	io.WriteString(cb.in, "I d") // typing…
	ca.err.waitFor(t, " is typing…")
	io.WriteString(cb.in, "o\n")
	ca.out.waitFor(t, ": I do")
	cb.out.waitForLine(t, "read 2/2", ": I do")

	// Carol leaves; the others see it in the group's order.
	_ = cc.in.Close()
	if code := cc.exit(t); code != 0 {
		t.Errorf("chat exit %d\n%s", code, cc.err)
	}
	carol.ok("group", "leave", g)
	ca.out.waitFor(t, "left #Saturday hike")
	cb.out.waitFor(t, "left #Saturday hike")
	io.WriteString(ca.in, "just us now\n")
	ca.out.waitForLine(t, "read 1/1", ": just us now")

	for _, c := range []*command{ca, cb} {
		_ = c.in.Close()
		if code := c.exit(t); code != 0 {
			t.Errorf("chat exit %d\n%s", code, c.err)
		}
	}
	c := bob.start("group", "remove", g, "+447700900201")
	_ = c.in.Close()
	if code := c.exit(t); code != 1 || !strings.Contains(c.err.String(), "only the group's admins can do that (NOT_ADMIN)") {
		t.Errorf("remove by a member: exit %d, stderr %q", code, c.err)
	}
}

// TestEndToEndPresenceAndTyping: chat --to shows when the other person
// comes online, types and leaves.
func TestEndToEndPresenceAndTyping(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node")
	}
	n := nodetest.Start(t, nil)
	alice := register(t, n, "+447700900301")
	bob := register(t, n, "+447700900302")

	ca := alice.start("chat", "--plain", "--to", "+447700900302")
	ca.err.waitFor(t, "Chatting with +447700900302")
	// Bob's device connected once, at registration, to publish its keys.
	ca.err.waitFor(t, "+447700900302 was last seen")
	cb := bob.start("chat", "--plain", "--to", "+447700900301")
	ca.err.waitFor(t, "+447700900302 is online")
	cb.err.waitFor(t, "+447700900301 is online")
	io.WriteString(cb.in, "hel")
	ca.err.waitFor(t, "+447700900302 is typing…")
	io.WriteString(cb.in, "lo\n")
	ca.out.waitFor(t, "+447700900302: hello")
	_ = cb.in.Close()
	if code := cb.exit(t); code != 0 {
		t.Errorf("chat exit %d\n%s", code, cb.err)
	}
	ca.err.waitFor(t, "+447700900302 was last seen today at")
	_ = ca.in.Close()
	ca.exit(t)
}

// TestEndToEndFiles: a file sent to a person and one sent to a group
// arrive encrypted end to end and are saved intact.
func TestEndToEndFiles(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node")
	}
	n := nodetest.Start(t, nil)
	alice := register(t, n, "+447700900401")
	bob := register(t, n, "+447700900402")

	dir := t.TempDir()
	data := make([]byte, 200<<10+3)
	rand.Read(data)
	src := filepath.Join(dir, "notes.bin")
	if err := os.WriteFile(src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	png := filepath.Join(dir, "map.png")
	if err := os.WriteFile(png, append([]byte("\x89PNG\r\n\x1a\n"), data[:1000]...), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := alice.ok("send-file", "--plain", "--to", "+447700900402", src); !strings.HasPrefix(out, "sent notes.bin (200.0 KiB) to +447700900402") {
		t.Errorf("send-file printed %q", out)
	}
	out := alice.ok("group", "create", "maps", "+447700900402")
	g := groupID(t, out)
	alice.ok("send-file", "--group", g, png)

	lb := bob.start("listen", "--plain")
	lb.out.waitFor(t, "[document notes.bin, 200.0 KiB] (parley save-file ")
	lb.out.waitFor(t, "in #maps: [image map.png, 1008 bytes] (parley save-file ")
	lb.cancel()
	lb.exit(t)
	seq := field(t, lb.out.String(), "notes.bin, 200.0 KiB] (parley save-file ")
	saved := t.TempDir()
	if out := bob.ok("save-file", seq, saved); !strings.Contains(out, "saved "+filepath.Join(saved, "notes.bin")) {
		t.Errorf("save-file printed %q", out)
	}
	if got, err := os.ReadFile(filepath.Join(saved, "notes.bin")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("saved file: %v (equal %v)", err, bytes.Equal(got, data))
	}
	// Saving again does not replace the file.
	c := bob.start("save-file", seq, saved)
	_ = c.in.Close()
	if code := c.exit(t); code != 1 || !strings.Contains(c.err.String(), "exists") {
		t.Errorf("second save: exit %d, stderr %q", code, c.err)
	}
	// From the chat view.
	cb := bob.start("chat", "--plain", "--group", g)
	cb.err.waitFor(t, "up to date")
	seq = field(t, lb.out.String(), "map.png, 1008 bytes] (parley save-file ")
	io.WriteString(cb.in, "/save "+seq+" "+filepath.Join(saved, "m.png")+"\n")
	cb.err.waitFor(t, "saved "+filepath.Join(saved, "m.png"))
	_ = cb.in.Close()
	cb.exit(t)
	if got, _ := os.ReadFile(filepath.Join(saved, "m.png")); !bytes.HasPrefix(got, []byte("\x89PNG")) || len(got) != 1008 {
		t.Errorf("saved picture of %d bytes", len(got))
	}
}

// TestEndToEndLinking: a second machine is linked to alice's account with
// a code approved on her phone, sees what she sends from the phone, and
// is revoked.
func TestEndToEndLinking(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node")
	}
	n := nodetest.Start(t, nil)
	alice := register(t, n, "+447700900501")
	bob := register(t, n, "+447700900502")
	laptop := &terminal{t: t, dir: t.TempDir(), environ: map[string]string{
		"PARLEY_SERVER": n.Addr().String(), "PARLEY_FINGERPRINT": n.Fingerprint(),
	}}

	l := laptop.start("link", "--device-name", "laptop")
	l.out.waitFor(t, "Link code: ")
	code := field(t, l.out.String(), "Link code: ")
	c := alice.start("approve", "x"+code) // a typo
	_ = c.in.Close()
	if status := c.exit(t); status != 2 {
		t.Errorf("approve with a typo: exit %d", status)
	}
	if out := alice.ok("approve", strings.ToLower(code)); !strings.Contains(out, "Approved") {
		t.Errorf("approve printed %q", out)
	}
	if status := l.exit(t); status != 0 {
		t.Fatalf("link: exit %d\n%s", status, l.err)
	}
	l.out.waitFor(t, "Linked as device 2 of user "+alice.userID())
	laptop.environ = nil

	out := laptop.ok("devices")
	if !strings.Contains(out, "1\tparley on e2e\tprimary, ") || !strings.Contains(out, "2\tlaptop\tonline, this device") {
		t.Errorf("devices printed %q", out)
	}
	// Only the primary approves; a refused approval uses the code up.
	tablet := &terminal{t: t, dir: t.TempDir(), environ: map[string]string{
		"PARLEY_SERVER": n.Addr().String(), "PARLEY_FINGERPRINT": n.Fingerprint(),
	}}
	l = tablet.start("link")
	l.out.waitFor(t, "Link code: ")
	c = laptop.start("approve", field(t, l.out.String(), "Link code: "))
	_ = c.in.Close()
	if status := c.exit(t); status != 1 || !strings.Contains(c.err.String(), "NOT_PRIMARY") {
		t.Errorf("approve on a companion: exit %d, stderr %q", status, c.err)
	}
	l.cancel()
	if status := l.exit(t); status != 1 {
		t.Errorf("interrupted link: exit %d", status)
	}
	ll := laptop.start("listen", "--plain")
	ll.err.waitFor(t, "up to date")
	alice.ok("send", "--to", "+447700900502", "sent from the phone")
	ll.out.waitFor(t, "You → user "+bob.userID()+": sent from the phone")
	if out := alice.ok("revoke", "2"); !strings.Contains(out, "Revoked device 2.") {
		t.Errorf("revoke printed %q", out)
	}
	if status := ll.exit(t); status != 1 || !strings.Contains(ll.err.String(), "DEVICE_REVOKED") {
		t.Errorf("revoked listen: exit %d, stderr %q", status, ll.err)
	}
}

// TestEndToEndSecurityCode: verify prints the same security code on both
// sides; when Bob links a device, Alice's chat says his security code
// changed, and verify prints a new one.
func TestEndToEndSecurityCode(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node")
	}
	n := nodetest.Start(t, nil)
	alice := register(t, n, "+447700900601")
	bob := register(t, n, "+447700900602")
	code := func(tm *terminal, to string) string {
		out := tm.ok("verify", "--to", to)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) < 5 {
			t.Fatalf("verify printed %q", out)
		}
		return strings.Join(lines[1:5], " ")
	}
	ab, ba := code(alice, "+447700900602"), code(bob, "+447700900601")
	if ab != ba || len(strings.ReplaceAll(ab, " ", "")) != 60 {
		t.Fatalf("security codes differ: %q and %q", ab, ba)
	}

	cb := bob.start("chat", "--plain", "--to", "+447700900601") // Alice becomes Bob's contact
	cb.err.waitFor(t, "up to date")
	_ = cb.in.Close()
	if status := cb.exit(t); status != 0 {
		t.Fatalf("chat: exit %d\n%s", status, cb.err)
	}
	ca := alice.start("chat", "--plain", "--to", "+447700900602")
	ca.err.waitFor(t, "up to date")

	laptop := &terminal{t: t, dir: t.TempDir(), environ: map[string]string{
		"PARLEY_SERVER": n.Addr().String(), "PARLEY_FINGERPRINT": n.Fingerprint(),
	}}
	l := laptop.start("link", "--device-name", "laptop")
	l.out.waitFor(t, "Link code: ")
	bob.ok("approve", field(t, l.out.String(), "Link code: "))
	if status := l.exit(t); status != 0 {
		t.Fatalf("link: exit %d\n%s", status, l.err)
	}
	ca.err.waitFor(t, "The security code with +447700900602 changed")
	_ = ca.in.Close()
	if status := ca.exit(t); status != 0 {
		t.Errorf("chat: exit %d\n%s", status, ca.err)
	}
	if again := code(alice, "+447700900602"); again == ab {
		t.Fatalf("the security code did not change: %q", again)
	}
}
