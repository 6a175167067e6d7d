package cluster

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Reasons a Fence is closed for a shard, wrapped by the error of Check.
var (
	// ErrNotOwner: the placement the node last saw does not name it for
	// the shard.
	ErrNotOwner = errors.New("cluster: shard placed on another node")
	// ErrEpoch: the shard's placement changed since the epoch the caller
	// holds (the shard was moved away and back); reopen it.
	ErrEpoch = errors.New("cluster: shard placement epoch changed")
	// ErrLeaseExpired: the node cannot tell that its lease is alive.
	ErrLeaseExpired = errors.New("cluster: node lease expired")
)

// Fence tells a node whether it may commit for a shard: while the
// placement it last saw names it for the shard, and its lease is alive as
// the node itself can tell, on the monotonic clock. Its methods are safe
// for concurrent use; Valid and Check read atomics only, except when the
// lease is in doubt and peers' reports decide.
type Fence struct {
	self    uint32
	mono    func() time.Duration
	peerTTL time.Duration

	// until is the monotonic time, in nanoseconds, before which the lease
	// is surely alive: the send time of the last keepalive etcd answered,
	// plus the lease's TTL, minus the margin.
	until atomic.Int64
	// lost is set when etcd said the lease is gone; peers cannot reopen
	// the fence then. Cleared when the node registers again.
	lost  atomic.Bool
	state atomic.Pointer[State]

	mu    sync.Mutex
	peers map[uint32]time.Duration // guarded by mu: peer → monotonic time its "etcd down" report lasts until
}

func newFence(self uint32, mono func() time.Duration, peerTTL time.Duration) *Fence {
	return &Fence{self: self, mono: mono, peerTTL: peerTTL, peers: map[uint32]time.Duration{}}
}

// renewed records a keepalive (or grant) sent at monotonic time sent that
// etcd answered with ttl: the lease lives at least until sent+ttl-margin.
func (f *Fence) renewed(sent, ttl, margin time.Duration) {
	f.until.Store(int64(sent + ttl - margin))
	f.lost.Store(false)
}

// expire closes the lease side of the fence: etcd said the lease is gone.
func (f *Fence) expire() {
	f.lost.Store(true)
	f.until.Store(0)
}

func (f *Fence) setState(st *State) { f.state.Store(st) }

// leaseAlive reports whether the node's own reckoning says its lease lives.
func (f *Fence) leaseAlive() bool { return int64(f.mono()) < f.until.Load() }

// EtcdDown reports whether this node cannot tell that its lease is alive
// for want of answers from etcd (not because etcd said it is gone): what
// the node reports to its peers over the node links, for their ReportPeer.
func (f *Fence) EtcdDown() bool { return !f.lost.Load() && !f.leaseAlive() }

// ReportPeer records what peer node said over a node link about etcd: down
// means the peer cannot reach etcd either. A down report counts for the
// fence's peer-report TTL after it arrived; reports from nodes that are not
// members in the last State seen are ignored.
func (f *Fence) ReportPeer(node uint32, down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if down {
		f.peers[node] = f.mono() + f.peerTTL
	} else {
		delete(f.peers, node)
	}
}

// everyoneDown reports whether a strict majority of the other members of
// st said lately that they cannot reach etcd: then nobody can reassign a
// shard and the node keeps serving on an expired reckoning. A node with no
// other members never qualifies.
func (f *Fence) everyoneDown(st *State) bool {
	now := f.mono()
	f.mu.Lock()
	defer f.mu.Unlock()
	others, down := 0, 0
	for id := range st.Members {
		if id == f.self {
			continue
		}
		others++
		if until, ok := f.peers[id]; ok && now < until {
			down++
		}
	}
	return others > 0 && 2*down > others
}

// Valid returns the epoch of shard's placement and true while the node
// may commit for the shard: the placement it last saw names it, and its
// lease is alive as it can tell (or etcd is down for a majority of the
// others, see ReportPeer). It returns 0 and false otherwise.
func (f *Fence) Valid(shard uint16) (epoch uint64, ok bool) {
	p, err := f.check(shard, 0, false)
	if err != nil {
		return 0, false
	}
	return p.Epoch, true
}

// Check returns nil while the node may commit for shard at epoch held (the
// epoch the shard was opened under), else an error wrapping ErrNotOwner,
// ErrEpoch or ErrLeaseExpired.
func (f *Fence) Check(shard uint16, held uint64) error {
	_, err := f.check(shard, held, true)
	return err
}

// check decides from one State: the placement it returns is the one it
// checked.
func (f *Fence) check(shard uint16, held uint64, checkEpoch bool) (Placement, error) {
	st := f.state.Load()
	if st == nil {
		return Placement{}, fmt.Errorf("%w: no placement seen yet", ErrNotOwner)
	}
	p := st.Owner(shard)
	if p.Node != f.self {
		return p, fmt.Errorf("%w: shard %d on node %d", ErrNotOwner, shard, p.Node)
	}
	if checkEpoch && p.Epoch != held {
		return p, fmt.Errorf("%w: shard %d at epoch %d, held %d", ErrEpoch, shard, p.Epoch, held)
	}
	if f.leaseAlive() {
		return p, nil
	}
	if !f.lost.Load() && f.everyoneDown(st) {
		return p, nil
	}
	return p, fmt.Errorf("%w: node %d", ErrLeaseExpired, f.self)
}
