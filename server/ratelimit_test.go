package server_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/internal/node"
	"github.com/parley-im/parley/internal/nodetest"
	"github.com/parley-im/parley/internal/wiretest"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
	"github.com/parley-im/parley/server"
)

// Tests of the rate limits of ratelimit.go (docs/security.md). Buckets
// refill at a negligible rate unless the test moves the server's clock,
// so what is refused is exactly what went over a burst.

// never is a refill rate no test run waits out.
const never = 1e-9

// answerTo reads c's frames until the answer to request rid (cmid 0) or
// to the SEND cmid, skipping everything else, and returns the frame and,
// for an ERROR, the error.
func answerTo(t testing.TB, c *wiretest.Client, rid uint32, cmid uint64) (codec.Frame, *pb.Error) {
	t.Helper()
	for {
		f, err := c.Next(wiretest.Timeout)
		if err != nil {
			t.Fatalf("waiting for the answer to rid %d cmid %d: %v", rid, cmid, err)
		}
		switch f.Kind {
		case protocol.KindError:
			var e pb.Error
			if err := codec.ParseProto(f.Body, &e); err != nil {
				t.Fatal(err)
			}
			if e.Rid == rid && e.Cmid == cmid {
				return f, &e
			}
		case protocol.KindSent:
			if cmid != 0 && firstField(t, f.Body) == cmid {
				return f, nil
			}
		case protocol.KindCodeSent, protocol.KindLinkCode:
			if rid != 0 && firstField(t, f.Body) == uint64(rid) {
				return f, nil
			}
		}
	}
}

// firstField returns the varint of field 1 of a body (rid or cmid).
func firstField(t testing.TB, b []byte) uint64 {
	t.Helper()
	var m pb.Sent // field 1 is a varint in every frame answerTo reads
	if err := codec.ParseProto(b, &m); err != nil {
		t.Fatal(err)
	}
	return m.Cmid
}

// directMessages reads c's entries until a 1:1 message from from with
// body last, and returns the bodies of the 1:1 messages from from, in
// order.
func directMessages(t testing.TB, c *wiretest.Client, from uint64, last string) []string {
	t.Helper()
	var got []string
	for {
		f, err := c.Next(wiretest.Timeout)
		if err != nil {
			t.Fatalf("waiting for %q: %v (got %q)", last, err, got)
		}
		if f.Kind != protocol.KindMessage {
			continue
		}
		m, err := codec.ParseMessage(f.Body)
		if err != nil {
			t.Fatal(err)
		}
		if m.From != from || m.Group != 0 {
			continue
		}
		if got = append(got, string(m.Body)); string(m.Body) == last {
			return got
		}
	}
}

// expectLimited checks that e is RATE_LIMITED with a retry_after_ms in
// [least, most].
func expectLimited(t testing.TB, what string, e *pb.Error, least, most uint32) {
	t.Helper()
	switch {
	case e == nil:
		t.Fatalf("%s: accepted, want RATE_LIMITED", what)
	case e.Code != protocol.CodeRateLimited:
		t.Fatalf("%s: %v, want RATE_LIMITED", what, e.Code)
	case e.RetryAfterMs < least || e.RetryAfterMs > most:
		t.Fatalf("%s: retry_after_ms %d, want %d to %d", what, e.RetryAfterMs, least, most)
	}
}

// expectRefusals checks the server's refusal counts by limit.
func expectRefusals(t testing.TB, srv *server.Server, want map[server.Limit]uint64) {
	t.Helper()
	st := srv.Stats()
	for l := range server.NumLimits {
		if got := st.RateLimited[l].Load(); got != want[l] {
			t.Errorf("refusals by %v: %d, want %d", l, got, want[l])
		}
	}
}

// stillTalking checks that two ordinary accounts, registered before an
// attack, still talk.
func stillTalking(t testing.TB, n *nodetest.Node, alice, bob wiretest.User) {
	t.Helper()
	a, _ := n.Login(t, alice, 0)
	b, _ := n.Login(t, bob, 0)
	id := a.SendText(bob.ID, 1, "still here")
	if m := b.Message(); m.ID != id {
		t.Fatalf("bob got %+v, want message %d", m, id)
	}
}

