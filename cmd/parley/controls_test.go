package main

import (
	"io"
	"strings"
	"testing"

	"github.com/parley-im/parley/internal/nodetest"
)

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
	say := func(c *command, line string) {
		t.Helper()
		if _, err := io.WriteString(c.in, line+"\n"); err != nil {
			t.Fatal(err)
		}
	}

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

	say(cb, "/timer 1h")
	ca.out.waitForLine(t, "+15551230402 set messages to disappear after 1h0m0s with +15551230402")
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
