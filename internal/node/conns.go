package node

import (
	"sync"

	"github.com/parley-im/parley/server"
	"github.com/parley-im/parley/storage"
)

// ownRef marks the ref IDs of the node's own requests (an admin revoke):
// the server's registry never hands out an ID with this bit set (its IDs
// are a sequence number shifted above a 24-bit slot).
const ownRef = 1 << 63

// conns is the node's storage.Conns, given to the router: the server's
// connections, and the endpoints of requests the node makes itself, which
// answer like a connection but are not one. Resolving a server
// connection's ref costs one bit test more than the registry alone; the
// node's own refs, rare, take a mutex. Safe for concurrent use.
type conns struct {
	reg       *server.Registry
	node, gen uint32

	mu   sync.Mutex
	own  map[uint64]storage.Endpoint // guarded by mu
	next uint64                      // guarded by mu: own refs handed out
}

func newConns(reg *server.Registry, node, gen uint32) *conns {
	return &conns{reg: reg, node: node, gen: gen, own: make(map[uint64]storage.Endpoint)}
}

// Endpoint implements storage.Conns.
func (c *conns) Endpoint(ref storage.ConnRef) storage.Endpoint {
	if ref.ID&ownRef == 0 {
		return c.reg.Endpoint(ref)
	}
	if ref.Node != c.node || ref.Gen != c.gen {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.own[ref.ID]
}

// add names ep with a ref the shards can answer, until release is called.
func (c *conns) add(ep storage.Endpoint) (ref storage.ConnRef, release func()) {
	c.mu.Lock()
	c.next++
	id := c.next | ownRef
	c.own[id] = ep
	c.mu.Unlock()
	return storage.ConnRef{Node: c.node, Gen: c.gen, ID: id}, func() {
		c.mu.Lock()
		delete(c.own, id)
		c.mu.Unlock()
	}
}
