package node

import (
	"log/slog"
	"testing"

	"github.com/parley-im/parley/router"
)

// TestConnsGoneOncePerGeneration: a peer's restart reported twice (by
// the link and by etcd) closes the connections its shards served once;
// an older generation reported late closes nothing; the peer's next
// restart closes them again.
func TestConnsGoneOncePerGeneration(t *testing.T) {
	r, err := router.New(1)
	if err != nil {
		t.Fatal(err)
	}
	r.SetPlacement(&router.Placement{Owner: []uint32{2}, Live: map[uint32]bool{1: true, 2: true}})
	closes := 0
	m := &member{cfg: ClusterConfig{ID: 1}, log: slog.New(slog.DiscardHandler), r: r, gens: map[uint32]uint32{}, seen: map[uint32]uint32{},
		closeUsers: func(func(uint64, bool) bool) { closes++ }}
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
