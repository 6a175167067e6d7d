package cluster

import (
	"slices"
	"testing"
)

func members(ids ...uint32) map[uint32]Member {
	m := map[uint32]Member{}
	for _, id := range ids {
		m[id] = Member{ID: id}
	}
	return m
}

func TestPlan(t *testing.T) {
	slots := SlotMap(4)
	tests := []struct {
		name     string
		place    []Placement
		live     map[uint32]Member
		moves    map[uint16]uint32
		minNodes int
		want     []change
	}{
		{
			name:  "unplaced shards spread by count, ties to the lowest id",
			place: make([]Placement, 4), live: members(2, 1), minNodes: 1,
			want: []change{{0, 1, false}, {1, 2, false}, {2, 1, false}, {3, 2, false}},
		},
		{
			name:  "nothing placed below MinNodes",
			place: make([]Placement, 4), live: members(1), minNodes: 2,
		},
		{
			name:  "nothing placed with no live node",
			place: make([]Placement, 4), live: members(), minNodes: 1,
		},
		{
			name:  "a down node keeps its shards; a new shard goes to the live node with fewest",
			place: []Placement{{1, 1}, {1, 1}, {2, 1}, {}}, live: members(2, 3), minNodes: 1,
			want: []change{{3, 3, false}},
		},
		{
			name:  "balanced placement is left alone",
			place: []Placement{{1, 1}, {2, 1}, {1, 1}, {2, 1}}, live: members(1, 2, 3), minNodes: 3,
		},
		{
			name:  "a move off a down node applies, to a down node too; a no-op move is only deleted",
			place: []Placement{{1, 1}, {2, 1}, {1, 1}, {2, 1}}, live: members(1),
			moves: map[uint16]uint32{3: 5, 1: 2, 9: 1}, minNodes: 1,
			want: []change{{1, 0, true}, {3, 5, true}, {9, 0, true}},
		},
		{
			name:  "a move off a live node waits for it to leave",
			place: []Placement{{1, 1}, {2, 1}, {1, 1}, {2, 1}}, live: members(1, 2),
			moves: map[uint16]uint32{0: 2}, minNodes: 1,
		},
		{
			name:  "a moved shard counts for its target when unplaced ones are spread",
			place: []Placement{{1, 1}, {}, {}, {}}, live: members(2, 3),
			moves: map[uint16]uint32{0: 2}, minNodes: 1,
			want: []change{{0, 2, true}, {1, 3, false}, {2, 2, false}, {3, 3, false}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := &State{Shards: 4, Slots: slots, Placement: tc.place, Members: tc.live, Moves: tc.moves}
			got := plan(st, tc.minNodes)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("plan = %v, want %v", got, tc.want)
			}
		})
	}
	if got := plan(&State{}, 1); got != nil {
		t.Fatalf("plan of an uncreated cluster = %v", got)
	}
}
