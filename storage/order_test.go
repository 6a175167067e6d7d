package storage_test

import (
	"bytes"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/storage"
)

// bodies returns the bodies of msgs, in order.
func bodies(msgs []codec.Message) []string {
	var out []string
	for _, m := range msgs {
		out = append(out, string(m.Body))
	}
	return out
}

// expectCode fails unless a send answered got (0: SENT) where want was due.
func expectCode(t *testing.T, what string, got, want protocol.Code) {
	t.Helper()
	if got != want {
		t.Fatalf("%s answered %v, want %v (0: SENT)", what, got, want)
	}
}

// TestFenceRefusalKeepsOrder: a send refused by a closed fence holds its
// conversation back: the same connection's next send to that user,
// arriving once the fence has opened again, is refused with the same code
// until the first is retried, so the recipient gets them in the order
// they were sent ([S-8-13]); a group conversation likewise; another
// connection's sends go on.
func TestFenceRefusalKeepsOrder(t *testing.T) {
	n, closed := newFencedNode(t, 2)
	alice := n.register(t, n.phoneOn(t, 0, 31))
	bob := n.register(t, n.phoneOn(t, 1, 32))
	aep := n.login(t, alice, 0)
	g := n.createGroup(t, alice, aep, "order", bob.user).Group

	closed.Store(true)
	c, _ := n.sendResult(t, alice, aep, storage.Op{User: bob.user, CMID: 1, Body: []byte("A")})
	expectCode(t, "A while fenced", c, protocol.CodeShardUnavailable)
	c, _ = n.sendResult(t, alice, aep, storage.Op{Group: g, CMID: 2, Body: []byte("GA")})
	expectCode(t, "group A while fenced", c, protocol.CodeShardUnavailable)
	closed.Store(false)

	// B was on its way before A's refusal reached the client.
	c, _ = n.sendResult(t, alice, aep, storage.Op{User: bob.user, CMID: 3, Body: []byte("B")})
	expectCode(t, "B behind the refused A", c, protocol.CodeShardUnavailable)
	c, _ = n.sendResult(t, alice, aep, storage.Op{Group: g, CMID: 4, Body: []byte("GB")})
	expectCode(t, "group B behind the refused group A", c, protocol.CodeShardUnavailable)
	other := newEndpoint(t) // another connection of alice's: no barrier
	c, _ = n.sendResult(t, alice, other, storage.Op{User: bob.user, CMID: 5, Body: []byte("C")})
	expectCode(t, "another connection's send", c, 0)

	for _, op := range []storage.Op{
		{User: bob.user, CMID: 1, Body: []byte("A")},
		{User: bob.user, CMID: 3, Body: []byte("B")},
		{Group: g, CMID: 2, Body: []byte("GA")},
		{Group: g, CMID: 4, Body: []byte("GB")},
	} {
		c, _ := n.sendResult(t, alice, aep, op)
		expectCode(t, "retry of "+string(op.Body), c, 0)
	}
	bep := n.login(t, bob, 0)
	got := bodies(n.drain(t, bob, bep))
	if want := []string{"C", "A", "B", "GA", "GB"}; !slices.Equal(got, want) {
		t.Fatalf("bob got %q, want %q", got, want)
	}
	var held uint64
	for _, s := range n.shards {
		held += s.HeldSends()
	}
	if held != 2 {
		t.Errorf("%d sends counted held back, want 2", held)
	}
}

