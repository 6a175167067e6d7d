package link

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/internal/faultproxy"
)

// TestMessagesInOrder: messages from each sender arrive once each, in the
// order sent, both ways at once, across many batches, compressed and not.
func TestMessagesInOrder(t *testing.T) {
	a := startNode(t, creds(t, testCA, 1), 1, "127.0.0.1:0", func(c *Config) { c.CompressMin = 1024 })
	b := startNode(t, creds(t, testCA, 2), 1, "127.0.0.1:0", nil)
	if err := a.SetPeer(2, b.addr); err != nil {
		t.Fatal(err)
	}
	if err := b.SetPeer(1, a.addr); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var toB, toA []string
	for i := range 10000 {
		// Mostly small, some large and compressible, some large random.
		m := fmt.Sprintf("m-%06d-", i)
		switch rng.IntN(20) {
		case 0:
			m += strings.Repeat("group member list ", 100)
		case 1:
			r := make([]byte, 2000)
			for j := range r {
				r[j] = byte(rng.IntN(256))
			}
			m += string(r)
		}
		if i%2 == 0 {
			toB = append(toB, m)
		} else {
			toA = append(toA, m)
		}
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); sendAll(t, a, 2, toB) }()
	go func() { defer wg.Done(); sendAll(t, b, 1, toA) }()
	wg.Wait()
	b.rec.wait(t, "all messages at b", func() bool { return b.rec.countFrom(1) >= len(toB) })
	a.rec.wait(t, "all messages at a", func() bool { return a.rec.countFrom(2) >= len(toA) })
	sameSeq(t, bodies(b.rec.from(1)), toB)
	sameSeq(t, bodies(a.rec.from(2)), toA)
	// Everything is confirmed in the end: the queues empty.
	a.rec.wait(t, "a's queue to empty", func() bool { return a.status(2).Queued == 0 })
	// a compresses (a twentieth of its messages are very compressible).
	raw := 0
	for _, m := range toB {
		raw += len(m)
	}
	if out := a.status(2).BytesOut; out >= uint64(raw) {
		t.Fatalf("a wrote %d bytes for %d bytes of messages: not compressed", out, raw)
	}
}

func (n *node) status(peer uint32) PeerStatus {
	for _, s := range n.Peers() {
		if s.ID == peer {
			return s
		}
	}
	return PeerStatus{}
}

// TestForeignCARefused: a node whose certificate another CA signed can
// neither dial into the cluster nor be dialed by it.
func TestForeignCARefused(t *testing.T) {
	otherCA, err := NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	a := startNode(t, creds(t, testCA, 1), 1, "127.0.0.1:0", nil)
	x := startNode(t, creds(t, otherCA, 2), 1, "127.0.0.1:0", nil)

	// a dials x: x's server certificate does not verify.
	if err := dialOnce(a, 2, x.addr); err == nil || !strings.Contains(err.Error(), "unknown authority") {
		t.Fatalf("a dialing a foreign node: %v, want an unknown-authority error", err)
	}
	// x dials a: a refuses x's client certificate.
	if err := dialOnce(x, 1, a.addr); err == nil {
		t.Fatal("a accepted a node of another CA")
	}
	// The same, with the foreign node not checking a's certificate: a
	// still refuses it.
	if w, err := rawHello(t, a.addr, x.cred, "", hello{node: 2, gen: 1, target: 1}); err == nil {
		t.Fatalf("a welcomed a node of another CA: %+v", w)
	}
	if st := a.status(2); st.Gen != 0 || st.Received != 0 {
		t.Fatalf("a holds state for the foreign node: %+v", st)
	}
}

// dialOnce makes one attempt of n's dialer to reach node peer at addr,
// without starting the dialer goroutine.
func dialOnce(n *node, peer uint32, addr string) error {
	p, err := n.peer(peer)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.addr = addr
	p.mu.Unlock()
	_, err = p.dial(addr)
	return err
}

