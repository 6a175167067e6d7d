package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/parley-im/parley/cluster"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/router"
	"github.com/parley-im/parley/router/link"
	"github.com/parley-im/parley/storage"
)

// ClusterConfig makes a node one of a cluster (docs/cluster.md). The zero
// value of each optional field means its default.
type ClusterConfig struct {
	// ID is the node's id in the cluster, 1 or more; its link certificate
	// must name it. Required.
	ID uint32
	// Etcd lists the etcd endpoints (URLs such as http://10.0.0.1:2379).
	// Required unless EtcdDir is set.
	Etcd []string
	// EtcdDir, if set, starts an embedded single-member etcd with its data
	// in this directory and uses it, for an all-in-one start: the node
	// stops it when it shuts down. Its client address is EtcdAddr.
	EtcdDir string
	// EtcdAddr is the embedded etcd's client host:port. Default
	// 127.0.0.1:2379.
	EtcdAddr string
	// Prefix is the cluster's etcd key prefix. Default "/parley/".
	Prefix string
	// LinkAddr is the host:port the node link listens on for the other
	// nodes. Required.
	LinkAddr string
	// Advertise is the link address the other nodes dial, as registered
	// in etcd. Default the address LinkAddr listens on.
	Advertise string
	// PeerLinks maps a peer's node id to the link address this node dials
	// for it instead of the one the peer registered in etcd; peers not
	// named are dialled where they registered. Nil: none. For a fault
	// proxy per ordered pair of nodes (the load tester's partitions), or
	// a network where nodes reach each other at other addresses.
	PeerLinks map[uint32]string
	// CertDir holds the node's link credentials (node.pem, node.key and
	// cluster-ca.pem, from `parleyd cluster-cert issue`). Default
	// DataDir/cluster.
	CertDir string
	// Credentials, if set, are used instead of CertDir's (tests).
	Credentials *link.Credentials
	// LeaseTTL is the node's etcd lease, in whole seconds: the others take
	// the node for dead that long after it stops renewing it, and it stops
	// committing for its shards a little before (the fence). Default 5 s.
	LeaseTTL time.Duration
	// MinNodes is how many nodes must be live before the controller places
	// the shards, so the first node to start does not take them all.
	// Default 1.
	MinNodes int
	// PlacementTimeout bounds how long Start waits for every shard to be
	// placed (for MinNodes nodes to join). Default 2 minutes.
	PlacementTimeout time.Duration
	// Link tunes the node link; Credentials, Gen, Addr, the handlers and
	// Logger are filled in by the node.
	Link link.Config
}

func (c *ClusterConfig) setDefaults(dataDir string) {
	if c.EtcdDir != "" && c.EtcdAddr == "" {
		c.EtcdAddr = "127.0.0.1:2379"
	}
	if c.CertDir == "" {
		c.CertDir = filepath.Join(dataDir, "cluster")
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = 5 * time.Second
	}
	if c.PlacementTimeout == 0 {
		c.PlacementTimeout = 2 * time.Minute
	}
}

func (c *ClusterConfig) validate() error {
	var errs []error
	if c.ID == 0 {
		errs = append(errs, errors.New("node: cluster node id 0, want 1 or more"))
	}
	if len(c.Etcd) == 0 && c.EtcdDir == "" {
		errs = append(errs, errors.New("node: a cluster node needs etcd endpoints or an embedded etcd directory"))
	}
	if len(c.Etcd) > 0 && c.EtcdDir != "" {
		errs = append(errs, errors.New("node: both etcd endpoints and an embedded etcd directory"))
	}
	if c.LinkAddr == "" {
		errs = append(errs, errors.New("node: a cluster node needs a link address"))
	}
	if c.LeaseTTL < 2*time.Second {
		errs = append(errs, fmt.Errorf("node: cluster lease TTL %v, want at least 2s", c.LeaseTTL))
	}
	if c.MinNodes < 0 || c.PlacementTimeout < 0 {
		errs = append(errs, errors.New("node: negative MinNodes or PlacementTimeout"))
	}
	return errors.Join(errs...)
}

// typeFrame is the link message type of a marshalled pb.NodeFrame;
// typeEtcd carries a node's "I cannot reach etcd" report (one byte, 1:
// down, 0: up) for the others' fences.
const (
	typeFrame uint8 = 1
	typeEtcd  uint8 = 2
)

