package loadtest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/parley-im/parley/cluster"
	"github.com/parley-im/parley/internal/faultproxy"
	"github.com/parley-im/parley/router/link"
)

// parleydCluster is a local cluster of Config.SpawnCluster parleyd
// processes (node ids 1 … n) for one run: an etcd member embedded in this
// process, a cluster CA and node certificates, and each node's data in one
// temporary directory that stop removes. The nodes listen on free
// loopback ports.
//
// A run with partitions or etcd restarts (Config.Partitions,
// EtcdRestarts) puts fault proxies in the nodes' way: each node reaches
// etcd through a proxy of its own, and each node dials each peer's link
// through a proxy for that ordered pair (parleyd --link-dial), so that
// cutting the proxies of one node cuts it off from etcd and the others
// while its clients keep their connections. The nodes' link listeners
// then have fixed ports, which the proxies forward to across restarts.
//
// Threading: a parleydCluster belongs to the coordinator's goroutine, or
// to the fault loop while a step's During runs.
type parleydCluster struct {
	dir     string
	etcd    *cluster.Etcd
	etcdCfg cluster.EtcdConfig // what starts etcd again on its data and ports
	nodes   []*parleydProc     // node id i+1 at i

	etcdProxies []*faultproxy.Proxy   // node i's way to etcd at i; nil without faults
	links       [][]*faultproxy.Proxy // links[i][j]: node i's way to node j's link; nil at i == j
}

// clusterLeaseTTL is the spawned nodes' etcd lease (parleyd --lease-ttl):
// the shortest parleyd takes, so that a killed node's shards are given up
// soon.
const clusterLeaseTTL = 2 * time.Second