// TestNodeIDMismatch: the node id in the certificate must be the one the
// dialer meant to reach and the one the hello names.
func TestNodeIDMismatch(t *testing.T) {
	a := startNode(t, creds(t, testCA, 1), 1, "127.0.0.1:0", nil)
	c3 := startNode(t, creds(t, testCA, 3), 1, "127.0.0.1:0", nil)

	// a believes node 2 listens at c3's address: c3's certificate says 3.
	if err := dialOnce(a, 2, c3.addr); err == nil || !strings.Contains(err.Error(), NodeName(2)) {
		t.Fatalf("a dialing node 3 as node 2: %v, want a certificate name error", err)
	}

	// A holder of node 3's certificate claims to be node 2 in its hello.
	cases := []struct {
		name string
		h    hello
	}{
		{"hello names another node", hello{node: 2, gen: 1, target: 1}},
		{"hello meant for another node", hello{node: 3, gen: 1, target: 4}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if w, err := rawHello(t, a.addr, c3.cred, NodeName(1), tc.h); err == nil {
				t.Fatalf("a answered a forged hello with %+v", w)
			}
		})
	}
	if st := a.status(2); st.Gen != 0 {
		t.Fatalf("a took the forged hello: %+v", st)
	}
	if st := a.status(3); st.Gen != 0 {
		t.Fatalf("a took the misdirected hello: %+v", st)
	}
}

// rawHello connects to addr as a holder of cred (verifying the server as
// serverName; "" skips verification), sends h, and returns the Welcome, or
// an error if the connection closes instead.
func rawHello(t *testing.T, addr string, cred *Credentials, serverName string, h hello) (hello, error) {
	t.Helper()
	conn, err := rawDial(addr, cred, serverName)
	if err != nil {
		return hello{}, err
	}
	defer conn.Close()
	return sendHello(t, conn, h)
}

func rawDial(addr string, cred *Credentials, serverName string) (*tls.Conn, error) {
	return tls.Dial("tcp", addr, &tls.Config{
		MinVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{cred.Cert},
		RootCAs:            cred.CA,
		ServerName:         serverName,
		InsecureSkipVerify: serverName == "",
	})
}

// sendHello sends h on conn and reads the Welcome.
func sendHello(t *testing.T, conn *tls.Conn, h hello) (hello, error) {
	t.Helper()
	if _, err := conn.Write(appendHello(nil, kindHello, h)); err != nil {
		return hello{}, err
	}
	_ = conn.SetReadDeadline(time.Now().Add(waitLimit))
	f, err := codec.NewReader(conn, maxFrame, nil).ReadFrame()
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("neither a welcome nor a close")
	}
	if err != nil {
		return hello{}, err
	}
	if f.Kind != kindWelcome {
		t.Fatalf("kind %d instead of a welcome", f.Kind)
	}
	return parseHello(f.Body)
}

// TestDuplicateBatchDeliveredOnce: a batch repeating sequences already
// delivered (a dialer resending more than needed) delivers only what is
// new.
func TestDuplicateBatchDeliveredOnce(t *testing.T) {
	a := startNode(t, creds(t, testCA, 1), 1, "127.0.0.1:0", nil)
	conn, err := rawDial(a.addr, creds(t, testCA, 2), NodeName(1))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := sendHello(t, conn, hello{node: 2, gen: 1, target: 1}); err != nil {
		t.Fatal(err)
	}
	batch := func(first uint64, msgs ...string) []byte {
		body := binary.AppendUvarint(nil, first)
		for _, m := range msgs {
			body = appendRecord(body, 1, []byte(m))
		}
		return codec.AppendFrame(nil, kindBatch, body)
	}
	for _, f := range [][]byte{batch(1, "a"), batch(1, "a", "b"), batch(2, "b", "c")} {
		if _, err := conn.Write(f); err != nil {
			t.Fatal(err)
		}
	}
	a.rec.wait(t, "three messages", func() bool { return a.rec.countFrom(2) >= 3 })
	if _, err := conn.Write(batch(4, "d")); err != nil {
		t.Fatal(err)
	}
	a.rec.wait(t, "the fourth message", func() bool { return a.rec.countFrom(2) >= 4 })
	sameSeq(t, bodies(a.rec.from(2)), []string{"a", "b", "c", "d"})
}