// member is the cluster side of a node: its etcd client (and embedded
// etcd), membership, controller and link.
type member struct {
	cfg   ClusterConfig
	log   *slog.Logger
	etcd  *cluster.Etcd // nil without EtcdDir
	cli   *clientv3.Client
	node  *cluster.Node
	fence atomic.Pointer[cluster.Fence] // the node's, once joined; the link reads it
	left  bool                          // leave ran
	ctrl  *cluster.Controller
	link  *link.Link
	r     *router.Router

	// Set once the server runs (follow): what reacts to membership.
	closeUsers func(match func(user uint64, waiting bool) bool)

	started bool // follow runs

	mu    sync.Mutex
	gens  map[uint32]uint32 // guarded by mu: each node's generation whose connections are gone, up to
	seen  map[uint32]uint32 // guarded by mu: the live members' generations last seen
	wake  chan struct{}     // capacity 1: a new State to react to
	stop  chan struct{}
	done  chan struct{}
	local []*storage.Shard // the shards this node opened
}

// joinCluster starts the link, joins the cluster (creating it with shards
// shards if it does not exist yet), and waits until every shard is
// placed. It returns the placement State the node opens its shards by.
func joinCluster(cfg Config, r *router.Router, gen uint32) (*member, *cluster.State, error) {
	cc := cfg.Cluster
	cc.setDefaults(cfg.DataDir)
	if err := cc.validate(); err != nil {
		return nil, nil, err
	}
	m := &member{cfg: *cc, log: cfg.Logger.With("node", cc.ID), r: r, gens: map[uint32]uint32{}, seen: map[uint32]uint32{},
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	ok := false
	defer func() {
		if !ok {
			m.close(context.Background())
		}
	}()
	creds := cc.Credentials
	if creds == nil {
		var err error
		if creds, err = link.LoadCredentials(cc.CertDir); err != nil {
			return nil, nil, fmt.Errorf("node: cluster: %w", err)
		}
	}
	if creds.ID != cc.ID {
		return nil, nil, fmt.Errorf("node: cluster: the link certificate is node %d's, this is node %d", creds.ID, cc.ID)
	}
	endpoints := cc.Etcd
	if cc.EtcdDir != "" {
		e, err := cluster.StartEtcd(cluster.EtcdConfig{Dir: cc.EtcdDir, ClientAddr: cc.EtcdAddr, Logger: m.log, LogLevel: slog.LevelWarn})
		if err != nil {
			return nil, nil, fmt.Errorf("node: %w", err)
		}
		m.etcd = e
		endpoints = e.Endpoints()
	}
	var err error
	if m.cli, err = cluster.NewClient(endpoints, m.log); err != nil {
		return nil, nil, err
	}
	lc := cc.Link
	lc.Credentials, lc.Gen, lc.Addr, lc.Logger = creds, gen, cc.LinkAddr, m.log
	lc.OnMessage = m.onMessage
	lc.OnGap = func(from uint32) { m.peerLost(from, "calls lost on the link") }
	lc.OnPeerRestart = m.peerRestarted
	if m.link, err = link.New(lc); err != nil {
		return nil, nil, fmt.Errorf("node: %w", err)
	}
	r.AttachCluster(cc.ID, func(to uint32, frame []byte) error { return m.link.Send(to, typeFrame, frame) })

	ctx, cancel := context.WithTimeout(context.Background(), cc.PlacementTimeout)
	defer cancel()
	if err := cluster.Create(ctx, m.cli, cc.Prefix, cfg.Shards); err != nil {
		return nil, nil, fmt.Errorf("node: %w", err)
	}
	adv := cc.Advertise
	if adv == "" {
		adv = m.link.Addr().String()
	}
	m.node, err = cluster.Join(ctx, cluster.NodeConfig{
		Client: m.cli, Prefix: cc.Prefix, LeaseTTL: cc.LeaseTTL, Logger: m.log,
		Member:   cluster.Member{ID: cc.ID, Client: cfg.Listen, Link: adv, Gen: gen},
		OnChange: m.onState,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("node: %w", err)
	}
	m.fence.Store(m.node.Fence())
	if m.ctrl, err = cluster.StartController(cluster.ControllerConfig{
		Client: m.cli, Prefix: cc.Prefix, ID: cc.ID, MinNodes: cc.MinNodes, SessionTTL: cc.LeaseTTL, Logger: m.log,
	}); err != nil {
		return nil, nil, fmt.Errorf("node: %w", err)
	}
	st, err := m.node.WaitFor(ctx, (*cluster.State).AllPlaced)
	if err != nil {
		return nil, nil, fmt.Errorf("node: waiting for the cluster to place its shards (are %d nodes up?): %w", max(cc.MinNodes, 1), err)
	}
	if st.Shards != cfg.Shards {
		return nil, nil, fmt.Errorf("node: the cluster has %d shards, this node %d", st.Shards, cfg.Shards)
	}
	ok = true
	return m, st, nil
}

// shardConfig fills in what a shard placed on this node needs in a
// cluster: the placement epoch it opens under, and the fence it asks
// before each cycle.
func (m *member) shardConfig(sc *storage.Config, st *cluster.State) {
	id := sc.ID
	epoch := st.Owner(id).Epoch
	fence := m.fence.Load()
	sc.Epoch = max(epoch, 1) // epoch 0 is "outside a cluster" to storage
	sc.Fence = func() bool { return fence.Check(id, epoch) == nil }
}

// onState is cluster.NodeConfig.OnChange: the router's view changes at
// once; peers and departures are handled by follow.
func (m *member) onState(st *cluster.State) {
	if !st.Created() {
		return
	}
	p := &router.Placement{Owner: make([]uint32, st.Shards), Live: make(map[uint32]bool, len(st.Members))}
	for i, pl := range st.Placement {
		p.Owner[i] = pl.Node
	}
	for id := range st.Members {
		p.Live[id] = true
	}
	m.r.SetPlacement(p)
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// follow reacts to membership until close: it gives the link the
// addresses of the live members, and ends the sessions of the
// connections of nodes that left or restarted. It also tells the others,
// every second, whether this node can reach etcd (their fences count
// it).
func (m *member) follow() {
	defer close(m.done)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-m.wake:
			m.apply(m.node.State())
		case <-tick.C:
			down := []byte{0}
			if m.fence.Load().EtcdDown() {
				down[0] = 1
			}
			if st := m.node.State(); st != nil {
				for id := range st.Members {
					if id != m.cfg.ID {
						_ = m.link.Send(id, typeEtcd, down)
					}
				}
			}
		}
	}
}

// apply brings the link and the sessions in line with st's members.
func (m *member) apply(st *cluster.State) {
	if st == nil {
		return
	}
	gone := m.track(st.Members)
	for id, mem := range st.Members {
		if id == m.cfg.ID {
			continue
		}
		addr := mem.Link
		if a, ok := m.cfg.PeerLinks[id]; ok {
			addr = a
		}
		if err := m.link.SetPeer(id, addr); err != nil { // the same address changes nothing
			m.log.Warn("cluster: link peer", "peer", id, "err", err)
		}
	}
	for _, g := range gone {
		m.connsGone(g[0], g[1])
	}
}

// track records the live members and returns the (node, generation)
// pairs whose connections are gone: members that left, and the
// generations before a member's new one. A member back with a generation
// whose connections were reported gone (it ran on while cut off, its
// lease lapsed, and it registered again) serves connections of that
// generation again: its next restart or departure must end them too, so
// connsGone forgets that it handled that generation.
func (m *member) track(members map[uint32]cluster.Member) [][2]uint32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	var gone [][2]uint32 // node, generation
	for id, old := range m.seen {
		if now, ok := members[id]; !ok {
			gone = append(gone, [2]uint32{id, old})
			delete(m.seen, id)
		} else if now.Gen > old {
			gone = append(gone, [2]uint32{id, now.Gen - 1})
		}
	}
	for id, mem := range members {
		if id == m.cfg.ID {
			continue
		}
		if _, known := m.seen[id]; !known && mem.Gen > 0 && m.gens[id] >= mem.Gen {
			m.gens[id] = mem.Gen - 1
		}
		m.seen[id] = mem.Gen
	}
	return gone
}

