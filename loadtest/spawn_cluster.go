package loadtest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/parley-im/parley/cluster"
	"github.com/parley-im/parley/router/link"
)

// parleydCluster is a local cluster of Config.SpawnCluster parleyd
// processes (node ids 1 … n) for one run: an etcd member embedded in this
// process, a cluster CA and node certificates, and each node's data in one
// temporary directory that stop removes. The nodes listen on free
// loopback ports.
//
// Threading: a parleydCluster belongs to the coordinator's goroutine.
type parleydCluster struct {
	dir   string
	etcd  *cluster.Etcd
	nodes []*parleydProc // node id i+1 at i
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
	pc.etcd, err = cluster.StartEtcd(cluster.EtcdConfig{Dir: filepath.Join(dir, "etcd"), LogLevel: slog.LevelWarn})
	if err != nil {
		return nil, fmt.Errorf("loadtest: %w", err)
	}
	n := cfg.SpawnCluster
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
		extra := []string{
			"--cluster", "--node-id", id, "--etcd", pc.etcd.Endpoints()[0],
			"--link-listen", "127.0.0.1:0", "--cluster-certs", certs,
			"--lease-ttl", clusterLeaseTTL.String(), "--min-nodes", strconv.Itoa(n),
		}
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
	ok = true
	return pc, nil
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
	var wg sync.WaitGroup
	for _, p := range pc.nodes {
		if p != nil {
			wg.Add(1)
			go func() { defer wg.Done(); p.stop() }()
		}
	}
	wg.Wait()
	if pc.etcd != nil {
		pc.etcd.Close()
	}
	_ = os.RemoveAll(pc.dir)
}