// pair is two nodes, a dialing b through a fault proxy.
type pair struct {
	a, b  *node
	proxy *faultproxy.Proxy
}

func newPair(t *testing.T, editA func(*Config)) *pair {
	t.Helper()
	a := startNode(t, creds(t, testCA, 1), 1, "127.0.0.1:0", editA)
	b := startNode(t, creds(t, testCA, 2), 1, "127.0.0.1:0", nil)
	proxy, err := faultproxy.Listen("127.0.0.1:0", b.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proxy.Close() })
	if err := a.SetPeer(2, proxy.Addr()); err != nil {
		t.Fatal(err)
	}
	a.rec.wait(t, "a's link to b up", func() bool { return a.rec.up[2] })
	return &pair{a: a, b: b, proxy: proxy}
}

// TestPartitionThenHeal defines what a partition does to messages: every
// message Send accepted before or during the partition is delivered after
// it heals, once, in order; none is lost silently. The link notices the
// partition by its heartbeats (the proxy keeps TCP open) and redials.
func TestPartitionThenHeal(t *testing.T) {
	for _, dir := range []faultproxy.Direction{faultproxy.Both, faultproxy.Forward, faultproxy.Backward} {
		t.Run(dir.String(), func(t *testing.T) {
			p := newPair(t, nil)
			before := numbered("before", 0, 100)
			sendAll(t, p.a, 2, before)
			p.b.rec.wait(t, "messages before the partition", func() bool { return p.b.rec.countFrom(1) == len(before) })

			p.proxy.Partition(dir)
			during := numbered("during", 0, 100)
			sendAll(t, p.a, 2, during) // taken: queued, or stalled on the wire
			p.a.rec.wait(t, "a to see the link down", func() bool { return !p.a.rec.up[2] })
			late := numbered("late", 0, 100)
			sendAll(t, p.a, 2, late) // taken while the link is known down
			if st := p.a.status(2); st.Up {
				t.Fatalf("link up during the partition: %+v", st)
			}

			p.proxy.Heal()
			want := append(append(append([]string{}, before...), during...), late...)
			p.b.rec.wait(t, "every message after the heal", func() bool { return p.b.rec.countFrom(1) >= len(want) })
			sameSeq(t, bodies(p.b.rec.from(1)), want)
			p.a.rec.wait(t, "a's queue to empty", func() bool { return p.a.status(2).Queued == 0 })
		})
	}
}

// TestResetsLoseNothing: connections reset while messages flow (loss of
// whatever was in flight) still deliver every message once, in order: the
// link resends from what the peer confirmed.
func TestResetsLoseNothing(t *testing.T) {
	p := newPair(t, nil)
	var want []string
	for round := range 10 {
		msgs := numbered(fmt.Sprintf("r%d", round), 0, 500)
		want = append(want, msgs...)
		sendAll(t, p.a, 2, msgs)
		p.proxy.Reset()
	}
	p.b.rec.wait(t, "every message", func() bool { return p.b.rec.countFrom(1) >= len(want) })
	sameSeq(t, bodies(p.b.rec.from(1)), want)
	p.a.rec.mu.Lock()
	ups := p.a.rec.ups[2]
	p.a.rec.mu.Unlock()
	if ups < 2 {
		t.Fatalf("the link came up %d times: the resets did not cut it", ups)
	}
}