// TestCodeLimits: issue 9 saw one unauthenticated connection obtain
// 20,000 codes, one SMS each, in 0.48 s, with limits per phone only. Codes
// that cost an SMS are now limited per connection, per client address, per
// number prefix and for the node, in that order; a refused request sends
// nothing; codes for the reserved test numbers stay free; a bystander
// keeps talking ([S-9-17]).
func TestCodeLimits(t *testing.T) {
	clock := &nodetest.Clock{}
	n := nodetest.Start(t, func(c *node.Config) {
		c.FreeCodes = false
		c.Storage.TestPrefix, c.Storage.TestCode = "+1999", "424242"
		c.Server = server.Config{LimitLoopback: true, Now: clock.Now,
			CodesPerConn:   server.Budget{PerSecond: 1.0 / 60, Burst: 2},
			CodesPerIP:     server.Budget{PerSecond: never, Burst: 3},
			CodesPerPrefix: server.Budget{PerSecond: never, Burst: 2},
			CodesPerNode:   server.Budget{PerSecond: never, Burst: 10},
		}
	})
	// The bystanders' codes count too: 127.0.0.1 2, prefix 15550 2, node 2.
	alice, bob := n.RegisterOn(t, 0), n.RegisterOn(t, 1)
	ask := func(c *wiretest.Client, phone string) *pb.Error {
		t.Helper()
		rid := c.NextRID()
		c.Send(protocol.KindRequestCode, &pb.RequestCode{Rid: rid, Phone: phone, Version: protocol.Version})
		_, e := answerTo(t, c, rid, 0)
		if e == nil && n.Codes.Get(phone) == "" && phone[:5] != "+1999" {
			t.Fatalf("CODE_SENT for %s, but no code went to the sender", phone)
		}
		if e != nil && n.Codes.Get(phone) != "" {
			t.Fatalf("%s refused %v, but a code went to the sender", phone, e.Code)
		}
		return e
	}
	ok := func(c *wiretest.Client, phone string) {
		t.Helper()
		if e := ask(c, phone); e != nil {
			t.Fatalf("code for %s: %v, want CODE_SENT", phone, e.Code)
		}
	}

	// Per connection: two at once, then one a minute.
	c2 := n.DialFrom(t, "127.0.0.2")
	ok(c2, "+17771000001")
	ok(c2, "+17772000001")
	e := ask(c2, "+17773000001")
	expectLimited(t, "a third code on one connection", e, 59_000, 60_000)
	clock.Advance(time.Duration(e.RetryAfterMs) * time.Millisecond)
	ok(c2, "+17773000001") // 127.0.0.2 has had 3

	// Per address: a new connection from 127.0.0.2 is refused; another
	// address is not.
	expectLimited(t, "a fourth code from one address", ask(n.DialFrom(t, "127.0.0.2"), "+17774000001"), 1, 1<<32-1)
	ok(n.DialFrom(t, "127.0.0.3"), "+17774000001") // node: 6

	// Per prefix: two numbers of +17775… from one address, a third from
	// another is refused; another prefix from there is not.
	c4 := n.DialFrom(t, "127.0.0.4")
	ok(c4, "+17775000001")
	ok(c4, "+17775000002")
	c5 := n.DialFrom(t, "127.0.0.5")
	expectLimited(t, "a third code for one prefix", ask(c5, "+17775000003"), 1, 1<<32-1)
	ok(c5, "+17776000001") // node: 9

	// The node: its tenth code goes, the eleventh is refused wherever it
	// comes from.
	c6 := n.DialFrom(t, "127.0.0.6")
	ok(c6, "+17777000001")
	expectLimited(t, "the node's eleventh code", ask(c6, "+17778000001"), 1, 1<<32-1)

	// A reserved test number costs nothing: answered at once, even on a
	// connection, an address, a prefix and a node out of codes.
	ok(c6, "+19990000001")
	ok(c6, "+19990000002")

	expectRefusals(t, n.Server(), map[server.Limit]uint64{
		server.LimitCodesPerConn: 1, server.LimitCodesPerIP: 1, server.LimitCodesPerPrefix: 1, server.LimitCodesPerNode: 1})
	stillTalking(t, n, alice, bob)
}

