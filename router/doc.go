// Package router decides where a user's state lives and moves ops there:
// user, group or phone number → slot → shard (→ node, once the cluster
// places shards on nodes). storage keeps only the pure hashes its keys need
// (SlotOfUser, SlotOfPhone, LinkCodeSlot); which shard runs an op is
// decided here (SlotOf, then the slot map). The slot → shard map is fixed
// when the node's data is created: equal contiguous ranges of the 4096
// slots (what moves between nodes in a cluster is a whole shard, never a
// slot; docs/cluster.md). A local shard gets an op by a function call
// (Shard.Submit); the cross-node link that carries ops to shards of other
// nodes plugs in at the same place.
//
// The router is also the shards' storage.Conns: it resolves the
// connection refs in ops to endpoints, a ref of this node through the
// server's registry (AttachConns), a ref of another node to a proxy over
// the link.
//
// In a cluster (AttachCluster) the router sends ops for shards of other
// nodes over the node link as pb.NodeFrames, resolves refs of other nodes
// to storage.RemoteEndpoints, and Deliver applies what other nodes sent.
//
// Threading: a Router is set up by New, AttachCluster, AttachConns and
// Attach before the shards start, then safe for concurrent use (its
// placement is replaced atomically by SetPlacement); Submit, Forward,
// Endpoint and Deliver never block.
package router