// TestBackpressure: a full queue refuses at once (never blocks), and the
// peer is told of the refused messages by a gap in their place.
func TestBackpressure(t *testing.T) {
	p := newPair(t, func(c *Config) { c.QueueMessages = 10 })
	p.proxy.Partition(faultproxy.Both)
	first := numbered("first", 0, 10)
	sendAll(t, p.a, 2, first)
	done := make(chan error, 1)
	go func() { done <- p.a.Send(2, 1, []byte("refused")) }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrQueueFull) {
			t.Fatalf("send on a full queue: %v, want ErrQueueFull", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("send on a full queue blocked")
	}
	p.proxy.Heal()
	p.b.rec.wait(t, "the queued messages and the gap", func() bool { return p.b.rec.countFrom(1) >= 11 })
	sendAll(t, p.a, 2, []string{"after"})
	p.b.rec.wait(t, "the message after the gap", func() bool { return p.b.rec.countFrom(1) >= 12 })
	sameSeq(t, bodies(p.b.rec.from(1)), append(append([]string{}, first...), "GAP", "after"))
}

// TestSlowReceiverPushesBack: a receiver whose handler does not return
// stops confirming; the sender's queue fills and Send refuses, without
// blocking, until the receiver catches up. Nothing accepted is lost.
func TestSlowReceiverPushesBack(t *testing.T) {
	release := make(chan struct{})
	a := startNode(t, creds(t, testCA, 1), 1, "127.0.0.1:0", func(c *Config) { c.QueueMessages = 50 })
	b := startNode(t, creds(t, testCA, 2), 1, "127.0.0.1:0", func(c *Config) {
		inner := c.OnMessage
		c.OnMessage = func(from uint32, typ uint8, body []byte) {
			<-release
			inner(from, typ, body)
		}
	})
	if err := a.SetPeer(2, b.addr); err != nil {
		t.Fatal(err)
	}
	var sent []string
	refused := false
	for i := 0; i < 1000 && !refused; i++ {
		m := fmt.Sprintf("m-%d", i)
		switch err := a.Send(2, 1, []byte(m)); {
		case err == nil:
			sent = append(sent, m)
		case errors.Is(err, ErrQueueFull):
			refused = true
		default:
			t.Fatal(err)
		}
	}
	if !refused || len(sent) != 50 {
		t.Fatalf("sent %d before a refusal (refused %v), want 50", len(sent), refused)
	}
	close(release)
	b.rec.wait(t, "the accepted messages", func() bool { return b.rec.countFrom(1) >= len(sent) })
	a.rec.wait(t, "a's queue to empty", func() bool { return a.status(2).Queued == 0 })
	// The refusal is a gap before the next message.
	sendAll(t, a, 2, []string{"next"})
	b.rec.wait(t, "the next message", func() bool { return b.rec.countFrom(1) >= len(sent)+2 })
	sameSeq(t, bodies(b.rec.from(1)), append(append([]string{}, sent...), "GAP", "next"))
}