// TestLinkRequestsPerIP: besides three per connection, LINK_REQUESTs are
// limited per client address, so opening connections does not buy more
// pending link codes ([S-9-12]); another address, and a bystander's
// conversation, are unaffected.
func TestLinkRequestsPerIP(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) {
		c.Server = server.Config{LimitLoopback: true, LinksPerIP: server.Budget{PerSecond: never, Burst: 4}}
	})
	alice, bob := n.RegisterOn(t, 0), n.RegisterOn(t, 1)
	ask := func(c *wiretest.Client) *pb.Error {
		t.Helper()
		rid := c.NextRID()
		c.Send(protocol.KindLinkRequest, &pb.LinkRequest{Rid: rid, Version: protocol.Version, DeviceName: "x"})
		_, e := answerTo(t, c, rid, 0)
		return e
	}
	first := n.DialFrom(t, "127.0.0.2")
	for i := range 3 {
		if e := ask(first); e != nil {
			t.Fatalf("link request %d: %v", i+1, e.Code)
		}
	}
	expectLimited(t, "a fourth link request on one connection", ask(first), 0, 0)
	second := n.DialFrom(t, "127.0.0.2")
	if e := ask(second); e != nil {
		t.Fatalf("the address's fourth link request: %v", e.Code)
	}
	expectLimited(t, "the address's fifth link request", ask(second), 1, 1<<32-1)
	expectLimited(t, "the address's sixth, on a new connection", ask(n.DialFrom(t, "127.0.0.2")), 1, 1<<32-1)
	if e := ask(n.DialFrom(t, "127.0.0.3")); e != nil {
		t.Fatalf("a link request from another address: %v", e.Code)
	}
	expectRefusals(t, n.Server(), map[server.Limit]uint64{server.LimitLinksPerConn: 1, server.LimitLinksPerIP: 2})
	stillTalking(t, n, alice, bob)
}

// TestSendRateLimit: an account's SENDs are limited per second with a
// burst, 1:1 and group apart, over all its devices and across reconnects
// ([S-8-23]); a refused SEND stores nothing and, retried after
// retry_after_ms with its cmid, is delivered; other accounts are
// unaffected.
func TestSendRateLimit(t *testing.T) {
	clock := nodetest.FrozenClock() // the refill must not depend on how long the machine took
	n := nodetest.Start(t, func(c *node.Config) {
		c.Server = server.Config{Now: clock.Now,
			Sends:      server.Budget{PerSecond: 1, Burst: 5},
			GroupSends: server.Budget{PerSecond: never, Burst: 3},
		}
	})
	alice, bob := n.RegisterOn(t, 0), n.RegisterOn(t, 1)
	a, _ := n.Login(t, alice, 0)
	companion := n.Link(t, a, "laptop")
	cmid := uint64(0)
	send := func(c *wiretest.Client, to, group uint64) (uint64, *pb.Error) {
		t.Helper()
		cmid++
		c.Write(codec.AppendSend(nil, codec.Send{To: to, Group: group, CMID: cmid, Body: []byte(fmt.Sprint("m", cmid))}))
		_, e := answerTo(t, c, 0, cmid)
		return cmid, e
	}
	for i := range 5 {
		if _, e := send(a, bob.ID, 0); e != nil {
			t.Fatalf("1:1 send %d: %v", i+1, e.Code)
		}
	}
	late, e := send(a, bob.ID, 0)
	expectLimited(t, "the sixth 1:1 send", e, 900, 1000)

	// Group sends have their own budget.
	g := groupCreate(t, a, "g", []uint64{bob.ID}).Group
	for i := range 3 {
		if _, e := send(a, 0, g); e != nil {
			t.Fatalf("group send %d: %v", i+1, e.Code)
		}
	}
	_, e = send(a, 0, g)
	expectLimited(t, "the fourth group send", e, 1, 1<<32-1)

	// The budget belongs to the account: a new connection and the
	// account's companion find it spent.
	a.Conn.Close()
	a, _ = n.Login(t, alice, 0)
	_, e = send(a, bob.ID, 0)
	expectLimited(t, "after reconnecting", e, 1, 1000)
	c, _ := n.Login(t, companion, 0)
	_, e = send(c, bob.ID, 0)
	expectLimited(t, "from the companion", e, 1, 1000)

	// Another account's sends go on.
	b, _ := n.Login(t, bob, 0)
	b.Write(codec.AppendSend(nil, codec.Send{To: alice.ID, CMID: 1, Body: []byte("bob is fine")}))
	if _, e := answerTo(t, b, 0, 1); e != nil {
		t.Fatalf("bob's send: %v", e.Code)
	}
	if got := directMessages(t, a, bob.ID, "bob is fine"); len(got) != 1 {
		t.Fatalf("alice got %q from bob", got)
	}

	// Once the wait has passed, the refused send is accepted under its
	// cmid; bob gets the five sends accepted at first and then it, none
	// of the refused ones.
	clock.Advance(time.Second)
	a.Write(codec.AppendSend(nil, codec.Send{To: bob.ID, CMID: late, Body: []byte(fmt.Sprint("m", late))}))
	if _, e := answerTo(t, a, 0, late); e != nil {
		t.Fatalf("the refused send, retried after the wait: %v", e.Code)
	}
	b, _ = n.Login(t, bob, 0) // everything from the start
	got := directMessages(t, b, alice.ID, fmt.Sprint("m", late))
	if want := []string{"m1", "m2", "m3", "m4", "m5", "m6"}; !slices.Equal(got, want) {
		t.Fatalf("bob got %q from alice, want %q", got, want)
	}
	expectRefusals(t, n.Server(), map[server.Limit]uint64{server.LimitSends: 3, server.LimitGroupSends: 1})
}

