package clustertest

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/parley-im/parley/cluster"
	"github.com/parley-im/parley/internal/node"
	"github.com/parley-im/parley/internal/nodetest"
	"github.com/parley-im/parley/internal/wiretest"
	"github.com/parley-im/parley/router/link"
)

// ShardsPerNode is how many shards a test cluster has per node.
const ShardsPerNode = 2

// Cluster is an embedded etcd and its nodes, started for one test.
type Cluster struct {
	// Etcd is the cluster's etcd member.
	Etcd *cluster.Etcd
	// Codes catches every node's verification codes.
	Codes *nodetest.Codes

	mu        sync.Mutex
	nodes     []*node.Node  // guarded by mu: node id i+1 at i; nil while down
	cfgs      []node.Config // what each node was started with
	nextPhone int           // guarded by mu
	afterStop []func()      // guarded by mu
}

// AfterStop has f run when the test ends, after every node stopped and
// before etcd does (a proxy in front of etcd closes there).
func (c *Cluster) AfterStop(f func()) {
	c.mu.Lock()
	c.afterStop = append(c.afterStop, f)
	c.mu.Unlock()
}

// Start starts an etcd member and n nodes (ids 1 … n) with
// ShardsPerNode shards each, waits until every shard is placed (the
// controller places them once all n are live, two per node), and stops
// everything when t ends. change, if not nil, edits each node's
// configuration before its start.
func Start(t testing.TB, n int, change func(id uint32, cfg *node.Config)) *Cluster {
	t.Helper()
	e, err := cluster.StartEtcd(cluster.EtcdConfig{Dir: t.TempDir(), TickMs: 10, ElectionMs: 100, LogLevel: slog.LevelWarn})
	if err != nil {
		t.Fatalf("clustertest: etcd: %v", err)
	}
	c := &Cluster{Etcd: e, Codes: nodetest.NewCodes(), nodes: make([]*node.Node, n), cfgs: make([]node.Config, n)}
	t.Cleanup(func() {
		c.stopAll(t)
		c.mu.Lock()
		after := c.afterStop
		c.mu.Unlock()
		for _, f := range after {
			f()
		}
		e.Close()
	})
	ca, err := link.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		creds, err := ca.Issue(uint32(i+1), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		c.cfgs[i] = node.Config{
			DataDir:   t.TempDir(),
			Listen:    "127.0.0.1:0",
			MediaAddr: "off",
			Shards:    n * ShardsPerNode,
			Codes:     c.Codes,
			FreeCodes: true,
			Logger:    nodetest.Logger(t),
			Cluster: &node.ClusterConfig{
				ID: uint32(i + 1), Etcd: e.Endpoints(), LinkAddr: "127.0.0.1:0", Credentials: creds,
				MinNodes: n, PlacementTimeout: nodetest.Timeout,
			},
		}
		if change != nil {
			change(uint32(i+1), &c.cfgs[i])
		}
	}
	// The nodes start together: each waits for the placement, which
	// needs all of them live.
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nd, err := node.Start(c.cfgs[i])
			c.mu.Lock()
			c.nodes[i], errs[i] = nd, err
			c.mu.Unlock()
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("clustertest: start node %d: %v", i+1, err)
		}
	}
	return c
}

// Node returns node id (1 …), nil while it is down.
func (c *Cluster) Node(id uint32) *node.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[id-1]
}

// Size returns the number of nodes.
func (c *Cluster) Size() int { return len(c.cfgs) }

// Home returns the node that serves user's shard.
func (c *Cluster) Home(user uint64) uint32 {
	r := c.anyNode().Router()
	return r.Placement().Owner[r.ShardOf(user)]
}

func (c *Cluster) anyNode() *node.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.nodes {
		if n != nil {
			return n
		}
	}
	panic("clustertest: every node is down")
}

// PhoneOn returns a phone number no earlier PhoneOn returned whose shard
// node id serves: an account registered with it lives there.
func (c *Cluster) PhoneOn(id uint32) string {
	r := c.anyNode().Router()
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		c.nextPhone++
		p := fmt.Sprintf("+1555%07d", c.nextPhone)
		if r.Placement().Owner[r.ShardOfPhone(p)] == id {
			return p
		}
	}
}

// Register registers an account homed on node home, through node via,
// and returns its first device.
func (c *Cluster) Register(t testing.TB, home, via uint32) wiretest.User {
	t.Helper()
	n := c.Node(via)
	cl := wiretest.Dial(t, n.Addr().String(), n.Fingerprint())
	defer cl.Conn.Close()
	u := cl.Register(c.PhoneOn(home), func(p string) string { return c.Codes.Wait(t, p) })
	if got := c.Home(u.ID); got != home {
		t.Fatalf("clustertest: user %d lives on node %d, want %d", u.ID, got, home)
	}
	return u
}

// Restart shuts node id down cleanly and starts it again on the same data
// directory and client address, as an operator's restart does: its lease
// is revoked, the others see it leave, and it joins again with a new boot
// generation and serves its shards at their placement epochs.
func (c *Cluster) Restart(t testing.TB, id uint32) {
	t.Helper()
	c.Stop(t, id)
	c.StartNode(t, id)
}

// Stop shuts node id down cleanly.
func (c *Cluster) Stop(t testing.TB, id uint32) {
	t.Helper()
	c.mu.Lock()
	n := c.nodes[id-1]
	c.nodes[id-1] = nil
	if n != nil {
		c.cfgs[id-1].Listen = n.Addr().String()
	}
	c.mu.Unlock()
	if n == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), nodetest.Timeout)
	defer cancel()
	if err := n.Shutdown(ctx); err != nil {
		t.Fatalf("clustertest: stop node %d: %v", id, err)
	}
}

// StartNode starts node id again after Stop.
func (c *Cluster) StartNode(t testing.TB, id uint32) {
	t.Helper()
	n, err := node.Start(c.cfgs[id-1])
	if err != nil {
		t.Fatalf("clustertest: start node %d: %v", id, err)
	}
	c.mu.Lock()
	c.nodes[id-1] = n
	c.mu.Unlock()
}

// stopAll shuts every running node down.
func (c *Cluster) stopAll(t testing.TB) {
	c.mu.Lock()
	nodes := c.nodes
	c.nodes = make([]*node.Node, len(nodes))
	c.mu.Unlock()
	var wg sync.WaitGroup
	for i, n := range nodes {
		if n == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), nodetest.Timeout)
			defer cancel()
			if err := n.Shutdown(ctx); err != nil {
				t.Errorf("clustertest: stop node %d: %v", i+1, err)
			}
		}()
	}
	wg.Wait()
}
