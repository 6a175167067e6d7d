package main

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/parley-im/parley/internal/nodetest"
)

// say types line and Enter into c.
func (c *command) say(t *testing.T, line string) {
	t.Helper()
	if _, err := io.WriteString(c.in, line+"\n"); err != nil {
		t.Fatal(err)
	}
}

// TestEndToEndControls: two terminals chat and use the conversation
// controls (spec.md section 18): a reaction shows under the message it
// answers with the reactions it has, a reply under a quote of its
// message, an edit with an edited mark and what it replaces, a deletion
// by what it deleted, a timer change and the disappearing message's
// time, a forward; then a report, and a block that bob's next message
// does not pass.
func TestEndToEndControls(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node")
	}
	n := nodetest.Start(t, nil)
	alice := register(t, n, "+447700900401")
	bob := register(t, n, "+15551230402")
	carol := register(t, n, "+15551230403")
	carol.ok("lookup", "+447700900401") // so that carol's terminal names alice

	ca := alice.start("chat", "--plain", "--to", "+15551230402")
	cb := bob.start("chat", "--plain", "--to", "+447700900401")
	ca.err.waitFor(t, "Chatting with +15551230402")
	cb.err.waitFor(t, "Chatting with +447700900401")
	say := func(c *command, line string) { t.Helper(); c.say(t, line) }

	say(ca, "lunch at noon?")
	cb.out.waitFor(t, "+447700900401: lunch at noon?")
	ca.out.waitForLine(t, "sent", ": lunch at noon?")
	say(cb, "/react 👍")
	ca.out.waitForLine(t, "+15551230402 reacted 👍 to You: \"lunch at noon?\"")
	ca.out.waitForLine(t, "↳ 👍 +15551230402")
	say(cb, "/reply make it one")
	ca.out.waitForLine(t, "┃ You: \"lunch at noon?\"")
	ca.out.waitForLine(t, "+15551230402: make it one")
	say(ca, "/edit lunch at one?")
	cb.out.waitForLine(t, "+447700900401: lunch at one? (edited; was +447700900401: \"lunch at noon?\")")

	say(ca, "oops, wrong chat")
	cb.out.waitFor(t, "+447700900401: oops, wrong chat")
	ca.out.waitForLine(t, "sent", ": oops, wrong chat") // /delete names the last message SENT answered
	say(ca, "/delete")
	cb.out.waitForLine(t, "+447700900401 deleted \"oops, wrong chat\"")
	ca.err.waitFor(t, "deleted \"oops, wrong chat\" for everyone") // alice has one device: no REVOKED of her own

	say(cb, "/timer 1h")
	cb.err.waitFor(t, "new messages here disappear 1h after they are sent")
	ca.out.waitForLine(t, "+15551230402 set messages with you to disappear after 1h")
	say(ca, "see you")
	cb.out.waitForLine(t, "+447700900401: see you (disappears ")

	say(cb, "/forward +15551230403")
	lc := carol.start("listen", "--plain")
	lc.out.waitForLine(t, "(forwarded) see you")
	lc.cancel()
	lc.exit(t)

	say(ca, "/report spam")
	ca.err.waitFor(t, "reported +15551230402 to the server's operator")
	say(ca, "/block")
	ca.err.waitFor(t, "blocked +15551230402")
	say(cb, "hello?")
	cb.out.waitForLine(t, ": hello?") // sent: one tick ([S-18-6])
	say(ca, "still here")
	cb.out.waitFor(t, "+447700900401: still here")
	say(ca, "/quit")
	_ = cb.in.Close()
	for _, c := range []*command{ca, cb} {
		if code := c.exit(t); code != 0 {
			t.Errorf("chat exit %d\n%s", code, c.err)
		}
	}
	if got := ca.out.String(); strings.Contains(got, "hello?") {
		t.Errorf("alice's chat showed a message from the user she blocked:\n%s", got)
	}
	if rs := n.Reports().Recent(); len(rs) != 1 || rs[0].Reason != "spam" || len(rs[0].Messages) == 0 {
		t.Errorf("the operator got %+v", rs)
	}
}

// TestEndToEndExpiredNotShown: a disappearing message that reaches a
// terminal after it expired is never shown ([S-18-10]), in a chat or a
// listen. Bob's and carol's terminals run two hours ahead of the server,
// so the group message alice sends with a one-hour timer has expired when
// it arrives; the timer changes and the message sent after the timer is
// off show. The chat does not count it among the messages it got: a
// /report never reveals it.
func TestEndToEndExpiredNotShown(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node")
	}
	n := nodetest.Start(t, nil)
	const a, b, c = "+447700900411", "+15551230412", "+15551230413"
	alice := register(t, n, a)
	bob := register(t, n, b)
	carol := register(t, n, c)
	say := func(c *command, line string) { t.Helper(); c.say(t, line) }

	g := groupID(t, alice.ok("group", "create", "ephemeral", b, c))
	ca := alice.start("chat", "--plain", "--group", g)
	ca.err.waitFor(t, "up to date")
	say(ca, "/timer 1h")
	ca.err.waitFor(t, "new messages here disappear 1h after they are sent")
	say(ca, "burn after reading")
	ca.out.waitForLine(t, "sent", ": burn after reading")
	say(ca, "/timer off")
	ca.err.waitFor(t, "disappearing messages are off here")
	say(ca, "this one stays")
	ca.out.waitForLine(t, "sent", ": this one stays")
	say(ca, "/quit")
	ca.exit(t)

	later := func() time.Time { return time.Now().Add(2 * time.Hour) }
	bob.now, carol.now = later, later
	cb := bob.start("chat", "--plain", "--group", g)
	lc := carol.start("listen", "--plain")
	for _, c := range []*command{cb, lc} {
		c.out.waitFor(t, ": this one stays") // in order: the expired one came before
	}
	say(cb, "/report") // what bob's chat got from alice: only what it showed
	cb.err.waitForLine(t, "reported ", " to the server's operator, with 1 message(s)")
	say(cb, "/quit")
	cb.exit(t)
	lc.cancel()
	lc.exit(t)
	for _, c := range []*command{cb, lc} {
		out := c.out.String()
		if strings.Contains(out, "burn after reading") || !strings.Contains(out, "set messages in #ephemeral to disappear after 1h") ||
			!strings.Contains(out, "turned off disappearing messages in #ephemeral") {
			t.Errorf("want the timer changes and not the expired message:\n%s", out)
		}
	}
}