// TestRefusedSendKeepsItsPlace is issue 11's reorder on one node: alice
// pipelines A, B, C to bob; A does not fit bob's queue (INBOX_FULL), B and
// C would. They are refused behind A with its code and delay, so when the
// client retries A, B, C once bob has drained his queue, bob gets them in
// the order alice sent them ([S-8-13], [S-8-21]).
func TestRefusedSendKeepsItsPlace(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) { c.Storage.InboxBytes = 4 << 10 })
	alice, bob := n.RegisterOn(t, 0), n.RegisterOn(t, 1)
	a, _ := n.Login(t, alice, 0)
	fill := strings.Repeat("f", 3<<10)
	a.Write(codec.AppendSend(nil, codec.Send{To: bob.ID, CMID: 1, Body: []byte(fill)}))
	if _, e := answerTo(t, a, 0, 1); e != nil {
		t.Fatalf("the first 3 KiB: %v", e.Code)
	}
	sends := []codec.Send{
		{To: bob.ID, CMID: 2, Body: []byte("A" + strings.Repeat("a", 2<<10))},
		{To: bob.ID, CMID: 3, Body: []byte("B")},
		{To: bob.ID, CMID: 4, Body: []byte("C")},
	}
	var pipelined []byte
	for _, s := range sends {
		pipelined = codec.AppendSend(pipelined, s)
	}
	a.Write(pipelined)
	var first uint32
	for _, s := range sends {
		_, e := answerTo(t, a, 0, s.CMID)
		switch {
		case e == nil:
			t.Fatalf("cmid %d accepted; want INBOX_FULL behind the refused cmid 2", s.CMID)
		case e.Code != protocol.CodeInboxFull:
			t.Fatalf("cmid %d answered %v, want INBOX_FULL", s.CMID, e.Code)
		case s.CMID == 2:
			first = e.RetryAfterMs
		case e.RetryAfterMs != first:
			t.Fatalf("cmid %d: retry_after_ms %d, want the first refusal's %d", s.CMID, e.RetryAfterMs, first)
		}
	}

	b, _ := n.Login(t, bob, 0)
	if m := b.Message(); string(m.Body) != fill {
		t.Fatalf("bob's first message: %d bytes", len(m.Body))
	} else {
		b.Ack(m.Seq)
		a.Receipt() // the delivered receipt: bob's ack was applied
	}
	for _, s := range sends {
		a.Write(codec.AppendSend(nil, s))
		if _, e := answerTo(t, a, 0, s.CMID); e != nil {
			t.Fatalf("retry of cmid %d: %v", s.CMID, e.Code)
		}
	}
	got := directMessages(t, b, alice.ID, "C")
	for i := range got {
		got[i] = got[i][:1]
	}
	if want := []string{"A", "B", "C"}; !slices.Equal(got, want) {
		t.Fatalf("bob got %q from alice, want %q", got, want)
	}
}
