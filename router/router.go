package router

import (
	"errors"
	"fmt"

	"github.com/parley-im/parley/storage"
)

// ErrNoShard means an op names a slot whose shard this node cannot reach.
var ErrNoShard = errors.New("router: no shard for slot")

// Router maps slots to shards and submits ops to them.
type Router struct {
	shards []*storage.Shard // by shard id
	slots  [storage.NumSlots]uint16
}

// New returns a Router with no shards yet: open the shards with it as
// their Forwarder, then Attach them.
func New() *Router { return &Router{} }

// Attach sets the shards the router reaches and assigns slots to them in
// equal contiguous ranges. It must be called once, before any Submit, with
// shards numbered 0 … n-1 in order; shards are opened with the router as
// their Forwarder before Attach, and started after it.
func (r *Router) Attach(shards []*storage.Shard) error {
	if len(shards) == 0 || len(shards) > storage.MaxShards {
		return fmt.Errorf("router: %d shards, want 1 to %d", len(shards), storage.MaxShards)
	}
	for i, s := range shards {
		if int(s.ID()) != i {
			return fmt.Errorf("router: shard %d at position %d", s.ID(), i)
		}
	}
	r.shards = shards
	for slot := range r.slots {
		r.slots[slot] = uint16(slot * len(shards) / storage.NumSlots)
	}
	return nil
}

// ShardOf returns the number of the shard that owns user.
func (r *Router) ShardOf(user uint64) uint16 { return r.slots[storage.SlotOfUser(user)] }

// ShardOfPhone returns the number of the shard that owns phone.
func (r *Router) ShardOfPhone(phone string) uint16 { return r.slots[storage.SlotOfPhone(phone)] }

// Shards returns the number of shards.
func (r *Router) Shards() int { return len(r.shards) }

// Shard returns shard id.
func (r *Router) Shard(id uint16) *storage.Shard { return r.shards[id] }

// Submit sends op to the shard that owns its slot (storage.Op.Slot). A
// lookup goes to the shard of its first phone number: the caller splits
// lookups by shard.
func (r *Router) Submit(op storage.Op) error {
	if op.Kind == storage.OpLookup && len(op.Phones) == 0 {
		return fmt.Errorf("router: empty lookup")
	}
	return r.submit(r.slots[op.Slot()], op)
}

func (r *Router) submit(id uint16, op storage.Op) error {
	if int(id) >= len(r.shards) {
		return ErrNoShard
	}
	return r.shards[id].Submit(op)
}

// Forward implements storage.Forwarder.
func (r *Router) Forward(op storage.Op) {
	// A refused outbox forward stays in the source's outbox and is
	// replayed when the source restarts; the internal requests that are
	// not in an outbox (group joins, watches) are retried by their callers.
	_ = r.Submit(op)
}

// ForwardDone implements storage.Forwarder.
func (r *Router) ForwardDone(source uint16, seq uint64) {
	_ = r.submit(source, storage.Op{Kind: storage.OpForwardDone, OutSeq: seq})
}
