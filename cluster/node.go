package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrDuplicateNode means a node with the same id and the same or a later
// boot generation is registered: two processes claim one node id.
var ErrDuplicateNode = errors.New("cluster: node id registered by the same or a later boot")

// NodeConfig configures a Node. The zero value of each optional field
// means its default.
type NodeConfig struct {
	// Client is the etcd client. Required.
	Client *clientv3.Client
	// Prefix is the cluster's key prefix. Default DefaultPrefix.
	Prefix string
	// Member is what the node registers: ID (1 or more) required, its
	// addresses, and Gen, which must grow at every start of the node.
	Member Member
	// LeaseTTL is the lease that holds the node's registration, in whole
	// seconds: the node is taken for dead that long after it stops
	// renewing it. Default 5 s; etcd may grant more.
	LeaseTTL time.Duration
	// Margin is subtracted from the lease's TTL when the node reckons how
	// long its lease surely lives after a keepalive was sent: it covers
	// the rate difference of the node's and etcd's clocks. Default 1 s;
	// must be below LeaseTTL.
	Margin time.Duration
	// KeepAliveEvery is the interval between keepalives. Default LeaseTTL/4.
	KeepAliveEvery time.Duration
	// RequestTimeout bounds each keepalive, and each registration after
	// etcd said the lease is gone (Join's context bounds the first).
	// Default KeepAliveEvery.
	RequestTimeout time.Duration
	// PeerReportTTL is how long a peer's "etcd down" report counts
	// (Fence.ReportPeer). Default LeaseTTL.
	PeerReportTTL time.Duration
	// Mono is the monotonic clock: the time elapsed since some fixed
	// origin. nil means time.Since of the Node's start, which reads Go's
	// monotonic clock; the wall clock is never read.
	Mono func() time.Duration
	// OnChange, if set, is called with every new State (see
	// WatcherConfig.OnChange); the fence sees the State first.
	OnChange func(*State)
	// Logger receives the node's logs; nil discards them.
	Logger *slog.Logger

	// hook, if set, is called by the keepalive goroutine after each event
	// (tests wait on it).
	hook func(nodeEvent)
}

// nodeEvent is what the keepalive goroutine did.
type nodeEvent int

const (
	evRenewed    nodeEvent = iota // a keepalive was answered
	evFailed                      // a keepalive got no answer
	evLost                        // etcd said the lease is gone; the fence is closed
	evRegistered                  // registered again after evLost
	evSuperseded                  // a later boot took the node id; the node stopped
)

func (c *NodeConfig) validate() error {
	var errs []error
	if c.Client == nil {
		errs = append(errs, errors.New("cluster: node needs a client"))
	}
	if c.Member.ID == 0 {
		errs = append(errs, errors.New("cluster: node id 0"))
	}
	if c.LeaseTTL < 0 || (c.LeaseTTL > 0 && c.LeaseTTL < 2*time.Second) {
		errs = append(errs, fmt.Errorf("cluster: LeaseTTL %v, want 0 or at least 2s", c.LeaseTTL))
	}
	ttl := c.LeaseTTL
	if ttl == 0 {
		ttl = 5 * time.Second
	}
	if c.Margin < 0 || c.Margin >= ttl {
		errs = append(errs, fmt.Errorf("cluster: Margin %v, want 0 to below the lease TTL %v", c.Margin, ttl))
	}
	for name, d := range map[string]time.Duration{"KeepAliveEvery": c.KeepAliveEvery, "RequestTimeout": c.RequestTimeout, "PeerReportTTL": c.PeerReportTTL} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("cluster: %s %v below 0", name, d))
		}
	}
	if c.KeepAliveEvery >= ttl {
		errs = append(errs, fmt.Errorf("cluster: KeepAliveEvery %v, want below the lease TTL %v", c.KeepAliveEvery, ttl))
	}
	return errors.Join(errs...)
}

