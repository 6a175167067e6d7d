package storage

import (
	"slices"
	"testing"
)

// shardByDigit is a Forwarder whose users live on the shard their last
// decimal digit names.
type shardByDigit struct{}

func (shardByDigit) ShardOf(user uint64) uint16 { return uint16(user % 10) }
func (shardByDigit) Forward(Op)                 {}

// TestPartByShard: a delivery's users are split by shard, the parts in the
// order their shards first appear and the users of each in their order,
// and the scratch is left for the next call (a second call beside the
// first's results, as a deliver beneath another makes it, sees none of
// them).
func TestPartByShard(t *testing.T) {
	s := &Shard{cfg: Config{Forwarder: shardByDigit{}}}
	for _, c := range []struct {
		users []uint64
		parts []fwdPart // shard and n: at is partByShard's own
		want  []uint64
	}{
		{nil, nil, nil},
		{[]uint64{7}, []fwdPart{{shard: 7, n: 1}}, []uint64{7}},
		{[]uint64{13, 23, 3}, []fwdPart{{shard: 3, n: 3}}, []uint64{13, 23, 3}},
		{
			[]uint64{13, 21, 33, 42, 51, 63, 2},
			[]fwdPart{{shard: 3, n: 3}, {shard: 1, n: 2}, {shard: 2, n: 2}},
			[]uint64{13, 33, 63, 21, 51, 42, 2},
		},
	} {
		for range 2 { // the second beside the first's results
			pb, ub := len(s.fwdParts), len(s.fwdUsers)
			s.partByShard(c.users)
			got := slices.Clone(s.fwdParts[pb:])
			for i := range got {
				got[i].at = 0
			}
			if !slices.Equal(got, c.parts) {
				t.Errorf("parts of %v: %+v, want %+v", c.users, got, c.parts)
			}
			if got := s.fwdUsers[ub:]; !slices.Equal(got, c.want) {
				t.Errorf("users of %v by part: %v, want %v", c.users, got, c.want)
			}
		}
		if s.partOf != [MaxShards]uint16{} {
			t.Fatalf("after %v: partOf left set", c.users)
		}
		s.fwdParts, s.fwdUsers = s.fwdParts[:0], s.fwdUsers[:0]
	}
}