// TestPeerRestart: a peer that comes back with a new boot generation is
// reported once to the user; what was queued for its old generation is
// dropped, and the new generation gets the messages sent after, from the
// start of a new sequence. Both directions notice.
func TestPeerRestart(t *testing.T) {
	a := startNode(t, creds(t, testCA, 1), 1, "127.0.0.1:0", nil)
	bCred := creds(t, testCA, 2)
	b := startNode(t, bCred, 1, "127.0.0.1:0", nil)
	proxy, err := faultproxy.Listen("127.0.0.1:0", b.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	if err := a.SetPeer(2, proxy.Addr()); err != nil {
		t.Fatal(err)
	}
	if err := b.SetPeer(1, a.addr); err != nil {
		t.Fatal(err)
	}
	old := numbered("old", 0, 10)
	sendAll(t, a, 2, old)
	b.rec.wait(t, "the old generation's messages", func() bool { return b.rec.countFrom(1) == 10 })
	sendAll(t, b, 1, []string{"from b1"})
	a.rec.wait(t, "b1's message", func() bool { return a.rec.countFrom(2) == 1 })

	_ = b.Close()
	a.rec.wait(t, "a to see b down", func() bool { return !a.rec.up[2] })
	sendAll(t, a, 2, numbered("queued", 0, 10)) // for generation 1, which is gone

	// b restarts (generation 2) on a new port behind the same proxy address.
	b2 := startNode(t, bCred, 2, "127.0.0.1:0", nil)
	_ = proxy.Close()
	proxy2, err := faultproxy.Listen(proxy.Addr(), b2.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer proxy2.Close()
	if err := b2.SetPeer(1, a.addr); err != nil {
		t.Fatal(err)
	}
	a.rec.wait(t, "a to see b's restart", func() bool { return len(a.rec.restarts) > 0 })
	fresh := numbered("new", 0, 10)
	sendAll(t, a, 2, fresh)
	b2.rec.wait(t, "the new generation's messages", func() bool { return b2.rec.countFrom(1) >= 10 })
	sameSeq(t, bodies(b2.rec.from(1)), fresh)
	sendAll(t, b2, 1, []string{"from b2"})
	a.rec.wait(t, "b2's message", func() bool { return a.rec.countFrom(2) >= 2 })
	sameSeq(t, bodies(a.rec.from(2)), []string{"from b1", "from b2"})
	a.rec.mu.Lock()
	restarts := append([]string{}, a.rec.restarts...)
	a.rec.mu.Unlock()
	if len(restarts) != 1 || restarts[0] != "2 1->2" {
		t.Fatalf("restarts seen by a: %q, want one 2 1->2", restarts)
	}
	if st := a.status(2); st.Sent != 10 || st.Gen != 2 {
		t.Fatalf("a's state for b2: %+v, want a new sequence of 10 to generation 2", st)
	}
}

// TestStaleGenerationRefused: a hello from an older generation than one
// already seen (a connection of a dead incarnation) is refused.
func TestStaleGenerationRefused(t *testing.T) {
	a := startNode(t, creds(t, testCA, 1), 1, "127.0.0.1:0", nil)
	bCred := creds(t, testCA, 2)
	b2 := startNode(t, bCred, 2, "127.0.0.1:0", nil)
	if err := b2.SetPeer(1, a.addr); err != nil {
		t.Fatal(err)
	}
	sendAll(t, b2, 1, []string{"gen2"})
	a.rec.wait(t, "generation 2's message", func() bool { return a.rec.countFrom(2) == 1 })
	if w, err := rawHello(t, a.addr, bCred, NodeName(1), hello{node: 2, gen: 1, target: 1}); err == nil {
		t.Fatalf("a welcomed generation 1 after generation 2: %+v", w)
	}
	if st := a.status(2); st.Gen != 2 {
		t.Fatalf("a's peer state after a stale hello: %+v", st)
	}
}

// TestRemovePeer: RemovePeer drops the queue and Send refuses; a later
// SetPeer resumes the sequence, with a gap where the dropped messages were.
func TestRemovePeer(t *testing.T) {
	p := newPair(t, nil)
	sendAll(t, p.a, 2, []string{"one"})
	p.b.rec.wait(t, "the first message", func() bool { return p.b.rec.countFrom(1) == 1 })
	p.proxy.Refuse(true) // the link goes down and stays down, nothing in flight
	p.proxy.Reset()
	p.a.rec.wait(t, "a to see the link down", func() bool { return !p.a.rec.up[2] })
	sendAll(t, p.a, 2, []string{"dropped"})
	p.a.RemovePeer(2)
	if err := p.a.Send(2, 1, []byte("x")); !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("send to a removed peer: %v, want ErrUnknownPeer", err)
	}
	p.proxy.Refuse(false)
	if err := p.a.SetPeer(2, p.proxy.Addr()); err != nil {
		t.Fatal(err)
	}
	sendAll(t, p.a, 2, []string{"two"})
	p.b.rec.wait(t, "the message after re-adding", func() bool { return p.b.rec.countFrom(1) >= 3 })
	sameSeq(t, bodies(p.b.rec.from(1)), []string{"one", "GAP", "two"})
}

// TestSendBeforeAddressLeavesGap: a node that knows a peer only from the
// peer's own connection (its address is not known yet, as after a
// restart before the node read the cluster's membership) refuses to send
// to it, and the peer later gets a gap in that place: it missed a message
// (an endpoint call, the answer to a request), and the node's router
// closes the connections that may wait for it.
func TestSendBeforeAddressLeavesGap(t *testing.T) {
	a := startNode(t, creds(t, testCA, 1), 1, "127.0.0.1:0", nil)
	b := startNode(t, creds(t, testCA, 2), 1, "127.0.0.1:0", nil)
	if err := a.SetPeer(2, b.addr); err != nil {
		t.Fatal(err)
	}
	sendAll(t, a, 2, []string{"request"})
	b.rec.wait(t, "the request", func() bool { return b.rec.countFrom(1) == 1 })
	if err := b.Send(1, 1, []byte("answer")); !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("send to a peer known only as a dialer: %v, want ErrUnknownPeer", err)
	}
	if err := b.SetPeer(1, a.addr); err != nil {
		t.Fatal(err)
	}
	sendAll(t, b, 1, []string{"next"})
	a.rec.wait(t, "the message after the address", func() bool {
		return slices.ContainsFunc(a.rec.items, func(it item) bool { return it.from == 2 && it.body == "next" })
	})
	sameSeq(t, bodies(a.rec.from(2)), []string{"GAP", "next"})
}