// connsGone tells this node's shards that the connections of node up to
// generation gen are gone, and closes this node's connections whose
// sessions were on that node's shards (they log in again), and reports
// whether it acted. It acts once per node and generation: a restart is
// reported by the link and by etcd both, and a report of a generation
// already handled, or of an older one, changes nothing (a second close
// would only hit the connections that reconnected since).
func (m *member) connsGone(node, gen uint32) bool {
	if node == m.cfg.ID || gen == 0 {
		return false
	}
	m.mu.Lock()
	done := m.gens[node] >= gen
	if !done {
		m.gens[node] = gen
	}
	local := m.local
	m.mu.Unlock()
	if done {
		return false
	}
	for _, s := range local {
		_ = s.Submit(storage.Op{Kind: storage.OpConnGone, Conn: storage.ConnRef{Node: node, Gen: gen}})
	}
	m.peerLost(node, "node left or restarted")
	return true
}

// peerRestarted is the link's OnPeerRestart: the connections of the
// peer's earlier generations are gone (connsGone). And the link dropped
// what it held for the old incarnation, SENDs and requests of this
// node's connections among them, so the connections waiting for an
// answer are closed (their clients resend in order) even when etcd
// reported the restart first: a SEND written between etcd's report and
// the link's went into the dropped queue.
func (m *member) peerRestarted(peer, _, newGen uint32) {
	if m.connsGone(peer, newGen-1) || peer == m.cfg.ID {
		return
	}
	m.closeWhere(peer, "cluster: closing the connections waiting for an answer", "the link dropped what it held for the peer's earlier boot",
		func(_ uint64, waiting bool) bool { return waiting })
}

