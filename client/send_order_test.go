package client

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
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

// resealGate is a key store that, once armed, holds up the storing of a
// send encrypted a second time (the reseal after DEVICES_CHANGED) until
// the test opens it: the send stays "being encrypted again" meanwhile.
type resealGate struct {
	*MemoryKeyStore
	mu      sync.Mutex
	armed   bool
	sealed  map[uint64]bool // cmids stored with envelopes
	held    chan uint64     // the cmid of each reseal held up
	release chan struct{}
}

func (g *resealGate) AddOutgoing(o Outgoing) error {
	if len(o.Envelopes) > 0 {
		g.mu.Lock()
		again := g.sealed[o.CMID] && g.armed
		g.sealed[o.CMID] = true
		g.mu.Unlock()
		if again {
			g.held <- o.CMID
			<-g.release
		}
	}
	return g.MemoryKeyStore.AddOutgoing(o)
}

// TestResealHoldsBack: S1 to bob, encrypted for a stale list of his
// devices, is refused DEVICES_CHANGED; S2 to bob is made while S1 is
// being encrypted again. The client writes S2 only after S1's resend (the
// server would refuse it behind S1, [S-8-13]), while a send to another
// conversation goes on; both of bob's devices get S1 before S2. Two users
// on two shards, two devices each, through a real node.
func TestResealHoldsBack(t *testing.T) {
	n := startSecureNode(t)
	ac, bc := n.account(0, 1), n.account(1, 1)
	gate := &resealGate{MemoryKeyStore: NewMemoryKeyStore(), sealed: map[uint64]bool{},
		held: make(chan uint64, 1), release: make(chan struct{})}
	var mu sync.Mutex
	var retried []uint64 // cmids the client was told to retry
	cfg := n.cfg
	cfg.OnRetry = func(r Retry) {
		mu.Lock()
		retried = append(retried, r.CMID)
		mu.Unlock()
	}
	alice := startClientAs(t, cfg, ac[0], gate)
	until(t, alice, func(ev Event) bool { _, ok := ev.(Synced); return ok })
	n.device(ac[1], nil)
	bob, blaptop := n.device(bc[0], nil), n.device(bc[1], nil)
	ctx, cancel := context.WithTimeout(context.Background(), waitE2E)
	defer cancel()
	if _, err := alice.Send(ctx, bob.User(), []byte("m0"), pb.ContentType_CONTENT_TEXT); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*testClient{bob, blaptop} {
		collect(t, c, 1)
	}
	btablet := n.device(n.link(bob, "tablet"), nil) // alice does not know it
	gate.mu.Lock()
	gate.armed = true
	gate.mu.Unlock()

	res1 := sendAsyncTest(alice, ctx, bob.User(), "S1")
	var s1 uint64
	select {
	case s1 = <-gate.held:
	case <-time.After(waitE2E):
		t.Fatal("S1 was not encrypted again")
	}
	res2 := sendAsyncTest(alice, ctx, bob.User(), "S2")
	// A send made after S2 to another conversation (alice's other
	// device) is answered: the writer went past S2.
	if _, err := alice.Send(ctx, alice.User(), []byte("note"), pb.ContentType_CONTENT_TEXT); err != nil {
		t.Fatal(err)
	}
	close(gate.release)
	var sent []Sent
	for _, res := range []<-chan sendOutcome{res1, res2} {
		o := outcome(t, res)
		if o.err != nil {
			t.Fatal(o.err)
		}
		sent = append(sent, o.sent)
	}
	if sent[0].CMID != s1 {
		t.Fatalf("S1 went out as cmid %d, the reseal held was %d", sent[0].CMID, s1)
	}
	mu.Lock()
	r := slices.Clone(retried)
	mu.Unlock()
	if slices.Contains(r, sent[1].CMID) {
		t.Fatalf("S2 (cmid %d) was written while S1 was being encrypted again and refused behind it (retried: %v)", sent[1].CMID, r)
	}
	for _, c := range []*testClient{bob, blaptop, btablet} {
		g := collect(t, c, 2)
		if g[0].text != "S1" || g[1].text != "S2" {
			t.Fatalf("%d/%d got %q then %q, want S1 then S2", c.User(), c.Device(), g[0].text, g[1].text)
		}
	}
}
