package storage

import (
	"time"

	"github.com/parley-im/parley/protocol"
)

// Message id layout (spec.md [S-2-4]): bits 63–22 milliseconds since
// protocol.MessageIDEpochMS, bits 21–12 the issuing shard, bits 11–0 a
// counter within the millisecond.
const (
	idShardShift = 12
	idShardBits  = 10
	// MaxShards is how many shards a cluster can have: each issues message
	// ids under its own number.
	MaxShards = 1 << idShardBits

	counterMask = 1<<idShardShift - 1
)

// idGenerator issues strictly increasing message ids for one shard, even
// when the clock steps back or more than 4096 ids are issued in one
// millisecond (the id then runs a little ahead of the clock).
type idGenerator struct {
	shard uint16
	last  uint64
}

// next returns a message id greater than every id issued before.
func (g *idGenerator) next(now time.Time) uint64 {
	ms := uint64(max(now.UnixMilli()-protocol.MessageIDEpochMS, 0))
	id := ms<<protocol.MessageIDTimeShift | uint64(g.shard)<<idShardShift
	if id <= g.last {
		if g.last&counterMask < counterMask {
			id = g.last + 1
		} else {
			id = (g.last>>protocol.MessageIDTimeShift+1)<<protocol.MessageIDTimeShift | uint64(g.shard)<<idShardShift
		}
	}
	g.last = id
	return id
}
