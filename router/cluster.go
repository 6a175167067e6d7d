package router

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
	"github.com/parley-im/parley/storage"
)

// ErrUnavailable means an op's shard is served by another node that is
// not live, or not placed at all: the caller answers as for a busy shard
// (the client retries; an outbox forward is resent by its source).
var ErrUnavailable = errors.New("router: shard's node unavailable")

// Placement is the router's view of a cluster: which node serves each
// shard, and which nodes are live. Immutable once handed to SetPlacement.
type Placement struct {
	// Owner is each shard's node, by shard number (len the shard count);
	// 0 for an unplaced shard.
	Owner []uint32
	// Live holds the nodes whose leases are alive.
	Live map[uint32]bool
}

// Sender carries a node frame (a marshalled pb.NodeFrame) to node to
// over the node link. It must not block; an error means the frame was
// not taken (the link's queue is full, the peer unknown).
type Sender func(to uint32, frame []byte) error

// AttachCluster makes the router one node's of a cluster: self is this
// node's id, send reaches the other nodes. Ops for shards this router
// was not given (Attach's nil entries) go to the node SetPlacement names,
// and refs of other nodes resolve to storage.RemoteEndpoints over send.
// It must be called once, before Attach and before any Submit.
func (r *Router) AttachCluster(self uint32, send Sender) {
	r.self, r.send = self, send
	r.place.Store(&Placement{Owner: make([]uint32, r.count)})
}

// SetPlacement replaces the router's view of the cluster; p must not be
// modified afterwards. Safe for concurrent use with everything else.
func (r *Router) SetPlacement(p *Placement) { r.place.Store(p) }

// Placement returns the router's current view of the cluster, nil on a
// single node.
func (r *Router) Placement() *Placement { return r.place.Load() }

// remoteSubmit sends op to the node that serves shard id.
func (r *Router) remoteSubmit(id uint16, op *storage.Op) error {
	p := r.place.Load()
	if p == nil {
		return ErrNoShard
	}
	node := p.Owner[id]
	if node == 0 || node == r.self || !p.Live[node] {
		return fmt.Errorf("%w: shard %d on node %d", ErrUnavailable, id, node)
	}
	b, err := proto.Marshal(&pb.NodeFrame{Body: &pb.NodeFrame_Op{Op: storage.EncodeOp(op)}})
	if err != nil {
		return fmt.Errorf("router: encode op: %w", err)
	}
	return r.send(node, b)
}

// sendCall sends an endpoint call to the node of the connection it names.
// A call the link refuses is dropped: the far node hears of the gap
// (docs/cluster.md, "Remote endpoints").
func (r *Router) sendCall(c *pb.NodeCall) {
	b, err := proto.Marshal(&pb.NodeFrame{Body: &pb.NodeFrame_Call{Call: c}})
	if err != nil {
		return
	}
	_ = r.send(c.GetConn().GetNode(), b)
}

// Deliver takes a node frame that node from sent over the link: an op is
// submitted to this node's shard, a call made on this node's connection.
// Ops that arrive before the shards are attached (a node that restarts
// hears from its peers before it has opened its shards) wait, up to
// maxEarlyOps, and go to the shards in their order once Attach runs. An
// op no shard here takes (beyond that bound, for a shard this node does
// not serve, or refused by the shard's queue) is refused on its
// connection with OVERLOADED (storage.Refuse), so that no client waits
// on a live connection for an answer that never comes; forwards are
// dropped (their source resends them). A call for a connection that is
// gone is dropped. It returns what went wrong, for logs.
func (r *Router) Deliver(from uint32, frame []byte) error {
	var f pb.NodeFrame
	if err := proto.Unmarshal(frame, &f); err != nil {
		return fmt.Errorf("router: frame from node %d: %w", from, err)
	}
	switch b := f.Body.(type) {
	case *pb.NodeFrame_Op:
		op, err := storage.DecodeOp(b.Op)
		if err != nil {
			return fmt.Errorf("router: op from node %d: %w", from, err)
		}
		if op.Kind == storage.OpLookup && len(op.Phones) == 0 {
			return fmt.Errorf("router: empty lookup from node %d", from)
		}
		if !r.ready.Load() {
			if held, err := r.holdEarly(from, &op); held {
				return err
			}
		}
		return r.deliverOp(from, &op)
	case *pb.NodeFrame_Call:
		if !r.ready.Load() {
			return fmt.Errorf("router: call from node %d before the shards are attached", from)
		}
		if r.local == nil {
			return nil
		}
		if ep := r.local.Endpoint(storage.CallRef(b.Call)); ep != nil {
			return storage.ApplyCall(ep, b.Call)
		}
		return nil
	}
	return fmt.Errorf("router: empty frame from node %d", from)
}

