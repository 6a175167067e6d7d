package client

import (
	"context"
	"strings"
	"testing"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
)

// TestRefusedSendsResentInOrder checks [S-8-13]: A is refused with a
// code that is retried, B (same user, already written) is refused behind
// it with a shorter delay, and C is made while both wait. The client
// writes them again A, B, C — B not before A's retry, though its own
// timer is due first — and never a later send of that conversation while
// an earlier one waits; another conversation is not held back.
func TestRefusedSendsResentInOrder(t *testing.T) {
	srv := newFakeServer(t, false)
	c := startClient(t, testConfig(srv), nil)
	fc := srv.accept(t)
	fc.login(16, 30, 0)
	ctx := context.Background()
	resA := sendAsyncTest(c, ctx, 9, "A")
	a := expectSend(t, fc)
	resB := sendAsyncTest(c, ctx, 9, "B")
	b := expectSend(t, fc)
	fc.write(codec.AppendError(nil, protocol.CodeShardUnavailable, 0, a.CMID, "", 300))
	fc.write(codec.AppendError(nil, protocol.CodeShardUnavailable, 0, b.CMID, "", 10))
	// Both refusals are applied before C is made.
	waitWaiting(t, c, 2)
	resC := sendAsyncTest(c, ctx, 9, "C")
	resD := sendAsyncTest(c, ctx, 10, "another conversation")
	if d := expectSend(t, fc); d.To != 10 {
		t.Fatalf("first send after the refusals: to %d cmid %d %q, want the other conversation's", d.To, d.CMID, d.Body)
	}
	var order []string
	for range 3 {
		s := expectSend(t, fc)
		order = append(order, string(s.Body))
		fc.write(codec.AppendSent(nil, s.CMID, msgID(5000, s.CMID)))
	}
	if want := "A B C"; strings.Join(order, " ") != want {
		t.Fatalf("resent %q, want %q", strings.Join(order, " "), want)
	}
	for _, res := range []<-chan sendOutcome{resA, resB, resC} {
		if o := outcome(t, res); o.err != nil {
			t.Fatal(o.err)
		}
	}
	_ = resD
}

// TestWaitingSendHoldsBackOnReconnect: A waits for its retry when the
// connection drops with B in flight; the next connection gets A before B
// (it knows nothing of A's refusal, so B would be stored first).
func TestWaitingSendHoldsBackOnReconnect(t *testing.T) {
	srv := newFakeServer(t, false)
	c := startClient(t, testConfig(srv), nil)
	fc := srv.accept(t)
	fc.login(16, 30, 0)
	ctx := context.Background()
	resA := sendAsyncTest(c, ctx, 9, "A")
	a := expectSend(t, fc)
	resB := sendAsyncTest(c, ctx, 9, "B")
	expectSend(t, fc)
	fc.write(codec.AppendError(nil, protocol.CodeOverloaded, 0, a.CMID, "", 200))
	waitWaiting(t, c, 1)
	_ = fc.c.Close()

	fc = srv.accept(t)
	fc.login(16, 30, 0)
	var order []string
	for range 2 {
		s := expectSend(t, fc)
		order = append(order, string(s.Body))
		fc.write(codec.AppendSent(nil, s.CMID, msgID(5000, s.CMID)))
	}
	if want := "A B"; strings.Join(order, " ") != want {
		t.Fatalf("sent %q on the new connection, want %q", strings.Join(order, " "), want)
	}
	for _, res := range []<-chan sendOutcome{resA, resB} {
		if o := outcome(t, res); o.err != nil {
			t.Fatal(o.err)
		}
	}
}

// waitWaiting waits until n of c's sends wait for their retry.
func waitWaiting(t *testing.T, c *testClient, n int) {
	t.Helper()
	waitUntil(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.waiting == n
	})
}