// spawnCluster starts cfg.SpawnCluster parleyd nodes from cfg.Parleyd
// with cfg.SpawnShards shards in all and waits until every one is ready,
// which it is once the cluster placed every shard (--min-nodes is all of
// them).
func spawnCluster(ctx context.Context, cfg *Config) (*parleydCluster, error) {
	dir, err := os.MkdirTemp("", "parley-load-cluster-")
	if err != nil {
		return nil, fmt.Errorf("loadtest: %w", err)
	}
	pc := &parleydCluster{dir: dir}
	ok := false
	defer func() {
		if !ok {
			pc.stop()
		}
	}()
	ca := filepath.Join(dir, "ca")
	if err := link.CreateCA(ca, time.Now()); err != nil {
		return nil, fmt.Errorf("loadtest: cluster CA: %w", err)
	}
	pc.etcdCfg = cluster.EtcdConfig{Dir: filepath.Join(dir, "etcd"), LogLevel: slog.LevelWarn}
	pc.etcd, err = cluster.StartEtcd(pc.etcdCfg)
	if err != nil {
		return nil, fmt.Errorf("loadtest: %w", err)
	}
	pc.etcdCfg.ClientAddr, pc.etcdCfg.PeerAddr = pc.etcd.ClientAddr(), pc.etcd.PeerAddr()
	n := cfg.SpawnCluster
	nodeArgs := make([][]string, n)
	for i := range nodeArgs {
		nodeArgs[i] = []string{"--etcd", pc.etcd.Endpoints()[0], "--link-listen", "127.0.0.1:0"}
	}
	if cfg.Partitions > 0 || cfg.EtcdRestarts > 0 {
		if nodeArgs, err = pc.addProxies(n); err != nil {
			return nil, err
		}
	}
	pc.nodes = make([]*parleydProc, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		id := strconv.Itoa(i + 1)
		nodeDir := filepath.Join(dir, "node"+id)
		certs := filepath.Join(dir, "certs"+id)
		if err := link.IssueNode(ca, certs, uint32(i+1), time.Now()); err != nil {
			return nil, fmt.Errorf("loadtest: node %s certificate: %w", id, err)
		}
		extra := append([]string{
			"--cluster", "--node-id", id, "--cluster-certs", certs,
			"--lease-ttl", clusterLeaseTTL.String(), "--min-nodes", strconv.Itoa(n),
		}, nodeArgs[i]...)
		wg.Add(1)
		go func() { // together: none is ready before all have joined
			defer wg.Done()
			pc.nodes[i], errs[i] = startParleyd(ctx, cfg, nodeDir, extra)
			if errs[i] != nil {
				errs[i] = fmt.Errorf("node %s: %w", id, errs[i])
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if err := pc.waitLinks(ctx); err != nil {
		return nil, err
	}
	ok = true
	return pc, nil
}

// addProxies starts the fault proxies of a cluster of n nodes (see
// parleydCluster) and returns each node's etcd and link flags.
func (pc *parleydCluster) addProxies(n int) ([][]string, error) {
	linkAddrs := make([]string, n)
	for i := range linkAddrs {
		var err error
		if linkAddrs[i], err = cluster.FreeAddr(); err != nil {
			return nil, fmt.Errorf("loadtest: %w", err)
		}
	}
	args := make([][]string, n)
	pc.etcdProxies = make([]*faultproxy.Proxy, n)
	pc.links = make([][]*faultproxy.Proxy, n)
	for i := range n {
		p, err := faultproxy.Listen("127.0.0.1:0", pc.etcd.ClientAddr())
		if err != nil {
			return nil, fmt.Errorf("loadtest: etcd proxy: %w", err)
		}
		pc.etcdProxies[i] = p
		pc.links[i] = make([]*faultproxy.Proxy, n)
		var dial []string
		for j := range n {
			if j == i {
				continue
			}
			if pc.links[i][j], err = faultproxy.Listen("127.0.0.1:0", linkAddrs[j]); err != nil {
				return nil, fmt.Errorf("loadtest: link proxy: %w", err)
			}
			dial = append(dial, fmt.Sprintf("%d=%s", j+1, pc.links[i][j].Addr()))
		}
		args[i] = []string{"--etcd", "http://" + p.Addr(), "--link-listen", linkAddrs[i], "--link-dial", strings.Join(dial, ",")}
	}
	return args, nil
}

// proxies returns every fault proxy of the cluster.
func (pc *parleydCluster) proxies() []*faultproxy.Proxy {
	out := slices.Clone(pc.etcdProxies)
	for _, row := range pc.links {
		for _, p := range row {
			if p != nil {
				out = append(out, p)
			}
		}
	}
	return out
}

// linkWait bounds the wait for the nodes' links through the proxies.
const linkWait = 30 * time.Second

// waitLinks waits until every node dialled every peer through its pair's
// proxy (none without proxies): a node that dialled the peer's registered
// address instead would not be cut off by a partition.
func (pc *parleydCluster) waitLinks(ctx context.Context) error {
	deadline := time.Now().Add(linkWait)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		missing := 0
		for _, row := range pc.links {
			for _, p := range row {
				if p != nil && p.Status().Open == 0 {
					missing++
				}
			}
		}
		if missing == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("loadtest: %d node links not through their proxies after %v", missing, linkWait)
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// partition cuts node i off from etcd and from the other nodes, both
// ways, or (cut false) heals that; its clients keep their connections.
func (pc *parleydCluster) partition(i int, cut bool) {
	ps := []*faultproxy.Proxy{pc.etcdProxies[i]}
	for j := range pc.nodes {
		if j != i {
			ps = append(ps, pc.links[i][j], pc.links[j][i])
		}
	}
	for _, p := range ps {
		if cut {
			p.Partition(faultproxy.Both)
		} else {
			p.Heal()
		}
	}
}

// stopEtcd stops the etcd member quickly: its proxies reset every
// connection and refuse new ones first (etcd's Close waits for the
// clients' streams otherwise).
func (pc *parleydCluster) stopEtcd() {
	for _, p := range pc.etcdProxies {
		p.Refuse(true)
		p.Reset()
	}
	pc.etcd.Close()
	pc.etcd = nil
}

// startEtcd starts the etcd member again on its data directory and
// ports, and lets the nodes reach it.
func (pc *parleydCluster) startEtcd() error {
	e, err := cluster.StartEtcd(pc.etcdCfg)
	if err != nil {
		return fmt.Errorf("loadtest: restart etcd: %w", err)
	}
	pc.etcd = e
	for _, p := range pc.etcdProxies {
		p.Refuse(false)
	}
	return nil
}

// leases returns, through cli, the lease of each node's registration in
// etcd (node id i+1 at i), 0 for a node not registered. A node that
// registers again (its lease expired) has another lease.
func (pc *parleydCluster) leases(ctx context.Context, cli *clientv3.Client) ([]int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	byID, err := cluster.MemberLeases(ctx, cli, "")
	if err != nil {
		return nil, fmt.Errorf("loadtest: %w", err)
	}
	out := make([]int64, len(pc.nodes))
	for id, lease := range byID {
		if id >= 1 && int(id) <= len(out) {
			out[id-1] = int64(lease)
		}
	}
	return out, nil
}

// errNotYet is waitLease's error when the deadline passed.
var errNotYet = errors.New("not by the deadline")

// waitLease waits until node k's lease, as leases reads it, satisfies ok,
// or the deadline passes (errNotYet).
func (pc *parleydCluster) waitLease(ctx context.Context, cli *clientv3.Client, k int, deadline time.Time, ok func(int64) bool) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if ls, err := pc.leases(ctx, cli); err == nil && ok(ls[k]) {
			return nil
		}
		if !time.Now().Before(deadline) {
			return errNotYet
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// endpoints returns the nodes' client endpoints, node 1's first.
func (pc *parleydCluster) endpoints() []Endpoint {
	out := make([]Endpoint, len(pc.nodes))
	for i, p := range pc.nodes {
		out[i] = Endpoint{Addr: p.info.Addr, Fingerprint: p.info.Fingerprint}
	}
	return out
}

// admins returns the nodes' admin endpoints.
func (pc *parleydCluster) admins() []string {
	out := make([]string, len(pc.nodes))
	for i, p := range pc.nodes {
		out[i] = p.info.Admin
	}
	return out
}

// accepted returns the client connections each node accepted
// (parley_connections_accepted_total), -1 for a node whose admin
// endpoint did not answer.
func (pc *parleydCluster) accepted(ctx context.Context, a *adminClient) []int64 {
	out := make([]int64, len(pc.nodes))
	for i, p := range pc.nodes {
		out[i] = -1
		if m, err := a.metricsOf(ctx, "http://"+p.info.Admin); err == nil {
			out[i] = int64(m["parley_connections_accepted_total"])
		}
	}
	return out
}

// stop ends every node still running gracefully, all at once (a node
// waits for the others' links while it stops), then etcd, and removes
// the cluster's directory.
func (pc *parleydCluster) stop() {
	for _, p := range pc.proxies() { // a run that ended mid-fault
		p.Heal()
		p.Refuse(false)
	}
	var wg sync.WaitGroup
	for _, p := range pc.nodes {
		if p != nil {
			wg.Add(1)
			go func() { defer wg.Done(); p.stop() }()
		}
	}
	wg.Wait()
	for _, p := range pc.proxies() {
		_ = p.Close()
	}
	if pc.etcd != nil {
		pc.etcd.Close()
	}
	_ = os.RemoveAll(pc.dir)
}
