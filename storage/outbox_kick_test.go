package storage_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/storage"
)

// lossyForwarder loses every OpForward while drop is set, as the link to
// a node that died loses what it held for it.
type lossyForwarder struct {
	storage.Forwarder
	drop *atomic.Bool
	lost *lostCount
}

// lostCount counts, by destination shard, the rounds of forwards lost
// (the forwards of a pair's first entry, outbox seq 1: each round of a
// pair starts with its first unconfirmed entry) and signals each.
type lostCount struct {
	mu      sync.Mutex
	rounds  map[uint16]int64 // guarded by mu
	changed chan struct{}    // capacity 1
}

func newLostCount() *lostCount {
	return &lostCount{rounds: map[uint16]int64{}, changed: make(chan struct{}, 1)}
}

func (f lossyForwarder) Forward(op storage.Op) {
	if op.Kind == storage.OpForward && f.drop.Load() {
		if op.OutSeq == 1 {
			f.lost.mu.Lock()
			f.lost.rounds[op.Dest]++
			f.lost.mu.Unlock()
			select {
			case f.lost.changed <- struct{}{}:
			default:
			}
		}
		return
	}
	f.Forwarder.Forward(op)
}

// of returns how many rounds towards dest were lost.
func (c *lostCount) of(dest uint16) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rounds[dest]
}

// waitFor waits, up to 10 s, until want rounds towards dest were lost.
func (c *lostCount) waitFor(t *testing.T, what string, dest uint16, want int64) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for c.of(dest) < want {
		select {
		case <-c.changed:
		case <-deadline:
			t.Fatalf("timed out waiting for %s: %d rounds towards shard %d lost, want %d", what, c.of(dest), dest, want)
		}
	}
}

// newLossyNode returns a node of count shards whose forwards are lost
// while drop is set, counted in lost.
func newLossyNode(t *testing.T, count int) (n *node, drop *atomic.Bool, lost *lostCount) {
	drop, lost = new(atomic.Bool), newLostCount()
	n = newNode(t, count, func(c *storage.Config) {
		c.Forwarder = lossyForwarder{Forwarder: c.Forwarder, drop: drop, lost: lost}
	})
	return n, drop, lost
}

// connGone submits OpConnGone for node 2's connections up to generation 1
// to every shard of n, as internal/node submits it to every local shard.
func (n *node) connGone(t *testing.T) {
	t.Helper()
	for _, s := range n.shards {
		if err := s.Submit(storage.Op{Kind: storage.OpConnGone, Conn: storage.ConnRef{Node: 2, Gen: 1}}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestConnGoneKicksTheOutbox: shard 1's outbox forwards alice's delivered
// receipt to shard 0, and the forward and its resends are lost until the
// pair's backoff has grown to 8 s (1 s, doubled at each of 3 resends).
// When a node's connections are declared gone (OpConnGone: it restarted
// or left, and the shards it served may have lost what they had not
// confirmed), the outbox forwards the receipt again at once, with the
// shards' clock still, where it would otherwise wait for the 8 s to
// pass; and the pair's backoff is back at its first step: lost once
// more, the receipt goes again 1 s later and reaches alice.
func TestConnGoneKicksTheOutbox(t *testing.T) {
	n, drop, lost := newLossyNode(t, 2)
	alice := n.register(t, n.phoneOn(t, 0, 43))
	bob := n.register(t, n.phoneOn(t, 1, 44))
	n.onShard(t, alice, 0)
	n.onShard(t, bob, 1)
	aep := n.login(t, alice, 0)
	bep := n.login(t, bob, 0)

	drop.Store(true)
	id := n.send(t, alice, aep, bob.user, 1, "hello")
	m := bep.messages(t, 1)[0]
	n.ack(bob, bep, m.Seq) // alice's delivered receipt: into shard 1's outbox
	// The pair towards shard 0 holds the copy of alice's message for her
	// other devices ([S-8-17]) and the receipt.
	lost.waitFor(t, "the first forward", 0, 1)
	for i, backoff := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
		n.clock.Advance(backoff)
		lost.waitFor(t, fmt.Sprintf("resend %d", i+1), 0, int64(i+2))
	}
	// The pair's backoff is 8 s; the node is not back yet.
	n.connGone(t)
	lost.waitFor(t, "the kick's forward, with the clock still", 0, 5)

	drop.Store(false) // the node is back
	n.clock.Advance(time.Second)
	r := aep.take(t, protocol.KindReceipt).(codec.Receipt)
	if r.Peer != bob.user || r.UpTo != id {
		t.Fatalf("alice got receipt %+v, want bob's up to %d", r, id)
	}
}