func (c *NodeConfig) setDefaults() {
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = 5 * time.Second
	}
	if c.Margin == 0 {
		c.Margin = time.Second
	}
	if c.KeepAliveEvery == 0 {
		c.KeepAliveEvery = c.LeaseTTL / 4
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = c.KeepAliveEvery
	}
	if c.PeerReportTTL == 0 {
		c.PeerReportTTL = c.LeaseTTL
	}
	if c.Mono == nil {
		start := time.Now()
		c.Mono = func() time.Duration { return time.Since(start) }
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Node is a member of a cluster: its registration under a lease kept
// alive, the cluster's State as it changes, and its Fence.
type Node struct {
	cfg   NodeConfig
	k     keys
	fence *Fence
	watch *Watcher
	lease atomic.Int64 // the current clientv3.LeaseID; the keepalive goroutine replaces it
	// unsure holds the leases of this boot's registrations that failed
	// without an answer (a timeout): etcd may have applied them, so a
	// record under one of them is the node's own. Each is kept until it
	// has surely expired (the monotonic time given). Used by register
	// only: Join's goroutine, then the keepalive goroutine.
	unsure map[clientv3.LeaseID]time.Duration
	done   chan struct{}
	stop   context.CancelFunc
}

// Join registers the node under a new lease and starts keeping the lease
// alive and following the cluster's State. A registration left by an
// earlier boot of the node (a lower Gen) is taken over and its lease
// revoked; one by the same or a later boot fails with ErrDuplicateNode,
// except the node's own from an earlier attempt of this boot that failed
// without an answer (etcd may have applied it), which is taken over too.
// If etcd says the lease is gone later on, the fence closes and the node
// registers again under a new lease. Close leaves.
func Join(ctx context.Context, cfg NodeConfig) (*Node, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	n := &Node{cfg: cfg, k: keys{cfg.Prefix}, done: make(chan struct{})}
	n.fence = newFence(cfg.Member.ID, cfg.Mono, cfg.PeerReportTTL)
	if err := n.register(ctx); err != nil {
		return nil, err
	}
	w, err := NewWatcher(WatcherConfig{
		Client: cfg.Client, Prefix: cfg.Prefix, Logger: cfg.Logger,
		OnChange: func(st *State) {
			n.fence.setState(st)
			if cfg.OnChange != nil {
				cfg.OnChange(st)
			}
		},
	})
	if err != nil {
		return nil, err
	}
	n.watch = w
	kctx, cancel := context.WithCancel(context.Background())
	n.stop = cancel
	go n.keepAlive(kctx)
	return n, nil
}

// register grants a lease and writes the node's record under it, within
// rctx.
func (n *Node) register(rctx context.Context) error {
	cli, m := n.cfg.Client, n.cfg.Member
	sent := n.cfg.Mono()
	g, err := cli.Grant(rctx, int64(n.cfg.LeaseTTL/time.Second))
	if err != nil {
		return fmt.Errorf("cluster: node %d: lease: %w", m.ID, err)
	}
	for id, gone := range n.unsure {
		if sent > gone {
			delete(n.unsure, id)
		}
	}
	key, val := n.k.node(m.ID), encodeJSON(m)
	for range 2 {
		resp, err := cli.Txn(rctx).
			If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, val, clientv3.WithLease(g.ID))).
			Else(clientv3.OpGet(key)).Commit()
		if err != nil {
			if _, rerr := cli.Revoke(rctx, g.ID); rerr != nil && !errors.Is(rerr, rpctypes.ErrLeaseNotFound) {
				// The put may have been applied and stays until the
				// lease expires: the next attempt must know it for
				// its own. etcd may grant more than asked, and its
				// clock may run slower than ours: twice the TTL.
				if n.unsure == nil {
					n.unsure = map[clientv3.LeaseID]time.Duration{}
				}
				n.unsure[g.ID] = n.cfg.Mono() + 2*time.Duration(g.TTL)*time.Second
			}
			return fmt.Errorf("cluster: node %d: register: %w", m.ID, err)
		}
		if resp.Succeeded {
			n.lease.Store(int64(g.ID))
			n.fence.renewed(sent, time.Duration(g.TTL)*time.Second, n.cfg.Margin)
			return nil
		}
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 {
			continue // expired in between
		}
		old, err := decodeMember(kvs[0].Value)
		_, own := n.unsure[clientv3.LeaseID(kvs[0].Lease)]
		if err == nil && old.Gen >= m.Gen && !own {
			_, _ = cli.Revoke(rctx, g.ID)
			return fmt.Errorf("%w: node %d boot %d, registered boot %d", ErrDuplicateNode, m.ID, m.Gen, old.Gen)
		}
		// An earlier boot's record, or this boot's from an attempt
		// that failed without an answer: end its lease (the record goes
		// with it) and register again.
		if _, err := cli.Revoke(rctx, clientv3.LeaseID(kvs[0].Lease)); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			_, _ = cli.Revoke(rctx, g.ID)
			return fmt.Errorf("cluster: node %d: revoke the earlier boot's lease: %w", m.ID, err)
		}
	}
	_, _ = cli.Revoke(rctx, g.ID)
	return fmt.Errorf("cluster: node %d: register: the record keeps changing", m.ID)
}