// TestSendErrors: the argument errors of Send.
func TestSendErrors(t *testing.T) {
	a := startNode(t, creds(t, testCA, 1), 1, "127.0.0.1:0", func(c *Config) { c.MaxMessage = 100; c.QueueBytes = 1000 })
	if err := a.Send(9, 1, nil); !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("unknown peer: %v", err)
	}
	if err := a.SetPeer(2, "127.0.0.1:1"); err != nil {
		t.Fatal(err)
	}
	if err := a.Send(2, 0, nil); !errors.Is(err, ErrType) {
		t.Fatalf("type 0: %v", err)
	}
	if err := a.Send(2, 1, bytes.Repeat([]byte{1}, 101)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("101 bytes: %v", err)
	}
	if err := a.SetPeer(1, "127.0.0.1:1"); err == nil {
		t.Fatal("SetPeer accepted the node itself")
	}
	_ = a.Close()
	if err := a.Send(2, 1, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

// TestConfigValidate reports every problem at once.
func TestConfigValidate(t *testing.T) {
	cfg := Config{Heartbeat: time.Second, DeadAfter: time.Second, MaxMessage: MaxMessageLimit + 1, BackoffMin: time.Second, BackoffMax: time.Millisecond}
	_, err := New(cfg)
	if err == nil {
		t.Fatal("New accepted an empty Config")
	}
	for _, want := range []string{"Credentials", "Gen", "Addr", "OnMessage", "DeadAfter", "BackoffMax", "MaxMessage"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("validate does not mention %s: %v", want, err)
		}
	}
}

// TestThreeNodeMesh: three nodes, each linked to both others, each
// sending to both at once: every stream arrives whole and in order.
func TestThreeNodeMesh(t *testing.T) {
	nodes := make([]*node, 3)
	for i := range nodes {
		nodes[i] = startNode(t, creds(t, testCA, uint32(i+1)), 1, "127.0.0.1:0", nil)
	}
	for i, n := range nodes {
		for j, m := range nodes {
			if i != j {
				if err := n.SetPeer(uint32(j+1), m.addr); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	want := map[[2]int][]string{}
	var wg sync.WaitGroup
	for i := range nodes {
		for j := range nodes {
			if i == j {
				continue
			}
			msgs := numbered(fmt.Sprintf("%d>%d", i+1, j+1), 0, 2000)
			want[[2]int{i, j}] = msgs
			wg.Add(1)
			go func() { defer wg.Done(); sendAll(t, nodes[i], uint32(j+1), msgs) }()
		}
	}
	wg.Wait()
	for k, msgs := range want {
		to, from := nodes[k[1]], uint32(k[0]+1)
		to.rec.wait(t, fmt.Sprintf("stream %d>%d", k[0]+1, k[1]+1), func() bool { return to.rec.countFrom(from) >= len(msgs) })
		sameSeq(t, bodies(to.rec.from(from)), msgs)
	}
}
