// Package cluster keeps a Parley cluster's membership and shard placement
// in etcd: the fixed shard count and slot map written once when the
// cluster is created, each node's addresses under a lease (the lease is the
// node's liveness), the shard → node placement with its epoch, written only
// by the controller elected through etcd, and the fence that tells a node
// whether it may still commit for a shard. Everything that needs
// consensus, election or failure detection is etcd's; this package only
// names keys, guards writes with transactions and reads leases.
//
// Keys, under Config.Prefix (default "/parley/"):
//
//	shards              decimal shard count          written once (create txn)
//	slots               NumSlots × uint16 BE         shard of each slot, written once
//	epoch               decimal uint64               last placement epoch, 0 at creation
//	nodes/<id %010d>    JSON Member                  attached to the node's lease
//	place/<shard %05d>  JSON Placement               controller only, leader-guarded txn
//	moves/<shard %05d>  decimal node id              operator's request; the controller
//	                                                 applies it, then deletes it
//	leader/…            concurrency.Election         the controller's election
//
// Every placement change is one transaction that is conditional on the
// controller's leader key still existing at its creation revision and on
// the epoch key not having changed since the controller read it; it
// increments "epoch" and writes the new epoch into every placement it
// changes. A deposed controller's write therefore fails (ErrNotLeader), and
// epochs only grow.
//
// A Node's fence is open for a shard while (a) the placement the node last
// saw names the node for that shard and (b) the node's lease is alive as
// the node itself can tell: the send time of the last successful keepalive
// (or grant) plus the lease's TTL minus a margin, read on a monotonic clock.
// When (b) fails only because etcd cannot be reached, reports fed in by the
// router (Fence.ReportPeer: peers saying over the node links that they
// cannot reach etcd either) keep the fence open while a strict majority of
// the other members say so: etcd down for everyone means nobody can
// reassign a shard, so chat keeps working. A lease etcd says is gone closes
// the fence whatever peers say. docs/cluster.md describes the failure model.
//
// Threading: Etcd, Node, Controller and Watcher run their own goroutines
// and their methods are safe for concurrent use. State values are
// immutable once delivered. Fence.Valid reads atomics only and may be
// called on any hot path (a shard actor's commit cycle).
package cluster
