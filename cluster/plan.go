package cluster

import (
	"maps"
	"slices"
)

// change is one placement decision of the controller.
type change struct {
	shard uint16
	node  uint32
	// move is set when an operator's request asked for it; the request is
	// deleted with the change.
	move bool
}

// plan returns the placement changes the controller makes in st:
// operators' move requests first, then every unplaced shard to the live
// node with the fewest shards (ties to the lowest id), once at least
// minNodes nodes are live. A placed shard stays on its node while the node
// is down: its data is on that node's disk.
//
// A move applies once the shard's current node is not live (its lease is
// gone, so its fence closed before etcd expired the lease), whether or not
// the target is live: the operator attached the shard's disk there. A
// move away from a live node waits: a node that still holds a lease may
// commit until it sees the new placement. A move request that names the
// shard's current node, or a shard that does not exist, is returned with
// node 0 (the request is deleted, the placement kept).
func plan(st *State, minNodes int) []change {
	if !st.Created() {
		return nil
	}
	var out []change
	place := slices.Clone(st.Placement)
	for _, shard := range slices.Sorted(maps.Keys(st.Moves)) {
		node := st.Moves[shard]
		switch {
		case int(shard) >= st.Shards || place[shard].Node == node:
			out = append(out, change{shard: shard, move: true})
		case st.Live(place[shard].Node):
			// wait for the node to leave
		default:
			out = append(out, change{shard: shard, node: node, move: true})
			place[shard].Node = node
		}
	}
	live := slices.Sorted(maps.Keys(st.Members))
	if len(live) == 0 || len(live) < minNodes {
		return out
	}
	count := make(map[uint32]int, len(live))
	for _, p := range place {
		if _, ok := st.Members[p.Node]; ok {
			count[p.Node]++
		}
	}
	for shard, p := range place {
		if p.Node != 0 {
			continue
		}
		best := live[0]
		for _, n := range live[1:] {
			if count[n] < count[best] {
				best = n
			}
		}
		count[best]++
		out = append(out, change{shard: uint16(shard), node: best})
	}
	return out
}