// keepAlive renews the lease every KeepAliveEvery; when etcd says the
// lease is gone it closes the fence and registers again.
func (n *Node) keepAlive(ctx context.Context) {
	defer close(n.done)
	log := n.cfg.Logger.With("node", n.cfg.Member.ID)
	every := n.cfg.KeepAliveEvery
	for wait(ctx, every) {
		sent := n.cfg.Mono()
		rctx, cancel := context.WithTimeout(ctx, n.cfg.RequestTimeout)
		resp, err := n.cfg.Client.KeepAliveOnce(rctx, n.Lease())
		cancel()
		switch {
		case err == nil:
			n.fence.renewed(sent, time.Duration(resp.TTL)*time.Second, n.cfg.Margin)
			every = n.cfg.KeepAliveEvery
			n.event(evRenewed)
		case errors.Is(err, rpctypes.ErrLeaseNotFound):
			log.Warn("cluster: node lease gone; registering again")
			n.fence.expire()
			n.event(evLost)
			rctx, cancel := context.WithTimeout(ctx, n.cfg.RequestTimeout)
			err := n.register(rctx)
			cancel()
			switch {
			case err == nil:
				every = n.cfg.KeepAliveEvery
				n.event(evRegistered)
			case errors.Is(err, ErrDuplicateNode):
				log.Error("cluster: node id taken by a later boot; this node stops", "err", err)
				n.event(evSuperseded)
				return
			default:
				log.Warn("cluster: node registration failed", "err", err)
				every = retryMin // retry soon
			}
		default:
			log.Debug("cluster: keepalive failed", "err", err)
			every = min(every, n.cfg.KeepAliveEvery/2)
			n.event(evFailed)
		}
	}
}

func (n *Node) event(ev nodeEvent) {
	if n.cfg.hook != nil {
		n.cfg.hook(ev)
	}
}

// Fence returns the node's fence.
func (n *Node) Fence() *Fence { return n.fence }

// State returns the last State the node saw, or nil before the first.
func (n *Node) State() *State { return n.watch.Current() }

// WaitFor returns the first State for which ok is true (see
// Watcher.WaitFor).
func (n *Node) WaitFor(ctx context.Context, ok func(*State) bool) (*State, error) {
	return n.watch.WaitFor(ctx, ok)
}

// Lease returns the node's current lease.
func (n *Node) Lease() clientv3.LeaseID { return clientv3.LeaseID(n.lease.Load()) }

// Close stops renewing the lease, revokes it (the node leaves at once;
// with etcd unreachable the lease expires on its own) and stops the
// watcher.
func (n *Node) Close(ctx context.Context) {
	n.stop()
	<-n.done
	n.fence.expire()
	rctx, cancel := context.WithTimeout(ctx, n.cfg.RequestTimeout)
	_, _ = n.cfg.Client.Revoke(rctx, n.Lease())
	cancel()
	n.watch.Close()
}