// TestInboxFullKeepsOrder: A, too big for the recipient's quota, is
// refused INBOX_FULL; B and C, small enough, are refused behind it with
// A's retry_after_ms until A comes again; once the recipient drained its
// queue, the client's retries store A, B, C in that order ([S-8-13],
// [S-8-21]).
func TestInboxFullKeepsOrder(t *testing.T) {
	n := newNode(t, 2, func(c *storage.Config) { c.InboxBytes = 4 << 10 })
	alice := n.register(t, n.phoneOn(t, 0, 33))
	bob := n.register(t, n.phoneOn(t, 1, 34))
	aep := n.login(t, alice, 0)
	fill := bytes.Repeat([]byte("x"), 3<<10)
	big := bytes.Repeat([]byte("A"), 2<<10)
	c, _ := n.sendResult(t, alice, aep, storage.Op{User: bob.user, CMID: 1, Body: fill})
	expectCode(t, "the first 3 KiB", c, 0)
	c, _ = n.sendResult(t, alice, aep, storage.Op{User: bob.user, CMID: 2, Body: big})
	expectCode(t, "A (2 KiB more)", c, protocol.CodeInboxFull)
	for _, cmid := range []uint64{3, 4} {
		c, _ := n.sendResult(t, alice, aep, storage.Op{User: bob.user, CMID: cmid, Body: []byte("small")})
		expectCode(t, "a small send behind A", c, protocol.CodeInboxFull)
	}

	bep := n.login(t, bob, 0)
	if got := n.drain(t, bob, bep); len(got) != 1 {
		t.Fatalf("bob drained %d messages, want 1", len(got))
	}
	n.submit(storage.Op{Kind: storage.OpLogout, User: bob.user, Device: bob.device, Conn: bep.ref})
	for _, op := range []storage.Op{
		{User: bob.user, CMID: 2, Body: big},
		{User: bob.user, CMID: 3, Body: []byte("small")},
		{User: bob.user, CMID: 4, Body: []byte("small")},
	} {
		c, _ := n.sendResult(t, alice, aep, op)
		expectCode(t, "a retry", c, 0)
	}
	bep = n.login(t, bob, 0)
	msgs := n.drain(t, bob, bep)
	if len(msgs) != 3 || !bytes.Equal(msgs[0].Body, big) {
		t.Fatalf("bob got %d messages (first %d bytes), want A first, then the two small ones", len(msgs), len(msgs[0].Body))
	}
}

// TestBarrierLifted: a barrier goes when its connection logs out, when
// its node's connections are gone, and sendorder.TTL after it was
// raised, so a connection that is gone, or a client that never retries,
// leaves nothing behind.
func TestBarrierLifted(t *testing.T) {
	n, closed := newFencedNode(t, 1)
	alice := n.register(t, n.phoneOn(t, 0, 35))
	bob := n.register(t, n.phoneOn(t, 0, 36))
	cmid := uint64(0)
	raise := func(aep *endpoint) {
		t.Helper()
		cmid++
		closed.Store(true)
		c, _ := n.sendResult(t, alice, aep, storage.Op{User: bob.user, CMID: cmid, Body: []byte("refused")})
		expectCode(t, "a send while fenced", c, protocol.CodeShardUnavailable)
		closed.Store(false)
		cmid++
		c, _ = n.sendResult(t, alice, aep, storage.Op{User: bob.user, CMID: cmid, Body: []byte("held")})
		expectCode(t, "a send behind it", c, protocol.CodeShardUnavailable)
	}
	passes := func(what string, aep *endpoint) {
		t.Helper()
		cmid++
		c, _ := n.sendResult(t, alice, aep, storage.Op{User: bob.user, CMID: cmid, Body: []byte("after")})
		expectCode(t, what, c, 0)
	}

	aep := n.login(t, alice, 0)
	raise(aep)
	n.submit(storage.Op{Kind: storage.OpLogout, User: alice.user, Device: alice.device, Conn: aep.ref})
	passes("a send after the connection's logout", aep)

	raise(aep)
	n.submit(storage.Op{Kind: storage.OpConnGone, Conn: storage.ConnRef{Node: aep.ref.Node, Gen: aep.ref.Gen}})
	passes("a send after its node's connections were gone", aep)

	aep = n.login(t, alice, 0)
	raise(aep)
	n.clock.Advance(5 * time.Minute)
	passes("a send 5 minutes after the refusal", aep)
}