// closeWhere closes the connections of this node that match picks (the
// server's closeUsers, once it has set it), logging what and why.
func (m *member) closeWhere(peer uint32, what, why string, match func(user uint64, waiting bool) bool) {
	m.mu.Lock()
	closeUsers := m.closeUsers
	m.mu.Unlock()
	if closeUsers == nil {
		return
	}
	m.log.Info(what, "peer", peer, "why", why)
	closeUsers(match)
}

// peerLost closes this node's connections whose users' shards node
// serves: their sessions there may be gone, or have missed a call.
func (m *member) peerLost(node uint32, why string) {
	p := m.r.Placement()
	if p == nil {
		return
	}
	// Its users' sessions there are gone; and a connection waiting for an
	// answer may wait for one the lost node will never give (a SEND it
	// took before it died): closed, its client resends every unanswered
	// SEND in cmid order, where a later SEND could otherwise be stored
	// before a lost earlier one.
	m.closeWhere(node, "cluster: closing the connections served by a node", why,
		func(user uint64, waiting bool) bool { return waiting || p.Owner[m.r.ShardOf(user)] == node })
}

// onMessage is the link's OnMessage.
func (m *member) onMessage(from uint32, typ uint8, body []byte) {
	switch typ {
	case typeFrame:
		if err := m.r.Deliver(from, body); err != nil {
			m.log.Debug("cluster: node frame dropped", "from", from, "err", err)
		}
	case typeEtcd:
		if f := m.fence.Load(); f != nil && len(body) == 1 {
			f.ReportPeer(from, body[0] == 1)
		}
	}
}

// start begins following membership once the shards and the server run.
func (m *member) start(shards []*storage.Shard, closeUsers func(match func(user uint64, waiting bool) bool)) {
	m.mu.Lock()
	m.local, m.closeUsers = shards, closeUsers
	m.mu.Unlock()
	m.started = true
	go m.follow()
	m.onState(m.node.State())
}

// leave stops following membership, the controller and the lease (the
// others see this node leave at once); the link stays up until close, so
// the shards' last effects reach remote connections.
func (m *member) leave(ctx context.Context) {
	select {
	case <-m.stop:
	default:
		close(m.stop)
		if m.started {
			<-m.done
		}
	}
	if m.ctrl != nil {
		m.ctrl.Close()
		m.ctrl = nil
	}
	if m.node != nil && !m.left {
		m.node.Close(ctx)
	}
	m.left = true
}

// close releases everything after leave: the link, the etcd client and
// the embedded etcd.
func (m *member) close(ctx context.Context) error {
	m.leave(ctx)
	var err error
	if m.link != nil {
		err = m.link.Close()
		m.link = nil
	}
	if m.cli != nil {
		err = errors.Join(err, m.cli.Close())
		m.cli = nil
	}
	if m.etcd != nil {
		m.etcd.Close()
		m.etcd = nil
	}
	return err
}

// closeCode is what a connection whose sessions were on a lost node is
// closed with: its client reconnects after the GoAway's delay.
const closeCode = protocol.CodeShuttingDown
