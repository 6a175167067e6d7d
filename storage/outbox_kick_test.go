package storage_test

import (
	"fmt"
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

// lostCount counts the rounds of forwards lost (the forwards of the
// pair's first entry, outbox seq 1: each round of a pair starts with its
// first unconfirmed entry) and signals each.
type lostCount struct {
	n       atomic.Int64
	changed chan struct{} // capacity 1
}

func (f lossyForwarder) Forward(op storage.Op) {
	if op.Kind == storage.OpForward && f.drop.Load() {
		if op.OutSeq == 1 {
			f.lost.n.Add(1)
			select {
			case f.lost.changed <- struct{}{}:
			default:
			}
		}
		return
	}
	f.Forwarder.Forward(op)
}

// waitFor waits, up to 10 s, until want rounds were lost.
func (c *lostCount) waitFor(t *testing.T, what string, want int64) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for c.n.Load() < want {
		select {
		case <-c.changed:
		case <-deadline:
			t.Fatalf("timed out waiting for %s: %d rounds lost, want %d", what, c.n.Load(), want)
		}
	}
}

// TestConnGoneKicksTheOutbox: shard 1's outbox forwards alice's delivered
// receipt to shard 0, and the forward and its resends are lost until the
// pair's backoff has grown to 8 s (1 s, doubled at each of 3 resends). When a node's connections are declared
// gone (OpConnGone: it restarted or left, and the shards it served may
// have lost what they had not confirmed), the outbox forwards the
// receipt again at once: alice gets it with the shards' clock still,
// where she would otherwise wait for the 8 s to pass.
func TestConnGoneKicksTheOutbox(t *testing.T) {
	var drop atomic.Bool
	lost := &lostCount{changed: make(chan struct{}, 1)}
	n := newNode(t, 2, func(c *storage.Config) {
		c.Forwarder = lossyForwarder{Forwarder: c.Forwarder, drop: &drop, lost: lost}
	})
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
	lost.waitFor(t, "the first forward", 1)
	for i, backoff := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
		n.clock.Advance(backoff)
		lost.waitFor(t, fmt.Sprintf("resend %d", i+1), int64(i+2))
	}
	drop.Store(false) // the node is back; the pair's backoff is 8 s

	for _, s := range n.shards { // as internal/node submits it: to every local shard
		if err := s.Submit(storage.Op{Kind: storage.OpConnGone, Conn: storage.ConnRef{Node: 2, Gen: 1}}); err != nil {
			t.Fatal(err)
		}
	}
	r := aep.take(t, protocol.KindReceipt).(codec.Receipt)
	if r.Peer != bob.user || r.UpTo != id {
		t.Fatalf("alice got receipt %+v, want bob's up to %d", r, id)
	}
}