// deliverOp submits op, from node from, to its shard here, or refuses it.
func (r *Router) deliverOp(from uint32, op *storage.Op) error {
	id := op.Dest
	if op.Kind != storage.OpForward && op.Kind != storage.OpForwardDone {
		id = r.slots[SlotOf(op)]
	}
	if int(id) >= r.count || r.shards[id] == nil {
		r.refuse(op)
		return fmt.Errorf("router: op %v from node %d for shard %d, not served here", op.Kind, from, id)
	}
	if err := r.shards[id].Submit(*op); err != nil {
		r.refuse(op)
		return err
	}
	return nil
}

// maxEarlyOps bounds the ops that wait for Attach; more are refused.
const maxEarlyOps = 10_000

// earlyOp is an op that arrived before Attach, and its sender.
type earlyOp struct {
	from uint32
	op   storage.Op
}

// holdEarly keeps op until Attach and reports true, unless the shards
// were attached meanwhile (false: deliver it now). Past maxEarlyOps it
// refuses op.
func (r *Router) holdEarly(from uint32, op *storage.Op) (bool, error) {
	r.earlyMu.Lock()
	defer r.earlyMu.Unlock()
	if r.ready.Load() {
		return false, nil
	}
	if len(r.early) >= maxEarlyOps {
		r.refuse(op)
		return true, fmt.Errorf("router: op %v from node %d before the shards are attached, %d waiting already", op.Kind, from, len(r.early))
	}
	r.early = append(r.early, earlyOp{from, *op})
	return true, nil
}

// attached delivers the ops that waited for Attach, in their order, and
// only then lets Deliver hand ops to the shards itself, so none overtakes
// them.
func (r *Router) attached() {
	r.earlyMu.Lock()
	defer r.earlyMu.Unlock()
	for i := range r.early {
		_ = r.deliverOp(r.early[i].from, &r.early[i].op)
	}
	r.early = nil
	r.ready.Store(true)
}

// refuse answers op, which came over a link and no shard here takes, on
// its connection, which is on another node: OVERLOADED, as a gateway
// answers for a shard it cannot reach ([S-11-3]).
func (r *Router) refuse(op *storage.Op) {
	if op.Conn.Node == r.self || op.Conn.Node == 0 || r.send == nil {
		return
	}
	storage.Refuse(storage.RemoteEndpoint{Ref: op.Conn, Send: r.sendCall}, op, protocol.CodeOverloaded, retryUnservedMS)
}

// retryUnservedMS is the delay suggested with the OVERLOADED that refuses
// an op no shard here takes: about a node's restart.
const retryUnservedMS = 500

// placeState is the router's cluster fields, apart for the doc.
type placeState struct {
	self  uint32
	send  Sender
	place atomic.Pointer[Placement] // nil on a single node
	ready atomic.Bool               // Attach is done: Deliver may read shards and local
	// early holds the ops that arrived before Attach, in order (guarded
	// by earlyMu, which Deliver takes only before Attach is done).
	earlyMu sync.Mutex
	early   []earlyOp
}
