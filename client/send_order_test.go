package client

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
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
	_, c, fc, ctx, ab := twoSends(t)
	resA, a, resB, b := ab.resA, ab.a, ab.resB, ab.b
	fc.write(codec.AppendError(nil, protocol.CodeShardUnavailable, 0, a.CMID, "", 300))
	fc.write(codec.AppendError(nil, protocol.CodeShardUnavailable, 0, b.CMID, "", 10))
	// Both refusals are applied before C is made.
	waitWaiting(t, c, 2)
	resC := sendAsyncTest(c, ctx, 9, "C")
	resD := sendAsyncTest(c, ctx, 10, "another conversation")
	if d := expectSend(t, fc); d.To != 10 {
		t.Fatalf("first send after the refusals: to %d cmid %d %q, want the other conversation's", d.To, d.CMID, d.Body)
	}
	if got, want := answerSends(t, fc, 3), "A B C"; got != want {
		t.Fatalf("resent %q, want %q", got, want)
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
	srv, c, fc, _, ab := twoSends(t)
	resA, a, resB := ab.resA, ab.a, ab.resB
	fc.write(codec.AppendError(nil, protocol.CodeOverloaded, 0, a.CMID, "", 200))
	waitWaiting(t, c, 1)
	_ = fc.c.Close()

	fc = srv.accept(t)
	fc.login(16, 30, 0)
	if got, want := answerSends(t, fc, 2), "A B"; got != want {
		t.Fatalf("sent %q on the new connection, want %q", got, want)
	}
	for _, res := range []<-chan sendOutcome{resA, resB} {
		if o := outcome(t, res); o.err != nil {
			t.Fatal(o.err)
		}
	}
}

// sendsAB are sends A and B to user 9, both written.
type sendsAB struct {
	resA, resB <-chan sendOutcome
	a, b       codec.Send
}

// twoSends starts a client on a fake server, logs it in and has it write
// A then B to user 9.
func twoSends(t *testing.T) (*fakeServer, *testClient, *fakeConn, context.Context, sendsAB) {
	t.Helper()
	srv := newFakeServer(t, false)
	c := startClient(t, testConfig(srv), nil)
	fc := srv.accept(t)
	fc.login(16, 30, 0)
	ctx := context.Background()
	var ab sendsAB
	ab.resA = sendAsyncTest(c, ctx, 9, "A")
	ab.a = expectSend(t, fc)
	ab.resB = sendAsyncTest(c, ctx, 9, "B")
	ab.b = expectSend(t, fc)
	return srv, c, fc, ctx, ab
}

