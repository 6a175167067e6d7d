package node

import (
	"log/slog"
	"testing"

	"github.com/parley-im/parley/cluster"
	"github.com/parley-im/parley/router"
)

// TestConnsGoneOncePerGeneration: a peer's restart reported twice (by
// the link and by etcd) closes the connections its shards served once;
// an older generation reported late closes nothing; the peer's next
// restart closes them again.
func TestConnsGoneOncePerGeneration(t *testing.T) {
	closes := 0
	m := testMember(t, &closes)
	for _, step := range []struct {
		what      string
		node, gen uint32
		closes    int
	}{
		{"the link reports peer 2's restart from generation 3", 2, 3, 1},
		{"etcd reports the same restart", 2, 3, 1},
		{"a late report of generation 2", 2, 2, 1},
		{"this node itself", 1, 9, 1},
		{"peer 2 restarts again, from generation 4", 2, 4, 2},
		{"etcd reports peer 2 gone at generation 4", 2, 4, 2},
		{"peer 3 restarts from generation 4", 3, 4, 3},
	} {
		m.connsGone(step.node, step.gen)
		if closes != step.closes {
			t.Fatalf("after %s: connections closed %d times, want %d", step.what, closes, step.closes)
		}
	}
}

// TestConnsGoneAfterReturn: a peer whose lease lapsed while it ran (cut
// off from etcd) and that registered again with the same generation
// serves connections again; when it then restarts, the connections
// waiting on it are closed again, once. Seen in cluster chaos (seed 10):
// node 3 was partitioned, came back, and was killed 2 s later; a SEND it
// took before dying was never answered on the gateway's open connection,
// while a later SEND of the same conversation went through to its next
// boot; the resend after the connection finally closed was stored after
// it (reordered).
func TestConnsGoneAfterReturn(t *testing.T) {
	closes := 0
	m := testMember(t, &closes)
	members := func(gen uint32) map[uint32]cluster.Member {
		ms := map[uint32]cluster.Member{1: {ID: 1, Gen: 7}}
		if gen > 0 {
			ms[2] = cluster.Member{ID: 2, Gen: gen}
		}
		return ms
	}
	for _, step := range []struct {
		what    string
		members map[uint32]cluster.Member // etcd's members, or nil for the link's report
		restart uint32                    // the link reports peer 2's restart from this generation
		closes  int
	}{
		{"peer 2 joins at generation 1", members(1), 0, 0},
		{"peer 2's lease lapses (it is cut off)", members(0), 0, 1},
		{"peer 2 registers again, generation 1", members(1), 0, 1},
		{"the link reports peer 2's restart from generation 1", nil, 1, 2},
		{"etcd reports the same restart", members(2), 0, 2},
	} {
		if step.members != nil {
			for _, g := range m.track(step.members) {
				m.connsGone(g[0], g[1])
			}
		} else {
			m.connsGone(2, step.restart)
		}
		if closes != step.closes {
			t.Fatalf("after %s: connections closed %d times, want %d", step.what, closes, step.closes)
		}
	}
}

// testMember returns node 1's member of a one-shard cluster whose shard
// node 2 serves; closes counts its closeUsers calls.
func testMember(t *testing.T, closes *int) *member {
	t.Helper()
	r, err := router.New(1)
	if err != nil {
		t.Fatal(err)
	}
	r.SetPlacement(&router.Placement{Owner: []uint32{2}, Live: map[uint32]bool{1: true, 2: true}})
	return &member{cfg: ClusterConfig{ID: 1}, log: slog.New(slog.DiscardHandler), r: r, gens: map[uint32]uint32{}, seen: map[uint32]uint32{},
		closeUsers: func(func(uint64, bool) bool) { *closes++ }}
}

// TestPeerRestartedClosesWaiting: when etcd reports a peer's restart
// before the link does, the link's report still closes the connections
// waiting for an answer (only those): the link dropped what it held for
// the old boot, a SEND written between the two reports among it. Seen in
// cluster chaos (seed 42, -race, a CPU burner beside): a 1:1 SEND written
// 40 ms after the gateway handled etcd's report of node 3's restart, 20 ms
// before the link's, was never answered on its open connection.
func TestPeerRestartedClosesWaiting(t *testing.T) {
	closes := 0
	m := testMember(t, &closes)
	var idleClosed, waitingClosed bool
	m.closeUsers = func(match func(uint64, bool) bool) {
		closes++
		idleClosed, waitingClosed = match(5, false), match(5, true)
	}
	members := func(gen uint32) map[uint32]cluster.Member {
		return map[uint32]cluster.Member{1: {ID: 1, Gen: 7}, 2: {ID: 2, Gen: gen}}
	}
	for _, g := range m.track(members(1)) {
		m.connsGone(g[0], g[1])
	}
	for _, g := range m.track(members(2)) { // etcd first
		m.connsGone(g[0], g[1])
	}
	if closes != 1 || !idleClosed {
		t.Fatalf("etcd's report of the restart: %d closes (idle connections closed %v), want 1 closing every connection served by the peer", closes, idleClosed)
	}
	m.peerRestarted(2, 1, 2)
	if closes != 2 || idleClosed || !waitingClosed {
		t.Fatalf("the link's report after etcd's: %d closes (idle closed %v, waiting closed %v), want a second closing only the waiting ones", closes, idleClosed, waitingClosed)
	}
	m.peerRestarted(2, 2, 3) // the link first this time: one close, of everything
	for _, g := range m.track(members(3)) {
		m.connsGone(g[0], g[1])
	}
	if closes != 3 || !idleClosed {
		t.Fatalf("the link's report before etcd's: %d closes, want 3", closes)
	}
}