// TestBarrierLiftedAcrossShards is TestBarrierLifted across shards and
// devices: alice (shard 0) and bob (shard 1) with two devices each, each
// conversation held back on the other's shard. A 1:1 SEND is applied,
// and its barrier kept, on the recipient's shard; a connection's logout
// goes to its user's shard. So a barrier holds back only its connection
// (the sender's other device goes on; so does the same device on its next
// connection after a logout), and it goes when its node's connections are
// gone (the node tells every shard) and sendorder.TTL after it was
// raised, wherever it is. Every device then gets every stored message of
// each conversation, copies of its user's own sends included ([S-8-17]),
// in the order they were sent, and none of those refused.
func TestBarrierLiftedAcrossShards(t *testing.T) {
	var closed [2]atomic.Bool // by shard
	n := newNode(t, 2, func(c *storage.Config) {
		id := c.ID
		c.Fence = func() bool { return !closed[id].Load() }
	})
	type party struct {
		dev  [2]account
		ep   [2]*endpoint
		cmid [2]uint64 // the last cmid of each device, over its connections
	}
	var users [2]*party
	for u, tag := range []int{37, 38} {
		primary := n.register(t, n.phoneOn(t, u, tag))
		n.onShard(t, primary, u)
		p := &party{dev: [2]account{primary}}
		p.ep[0] = n.login(t, primary, 0)
		p.dev[1] = n.link(t, primary, p.ep[0], "companion")
		p.ep[1] = n.login(t, p.dev[1], 0)
		users[u] = p
	}
	// want[u][d][from] is what device d of user u must get from user from.
	var want [2][2][2][]string
	send := func(u, d int, ep *endpoint, what string, code protocol.Code) {
		t.Helper()
		p, peer := users[u], users[1-u]
		p.cmid[d]++
		body := fmt.Sprintf("%d/%d #%d", u, d, p.cmid[d])
		c, _ := n.sendResult(t, p.dev[d], ep, storage.Op{User: peer.dev[0].user, CMID: p.cmid[d], Body: []byte(body)})
		expectCode(t, fmt.Sprintf("%s (device %d/%d)", what, u, d), c, code)
		if c == 0 {
			want[1-u][0][u] = append(want[1-u][0][u], body)
			want[1-u][1][u] = append(want[1-u][1][u], body)
			want[u][0][u] = append(want[u][0][u], body) // the copies, the
			want[u][1][u] = append(want[u][1][u], body) // sender's included
		}
	}
	// raise holds device 0 of each user back on the other's shard.
	raise := func() {
		t.Helper()
		for u := range users {
			ep := users[u].ep[0]
			closed[1-u].Store(true)
			send(u, 0, ep, "a send while the recipient's shard is fenced", protocol.CodeShardUnavailable)
			closed[1-u].Store(false)
			send(u, 0, ep, "a send behind it", protocol.CodeShardUnavailable)
			send(u, 1, users[u].ep[1], "the other device's send", 0)
		}
	}
	passes := func(what string) {
		t.Helper()
		for u := range users {
			send(u, 0, users[u].ep[0], what, 0)
		}
	}

	raise()
	for _, p := range users {
		n.submit(storage.Op{Kind: storage.OpLogout, User: p.dev[0].user, Device: p.dev[0].device, CMID: p.cmid[0], Conn: p.ep[0].ref})
		p.ep[0] = n.login(t, p.dev[0], 0)
	}
	passes("a send on the device's next connection")

	for _, p := range users {
		p.ep[0] = newEndpoint(t) // no session: the ConnGone below leaves it open
	}
	raise()
	for _, s := range n.shards { // as the node does: every shard hears it
		if err := s.Submit(storage.Op{Kind: storage.OpConnGone, Conn: storage.ConnRef{Node: users[0].ep[0].ref.Node, Gen: users[0].ep[0].ref.Gen}}); err != nil {
			t.Fatal(err)
		}
	}
	passes("a send after its node's connections were gone")

	for _, p := range users { // the connections gone were closed
		for d := range p.dev {
			p.ep[d] = n.login(t, p.dev[d], 0)
		}
	}
	raise()
	n.clock.Advance(5 * time.Minute)
	passes("a send 5 minutes after the refusal")

	// Copies cross back to the sender's shard after SENT: wait for as
	// many messages as are due, in the order they come.
	for u, p := range users {
		for d := range p.dev {
			ep := n.login(t, p.dev[d], 0)
			var got [2][]string
			for range len(want[u][d][0]) + len(want[u][d][1]) {
				m := ep.take(t, protocol.KindMessage).(codec.Message)
				n.ack(p.dev[d], ep, m.Seq)
				from := 0
				if m.From == users[1].dev[0].user {
					from = 1
				}
				got[from] = append(got[from], string(m.Body))
			}
			for from := range got {
				if !slices.Equal(got[from], want[u][d][from]) {
					t.Errorf("device %d/%d got from user %d %q, want %q", u, d, from, got[from], want[u][d][from])
				}
			}
		}
	}
	var held uint64
	for _, s := range n.shards {
		held += s.HeldSends()
	}
	if held != 6 {
		t.Errorf("%d sends counted held back, want 6", held)
	}
}
