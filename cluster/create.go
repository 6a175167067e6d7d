package cluster

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrShardCount means a cluster exists with another shard count than the
// one asked for: the count is fixed at creation.
var ErrShardCount = errors.New("cluster: the cluster has another shard count")

// Create writes a new cluster's fixed shard count, its slot map
// (SlotMap(shards)) and placement epoch 0 under prefix ("" means
// DefaultPrefix), in one transaction that succeeds only if no count is
// written yet. Creating again with the same count does nothing and
// returns nil; with another count it returns an error wrapping
// ErrShardCount.
func Create(ctx context.Context, cli *clientv3.Client, prefix string, shards int) error {
	if shards <= 0 || shards > MaxShards {
		return fmt.Errorf("cluster: %d shards, want 1 to %d", shards, MaxShards)
	}
	if prefix == "" {
		prefix = DefaultPrefix
	}
	k := keys{prefix}
	resp, err := cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(k.shards()), "=", 0)).
		Then(
			clientv3.OpPut(k.shards(), strconv.Itoa(shards)),
			clientv3.OpPut(k.slots(), string(encodeSlots(SlotMap(shards)))),
			clientv3.OpPut(k.epoch(), "0"),
		).
		Else(clientv3.OpGet(k.shards())).
		Commit()
	if err != nil {
		return fmt.Errorf("cluster: create: %w", err)
	}
	if resp.Succeeded {
		return nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) != 1 {
		return fmt.Errorf("cluster: create: shard count vanished")
	}
	n, err := decodeCount(kvs[0].Value)
	if err != nil {
		return err
	}
	if n != shards {
		return fmt.Errorf("%w: %d, not %d", ErrShardCount, n, shards)
	}
	return nil
}

// RequestMove asks the controller to place shard on node: the operator's
// command once the shard's directory was attached to that node (shards do
// not copy themselves in this step). The controller applies the request
// with a new epoch once the shard's current node is not live (stop it
// first; its lease ends when it stops or expires), whether or not the
// target is live, then deletes it. prefix "" means DefaultPrefix.
func RequestMove(ctx context.Context, cli *clientv3.Client, prefix string, shard uint16, node uint32) error {
	if node == 0 {
		return errors.New("cluster: move to node 0")
	}
	if prefix == "" {
		prefix = DefaultPrefix
	}
	k := keys{prefix}
	resp, err := cli.Get(ctx, k.shards())
	if err != nil {
		return fmt.Errorf("cluster: move: %w", err)
	}
	if len(resp.Kvs) != 1 {
		return errors.New("cluster: move: no cluster under this prefix")
	}
	n, err := decodeCount(resp.Kvs[0].Value)
	if err != nil {
		return err
	}
	if int(shard) >= n {
		return fmt.Errorf("cluster: move: shard %d of %d", shard, n)
	}
	if _, err := cli.Put(ctx, k.move(shard), strconv.FormatUint(uint64(node), 10)); err != nil {
		return fmt.Errorf("cluster: move: %w", err)
	}
	return nil
}

// MemberLeases returns the etcd lease of each node registered under
// prefix ("" means DefaultPrefix), by node id: a node that registers again
// (its lease expired, or it restarted) holds another lease. For tools and
// tests that watch registrations come and go.
func MemberLeases(ctx context.Context, cli *clientv3.Client, prefix string) (map[uint32]clientv3.LeaseID, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	k := keys{prefix}
	resp, err := cli.Get(ctx, k.nodes(), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("cluster: read the members' leases: %w", err)
	}
	out := make(map[uint32]clientv3.LeaseID, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		id, err := k.nodeOf(string(kv.Key))
		if err != nil {
			return nil, err
		}
		out[id] = clientv3.LeaseID(kv.Lease)
	}
	return out, nil
}
