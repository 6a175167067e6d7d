package server

import (
	"sync"
	"sync/atomic"

	"github.com/parley-im/parley/storage"
)

// A connection's ref ID is seq<<slotBits | slot: slot is its place in the
// registry's table, seq a number never reused within the boot, so a ref
// whose connection is gone never resolves to the next one in its slot.
const (
	slotBits   = 24 // up to 16M connections open at once
	slotMask   = 1<<slotBits - 1
	chunkBits  = 10
	chunkSize  = 1 << chunkBits
	maxChunks  = 1 << (slotBits - chunkBits)
	chunkIndex = chunkSize - 1
)

// Registry names the server's connections with storage.ConnRefs and
// resolves refs back to them: it is this node's storage.Conns, which the
// router consults for local refs. Resolving takes no lock and allocates
// nothing (two atomic loads), so the shards' emission path stays cheap;
// registering and releasing, once per connection, take a mutex.
// Safe for concurrent use.
type Registry struct {
	node, gen uint32
	chunks    [maxChunks]atomic.Pointer[chunk] // table of open connections by slot

	mu   sync.Mutex
	free []uint32 // guarded by mu: released slots
	used uint32   // guarded by mu: slots handed out so far
	seq  uint64   // guarded by mu: registrations so far
}

type chunk [chunkSize]atomic.Pointer[conn]

// NewRegistry returns the registry of the connections of node (0 on a
// single node) in its boot generation gen (internal/node increments it
// durably at every start).
func NewRegistry(node, gen uint32) *Registry {
	return &Registry{node: node, gen: gen}
}

// add gives c its ref and makes it resolvable. It reports false when the
// table is full (more than 16M connections open).
func (r *Registry) add(c *conn) bool {
	r.mu.Lock()
	var slot uint32
	if n := len(r.free); n > 0 {
		slot = r.free[n-1]
		r.free = r.free[:n-1]
	} else if r.used < 1<<slotBits {
		slot = r.used
		r.used++
	} else {
		r.mu.Unlock()
		return false
	}
	r.seq++
	c.ref = storage.ConnRef{Node: r.node, Gen: r.gen, ID: r.seq<<slotBits | uint64(slot)}
	ch := r.chunks[slot>>chunkBits].Load()
	if ch == nil {
		ch = new(chunk)
		r.chunks[slot>>chunkBits].Store(ch)
	}
	r.mu.Unlock()
	ch[slot&chunkIndex].Store(c)
	return true
}

// remove releases c's slot: its ref resolves to nothing from now on.
func (r *Registry) remove(c *conn) {
	slot := uint32(c.ref.ID & slotMask)
	ch := r.chunks[slot>>chunkBits].Load()
	if ch == nil || !ch[slot&chunkIndex].CompareAndSwap(c, nil) {
		return
	}
	r.mu.Lock()
	r.free = append(r.free, slot)
	r.mu.Unlock()
}

// Endpoint implements storage.Conns for this node's connections: the open
// connection ref names, or nil when it closed, belongs to another node or
// to an earlier boot of this one.
func (r *Registry) Endpoint(ref storage.ConnRef) storage.Endpoint {
	if ref.Node != r.node || ref.Gen != r.gen {
		return nil
	}
	slot := uint32(ref.ID & slotMask)
	ch := r.chunks[slot>>chunkBits].Load()
	if ch == nil {
		return nil
	}
	c := ch[slot&chunkIndex].Load()
	if c == nil || c.ref.ID != ref.ID {
		return nil
	}
	return c
}