// answerSends reads n sends from fc, answers each SENT, and returns their
// bodies in the order written, space-separated.
func answerSends(t *testing.T, fc *fakeConn, n int) string {
	t.Helper()
	var order []string
	for range n {
		s := expectSend(t, fc)
		order = append(order, string(s.Body))
		fc.write(codec.AppendSent(nil, s.CMID, msgID(5000, s.CMID)))
	}
	return strings.Join(order, " ")
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

// resealStore is a key store that, once armed, passes each store of a
// send encrypted a second time (the reseal after DEVICES_CHANGED) to
// onReseal, which may hold it up or fail it.
type resealStore struct {
	*MemoryKeyStore
	onReseal func(cmid uint64) error
	mu       sync.Mutex
	armed    bool            // guarded by mu
	sealed   map[uint64]bool // guarded by mu: cmids stored with envelopes
}

func newResealStore(onReseal func(cmid uint64) error) *resealStore {
	return &resealStore{MemoryKeyStore: NewMemoryKeyStore(), onReseal: onReseal, sealed: map[uint64]bool{}}
}

func (g *resealStore) arm() {
	g.mu.Lock()
	g.armed = true
	g.mu.Unlock()
}

func (g *resealStore) AddOutgoing(o Outgoing) error {
	if len(o.Envelopes) > 0 {
		g.mu.Lock()
		again := g.sealed[o.CMID] && g.armed
		g.sealed[o.CMID] = true
		g.mu.Unlock()
		if again {
			if err := g.onReseal(o.CMID); err != nil {
				return err
			}
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
	held, release := make(chan uint64, 1), make(chan struct{}) // the cmid of each reseal held up
	gate := newResealStore(func(cmid uint64) error {
		held <- cmid
		<-release
		return nil
	})
	rs := startResealCase(t, gate)
	alice, bob, blaptop, btablet, ctx := rs.alice, rs.bob, rs.blaptop, rs.btablet, rs.ctx
	gate.arm()

	res1 := sendAsyncTest(alice, ctx, bob.User(), "S1")
	var s1 uint64
	select {
	case s1 = <-held:
	case <-time.After(waitE2E):
		t.Fatal("S1 was not encrypted again")
	}
	res2 := sendAsyncTest(alice, ctx, bob.User(), "S2")
	// A send made after S2 to another conversation (alice's other
	// device) is answered: the writer went past S2.
	if _, err := alice.Send(ctx, alice.User(), []byte("note"), pb.ContentType_CONTENT_TEXT); err != nil {
		t.Fatal(err)
	}
	close(release)
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
	if !rs.resealed(s1) {
		t.Errorf("OnRetry not told of S1 (cmid %d) encrypted again after DEVICES_CHANGED (retried: %v)", s1, rs.retried())
	}
	if r := rs.retried(); slices.Contains(r, sent[1].CMID) {
		t.Fatalf("S2 (cmid %d) was written while S1 was being encrypted again and refused behind it (retried: %v)", sent[1].CMID, r)
	}
	for _, c := range []*testClient{bob, blaptop, btablet} {
		g := collect(t, c, 2)
		if g[0].text != "S1" || g[1].text != "S2" {
			t.Fatalf("%d/%d got %q then %q, want S1 then S2", c.User(), c.Device(), g[0].text, g[1].text)
		}
	}
}

// resealCase is alice (on shard 0, a second device beside her, her client
// on the store given) who has sent m0 to bob (shard 1), whose two devices
// got it, and
// a third device of bob that alice does not know yet: her next send to bob
// is refused DEVICES_CHANGED.
type resealCase struct {
	alice, bob, blaptop, btablet *testClient
	ctx                          context.Context
	mu                           sync.Mutex
	retries                      []Retry // what OnRetry was told of
}

func startResealCase(t *testing.T, store Store) *resealCase {
	t.Helper()
	rs := &resealCase{}
	n := startSecureNode(t)
	ac, bc := n.account(0, 1), n.account(1, 1)
	cfg := n.cfg
	cfg.OnRetry = func(r Retry) {
		rs.mu.Lock()
		rs.retries = append(rs.retries, r)
		rs.mu.Unlock()
	}
	rs.alice = startClientAs(t, cfg, ac[0], store)
	until(t, rs.alice, func(ev Event) bool { _, ok := ev.(Synced); return ok })
	n.device(ac[1], nil)
	rs.bob, rs.blaptop = n.device(bc[0], nil), n.device(bc[1], nil)
	ctx, cancel := context.WithTimeout(context.Background(), waitE2E)
	t.Cleanup(cancel)
	rs.ctx = ctx
	if _, err := rs.alice.Send(ctx, rs.bob.User(), []byte("m0"), pb.ContentType_CONTENT_TEXT); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*testClient{rs.bob, rs.blaptop} {
		collect(t, c, 1)
	}
	rs.btablet = n.device(n.link(rs.bob, "tablet"), nil) // alice does not know it
	return rs
}

// retried returns the cmids OnRetry was told of so far.
func (rs *resealCase) retried() []uint64 {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	var cmids []uint64
	for _, r := range rs.retries {
		cmids = append(cmids, r.CMID)
	}
	return cmids
}

// resealed reports whether OnRetry was told that cmid is encrypted again
// after DEVICES_CHANGED.
func (rs *resealCase) resealed(cmid uint64) bool {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return slices.ContainsFunc(rs.retries, func(r Retry) bool {
		return r.CMID == cmid && r.Request == 0 && CodeOf(r.Err) == protocol.CodeDevicesChanged && r.In == 0
	})
}

// TestResealGivenUpReconnects: S1 to bob is refused DEVICES_CHANGED and
// its re-encryption fails, so the client gives it up; the server still
// holds bob's conversation back on that connection behind S1 ([S-8-13]).
// The client ends the connection, and S2 to bob goes out on the next one,
// never refused behind S1, and reaches bob's devices. Two users on two
// shards, bob with three devices, through a real node.
func TestResealGivenUpReconnects(t *testing.T) {
	var failed atomic.Bool
	gate := newResealStore(func(uint64) error { // the first reseal's store fails
		if failed.Swap(true) {
			return nil
		}
		return errors.New("test: the store refuses the re-encrypted send")
	})
	rs := startResealCase(t, gate)
	alice, bob, blaptop, btablet, ctx := rs.alice, rs.bob, rs.blaptop, rs.btablet, rs.ctx
	gate.arm()

	if _, err := alice.Send(ctx, bob.User(), []byte("S1"), pb.ContentType_CONTENT_TEXT); err == nil {
		t.Fatal("S1 was sent; want it given up after its re-encryption failed")
	}
	s2, err := alice.Send(ctx, bob.User(), []byte("S2"), pb.ContentType_CONTENT_TEXT)
	if err != nil {
		t.Fatalf("S2: %v (held back behind the given-up S1?)", err)
	}
	if r := rs.retried(); slices.Contains(r, s2.CMID) {
		t.Fatalf("S2 (cmid %d) was refused behind the given-up S1 (retried: %v)", s2.CMID, r)
	}
	for _, c := range []*testClient{bob, blaptop, btablet} {
		if g := collect(t, c, 1); g[0].text != "S2" {
			t.Fatalf("%d/%d got %q, want S2", c.User(), c.Device(), g[0].text)
		}
	}
}
