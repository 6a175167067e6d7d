package router

import (
	"errors"
	"fmt"

	"github.com/parley-im/parley/storage"
)

// ErrNoShard means an op names a slot whose shard this node cannot reach.
var ErrNoShard = errors.New("router: no shard for slot")

// Router maps slots to shards and submits ops to them, and resolves the
// connection refs the shards answer (storage.Conns).
type Router struct {
	count  int
	shards []*storage.Shard // by shard id
	slots  [storage.NumSlots]uint16
	local  storage.Conns // this node's connections; nil until AttachConns
	placeState
}

// New returns a Router for count shards, with slots assigned to them in
// equal contiguous ranges: ShardOf works at once, so shards opened with the
// router as their Forwarder can place users while they recover. Attach the
// shards before any Submit.
func New(count int) (*Router, error) {
	if count <= 0 || count > storage.MaxShards {
		return nil, fmt.Errorf("router: %d shards, want 1 to %d", count, storage.MaxShards)
	}
	r := &Router{count: count}
	for slot := range r.slots {
		r.slots[slot] = uint16(slot * count / storage.NumSlots)
	}
	return r, nil
}

// Attach sets the shards the router reaches. It must be called once,
// before any Submit, with the router's count of shards numbered 0 … n-1 in
// order; shards are opened with the router as their Forwarder before
// Attach, and started after it. In a cluster (AttachCluster) the shards
// other nodes serve are nil.
func (r *Router) Attach(shards []*storage.Shard) error {
	if len(shards) != r.count {
		return fmt.Errorf("router: %d shards attached to a router for %d", len(shards), r.count)
	}
	for i, s := range shards {
		if s == nil && r.send != nil {
			continue
		}
		if s == nil {
			return fmt.Errorf("router: no shard at position %d", i)
		}
		if int(s.ID()) != i {
			return fmt.Errorf("router: shard %d at position %d", s.ID(), i)
		}
	}
	r.shards = shards
	r.attached()
	return nil
}

// AttachConns sets the resolver of this node's own connections (the
// server's registry). It must be called once, before the shards start.
func (r *Router) AttachConns(local storage.Conns) { r.local = local }

// Endpoint implements storage.Conns: the connection ref names, or nil when
// it is gone. A ref of this node resolves to the server's connection; in
// a cluster, a ref of another node resolves to a storage.RemoteEndpoint
// whose calls go over the node link.
func (r *Router) Endpoint(ref storage.ConnRef) storage.Endpoint {
	if r.send != nil && ref.Node != r.self && ref.Node != 0 {
		return storage.RemoteEndpoint{Ref: ref, Send: r.sendCall}
	}
	if r.local == nil {
		return nil
	}
	return r.local.Endpoint(ref)
}

// ShardOf returns the number of the shard that owns user.
func (r *Router) ShardOf(user uint64) uint16 { return r.slots[storage.SlotOfUser(user)] }

// ShardOfPhone returns the number of the shard that owns phone.
func (r *Router) ShardOfPhone(phone string) uint16 { return r.slots[storage.SlotOfPhone(phone)] }

// Shards returns the number of shards.
func (r *Router) Shards() int { return r.count }

// Shard returns shard id, nil when another node of the cluster serves it.
func (r *Router) Shard(id uint16) *storage.Shard { return r.shards[id] }

// Submit sends op to the shard that owns its slot (SlotOf). A
// lookup goes to the shard of its first phone number: the caller splits
// lookups by shard.
func (r *Router) Submit(op storage.Op) error {
	if op.Kind == storage.OpLookup && len(op.Phones) == 0 {
		return fmt.Errorf("router: empty lookup")
	}
	return r.submit(r.slots[SlotOf(&op)], op)
}

func (r *Router) submit(id uint16, op storage.Op) error {
	if int(id) >= len(r.shards) {
		return ErrNoShard
	}
	if s := r.shards[id]; s != nil {
		return s.Submit(op)
	}
	return r.remoteSubmit(id, &op)
}

// Forward implements storage.Forwarder. A refused outbox forward or answer
// is sent again by the source's retransmission; the internal requests that
// are not in an outbox (group joins, watches) time out at their callers.
func (r *Router) Forward(op storage.Op) {
	if op.Kind == storage.OpForward || op.Kind == storage.OpForwardDone {
		_ = r.submit(op.Dest, op)
		return
	}
	_ = r.Submit(op)
}
