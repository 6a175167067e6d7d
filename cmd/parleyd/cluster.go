package main

import (
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/parley-im/parley/internal/node"
)

// clusterFlags are the flags of `parleyd --cluster` (docs/cluster.md,
// "Running a cluster"), each with its environment variable.
type clusterFlags struct {
	on        *bool
	id        *string
	etcd      *string
	embed     *string
	embedAddr *string
	link      *string
	advertise *string
	linkDial  *string
	certs     *string
	leaseTTL  *time.Duration
	minNodes  *int
}

// addClusterFlags defines the cluster flags on fs; a bad PARLEY_LEASE_TTL
// or PARLEY_MIN_NODES is a one-line error naming the variable and its
// value.
func addClusterFlags(fs *flag.FlagSet) (*clusterFlags, error) {
	ttl, err := envDuration("PARLEY_LEASE_TTL", 5*time.Second)
	if err != nil {
		return nil, err
	}
	minNodes, err := envInt("PARLEY_MIN_NODES", 1)
	if err != nil {
		return nil, err
	}
	return &clusterFlags{
		on:        fs.Bool("cluster", env("PARLEY_CLUSTER", "") == "1", "join a cluster (docs/cluster.md): needs --node-id, --link-listen and --etcd or --etcd-embed"),
		id:        fs.String("node-id", env("PARLEY_NODE_ID", ""), "this node's `id` in the cluster, 1 or more; its link certificate names it"),
		etcd:      fs.String("etcd", env("PARLEY_ETCD", ""), "comma-separated etcd `endpoints` (http://host:2379,…)"),
		embed:     fs.String("etcd-embed", env("PARLEY_ETCD_EMBED", ""), "run an embedded single-member etcd with its data in this `directory` (an all-in-one start for trying a cluster)"),
		embedAddr: fs.String("etcd-embed-listen", env("PARLEY_ETCD_EMBED_LISTEN", "127.0.0.1:2379"), "client `address` of the embedded etcd"),
		link:      fs.String("link-listen", env("PARLEY_LINK_LISTEN", ""), "node link `address` (host:port) the other nodes connect to"),
		advertise: fs.String("link-advertise", env("PARLEY_LINK_ADVERTISE", ""), "node link `address` registered for the other nodes (default: the one --link-listen listens on)"),
		linkDial:  fs.String("link-dial", env("PARLEY_LINK_DIAL", ""), "comma-separated `id=host:port` link addresses to dial for those peers instead of the ones they registered (a fault proxy per pair of nodes, or nodes that reach each other at other addresses)"),
		certs:     fs.String("cluster-certs", env("PARLEY_CLUSTER_CERTS", ""), "`directory` of the node's link certificate (parleyd cluster-cert issue --out); default <data>/cluster"),
		leaseTTL:  fs.Duration("lease-ttl", ttl, "etcd lease of the node: the others take it for dead this long after it stops"),
		minNodes:  fs.Int("min-nodes", minNodes, "nodes that must be live before the shards are first placed"),
	}, nil
}

// config returns the node's cluster configuration, nil without --cluster,
// or a one-line error for a bad combination.
func (f *clusterFlags) config(fs *flag.FlagSet) (*node.ClusterConfig, error) {
	given := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { given[fl.Name] = true })
	if !*f.on {
		for _, name := range []string{"node-id", "etcd", "etcd-embed", "link-listen", "link-advertise", "link-dial", "cluster-certs", "lease-ttl", "min-nodes"} {
			if given[name] {
				return nil, fmt.Errorf("--%s needs --cluster", name)
			}
		}
		return nil, nil
	}
	id, err := strconv.ParseUint(*f.id, 10, 32)
	switch {
	case *f.id == "":
		return nil, fmt.Errorf("--cluster needs --node-id")
	case err != nil || id == 0:
		return nil, fmt.Errorf("--node-id %q: want a number from 1 to %d", *f.id, uint32(1<<32-1))
	case *f.link == "":
		return nil, fmt.Errorf("--cluster needs --link-listen")
	case (*f.etcd == "") == (*f.embed == ""):
		return nil, fmt.Errorf("--cluster needs one of --etcd and --etcd-embed")
	case *f.leaseTTL < 2*time.Second:
		return nil, fmt.Errorf("--lease-ttl %v: want at least 2s", *f.leaseTTL)
	case *f.minNodes < 1:
		return nil, fmt.Errorf("--min-nodes %d: want 1 or more", *f.minNodes)
	}
	peers, err := parseLinkDial(*f.linkDial)
	if err != nil {
		return nil, err
	}
	c := &node.ClusterConfig{
		ID: uint32(id), LinkAddr: *f.link, Advertise: *f.advertise, PeerLinks: peers, CertDir: *f.certs,
		LeaseTTL: *f.leaseTTL, MinNodes: *f.minNodes,
	}
	if *f.embed != "" {
		c.EtcdDir, c.EtcdAddr = *f.embed, *f.embedAddr
	}
	for _, e := range strings.Split(*f.etcd, ",") {
		if e = strings.TrimSpace(e); e != "" {
			c.Etcd = append(c.Etcd, e)
		}
	}
	return c, nil
}

// parseLinkDial parses --link-dial: comma-separated id=host:port pairs,
// nil for none.
func parseLinkDial(s string) (map[uint32]string, error) {
	var out map[uint32]string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		idText, addr, ok := strings.Cut(part, "=")
		id, err := strconv.ParseUint(idText, 10, 32)
		if !ok || err != nil || id == 0 || addr == "" {
			return nil, fmt.Errorf("--link-dial %q: want id=host:port, the id 1 or more", part)
		}
		if out == nil {
			out = map[uint32]string{}
		}
		out[uint32(id)] = addr
	}
	return out, nil
}
