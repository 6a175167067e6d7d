package storage_test

import (
	"slices"
	"testing"

	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/storage"
)

// TestRepeatLowersBarrier: a SEND already stored, sent again while the
// fence is closed, is refused SHARD_UNAVAILABLE (a closed fence knows no
// dedupe) and raises its conversation's barrier; its retry, once the
// fence opens, is answered SENT as a repeat and must lower that barrier
// too, or the conversation's next SEND is refused until sendorder.TTL
// while the client waits. Seen in cluster chaos (seed 11): a group SEND
// refused SHARD_UNAVAILABLE every second for 16 s, on a live connection,
// behind a resent group SEND that the shard had stored before its node
// was cut off.
func TestRepeatLowersBarrier(t *testing.T) {
	n, closed := newFencedNode(t, 2)
	alice := n.register(t, n.phoneOn(t, 0, 35))
	bob := n.register(t, n.phoneOn(t, 1, 36))
	aep := n.login(t, alice, 0)
	g := n.createGroup(t, alice, aep, "repeat", bob.user).Group

	a := storage.Op{User: bob.user, CMID: 1, Body: []byte("A")}
	ga := storage.Op{Group: g, CMID: 2, Body: []byte("GA")}
	for _, op := range []storage.Op{a, ga} {
		c, _ := n.sendResult(t, alice, aep, op)
		expectCode(t, string(op.Body), c, 0)
	}
	// The answers were lost: the client sends both again, into a closed
	// fence.
	closed.Store(true)
	for _, op := range []storage.Op{a, ga} {
		c, _ := n.sendResult(t, alice, aep, op)
		expectCode(t, string(op.Body)+" again while fenced", c, protocol.CodeShardUnavailable)
	}
	closed.Store(false)
	for _, op := range []storage.Op{
		a,
		{User: bob.user, CMID: 3, Body: []byte("B")},
		ga,
		{Group: g, CMID: 4, Body: []byte("GB")},
	} {
		c, _ := n.sendResult(t, alice, aep, op)
		expectCode(t, string(op.Body)+" once the fence opened", c, 0)
	}
	bep := n.login(t, bob, 0)
	got := bodies(n.drain(t, bob, bep))
	if want := []string{"A", "GA", "B", "GB"}; !slices.Equal(got, want) {
		t.Fatalf("bob got %q, want %q", got, want)
	}
}
