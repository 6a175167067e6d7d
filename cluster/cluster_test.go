package cluster

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parley-im/parley/internal/faultproxy"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// placedOn counts shards per node.
func placedOn(st *State) map[uint32]int {
	c := map[uint32]int{}
	for _, p := range st.Placement {
		c[p.Node]++
	}
	return c
}

func TestPlacementBalanced(t *testing.T) {
	e := testEtcd(t)
	cli := testClient(t, e)
	if err := Create(testCtx(t), cli, "", 8); err != nil {
		t.Fatal(err)
	}
	// MinNodes 3: a controller that placed shards before the third node
	// joined would leave them all on the first ones, for good.
	testController(t, cli, 1, func(c *ControllerConfig) { c.MinNodes = 3 })
	w := testWatcher(t, cli)
	for id := uint32(1); id <= 3; id++ {
		testNode(t, cli, id, nil)
	}
	st := waitState(t, w, "all shards placed", (*State).AllPlaced)
	count := placedOn(st)
	if !maps.Equal(count, map[uint32]int{1: 3, 2: 3, 3: 2}) && !maps.Equal(count, map[uint32]int{1: 3, 2: 2, 3: 3}) &&
		!maps.Equal(count, map[uint32]int{1: 2, 2: 3, 3: 3}) {
		t.Fatalf("placement by node %v, want 3/3/2 in some order", count)
	}
	for s, p := range st.Placement {
		if p.Epoch == 0 || p.Epoch > st.Epoch {
			t.Fatalf("shard %d at epoch %d, cluster epoch %d", s, p.Epoch, st.Epoch)
		}
	}
}

// TestLeaseRevoked: a node whose lease etcd revoked closes its fence within
// one keepalive interval plus a request timeout, registers again, and keeps
// its shards: the controller moves only what an operator asked it to.
func TestLeaseRevoked(t *testing.T) {
	e := testEtcd(t)
	cli := testClient(t, e)
	if err := Create(testCtx(t), cli, "", 4); err != nil {
		t.Fatal(err)
	}
	testController(t, cli, 1, func(c *ControllerConfig) { c.MinNodes = 2 })
	w := testWatcher(t, cli)
	ev := newEvents()
	held, release := make(chan struct{}), make(chan struct{})
	var releaseOnce sync.Once
	free := func() { releaseOnce.Do(func() { close(release) }) }
	n1 := testNode(t, cli, 1, func(c *NodeConfig) {
		var once sync.Once
		c.hook = func(e nodeEvent) {
			if e == evLost {
				once.Do(func() {
					held <- struct{}{} // the fence is closed now; hold the node here
					<-release
				})
			}
			ev.hook(e)
		}
	})
	t.Cleanup(free) // before node 1 closes: a failing test must not leave it held
	testNode(t, cli, 2, nil)
	before := waitState(t, w, "all shards placed", (*State).AllPlaced)
	mine := before.ShardsOn(1)
	if len(mine) != 2 {
		t.Fatalf("node 1 holds %v", mine)
	}
	if _, err := n1.WaitFor(testCtx(t), (*State).AllPlaced); err != nil {
		t.Fatal(err)
	}
	for _, s := range mine {
		if _, ok := n1.Fence().Valid(s); !ok {
			t.Fatalf("fence closed for shard %d before the revoke", s)
		}
	}

	if _, err := cli.Revoke(testCtx(t), n1.Lease()); err != nil {
		t.Fatal(err)
	}
	// The keepalive interval is 200 ms and so is the request timeout.
	bound := time.NewTimer(2 * time.Second)
	select {
	case <-held:
	case <-bound.C:
		t.Fatal("node 1 did not notice its revoked lease within 2 s")
	}
	bound.Stop()
	for _, s := range mine {
		if _, ok := n1.Fence().Valid(s); ok {
			t.Fatalf("fence open for shard %d after the lease was revoked", s)
		}
	}
	free()
	ev.next(t, evRegistered)
	for _, s := range mine {
		if _, ok := n1.Fence().Valid(s); !ok {
			t.Fatalf("fence closed for shard %d after registering again", s)
		}
	}

	// An operator asks to move one of node 1's shards to node 2: it waits
	// while node 1 is live.
	moved, kept := mine[0], mine[1]
	if err := RequestMove(testCtx(t), cli, "", moved, 2); err != nil {
		t.Fatal(err)
	}
	waitState(t, w, "the move requested", func(st *State) bool { return st.Moves[moved] == 2 })
	n1.Close(context.Background())
	// Node 1 left: the move applies. Once it has, everything else must be
	// as it was: the controller reacted to node 1's leaving, returning
	// and leaving again in order, before the move.
	after := waitState(t, w, "the move applied", func(st *State) bool {
		return len(st.Moves) == 0 && st.Owner(moved).Node == 2
	})
	if after.Live(1) {
		t.Fatal("the move applied while node 1 was live")
	}
	if after.Epoch != before.Epoch+1 || after.Owner(moved).Epoch != after.Epoch {
		t.Fatalf("epoch %d → %d, moved shard at %d", before.Epoch, after.Epoch, after.Owner(moved).Epoch)
	}
	for s := range after.Placement {
		if uint16(s) != moved && after.Placement[s] != before.Placement[s] {
			t.Fatalf("shard %d: %+v → %+v without a move", s, before.Placement[s], after.Placement[s])
		}
	}

	// Node 1 boots again: it serves the shard it kept, at the same epoch,
	// and not the one moved away.
	back := testNode(t, cli, 1, func(c *NodeConfig) { c.Member.Gen = 2 })
	if _, err := back.WaitFor(testCtx(t), func(st *State) bool { return st.Owner(moved).Node == 2 }); err != nil {
		t.Fatal(err)
	}
	if err := back.Fence().Check(kept, before.Owner(kept).Epoch); err != nil {
		t.Fatalf("node 1's fence for the shard it kept: %v", err)
	}
	if err := back.Fence().Check(moved, before.Owner(moved).Epoch); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("node 1's fence for the moved shard: %v", err)
	}
}

// TestControllerFailover: when the leader's session ends, another
// controller takes over, and the deposed one's writes fail.
func TestControllerFailover(t *testing.T) {
	e := testEtcd(t)
	cli := testClient(t, e)
	if err := Create(testCtx(t), cli, "", 4); err != nil {
		t.Fatal(err)
	}
	type lead struct {
		id  uint32
		key string
		rev int64
	}
	leads := make(chan lead, 16)
	hook := func(id uint32) func(*ControllerConfig) {
		return func(c *ControllerConfig) {
			c.hook = func(key string, rev int64) { leads <- lead{id, key, rev} }
		}
	}
	next := func(stop bool) lead {
		t.Helper()
		for {
			select {
			case l := <-leads:
				if (l.key == "") == stop {
					return l
				}
			case <-testCtx(t).Done():
				t.Fatal("no controller took the lead")
			}
		}
	}
	a := testController(t, cli, 1, hook(1))
	first := next(false)
	if first.id != 1 || !a.Leading() {
		t.Fatalf("first leader %d", first.id)
	}
	b := testController(t, cli, 2, hook(2))
	w := testWatcher(t, cli)
	n := testNode(t, cli, 1, nil)
	st := waitState(t, w, "all shards placed", (*State).AllPlaced)

	// Both campaign: b's key waits behind a's.
	waitKeys(t, cli, keys{DefaultPrefix}.leader(), 2)
	if _, err := cli.Revoke(testCtx(t), a.Lease()); err != nil {
		t.Fatal(err)
	}
	second := next(false)
	if second.id != 2 {
		t.Fatalf("after the leader's session ended, controller %d leads", second.id)
	}
	// The deposed controller writes with what it held: refused.
	err := a.commit(testCtx(t), first.key, first.rev, st, []change{{shard: 0, node: 7}}, testLogger())
	if !errors.Is(err, ErrNotLeader) {
		t.Fatalf("deposed controller's write: %v", err)
	}
	// The new one serves move requests (node 1 leaves first).
	n.Close(context.Background())
	if err := RequestMove(testCtx(t), cli, "", 0, 3); err != nil {
		t.Fatal(err)
	}
	after := waitState(t, w, "the move applied", func(s *State) bool { return s.Owner(0).Node == 3 && len(s.Moves) == 0 })
	if after.Epoch != st.Epoch+1 {
		t.Fatalf("epoch %d → %d", st.Epoch, after.Epoch)
	}
	if stopped := next(true); stopped.id != 1 || a.Leading() || !b.Leading() {
		t.Fatalf("controller %d stopped leading; leading: a %v, b %v", stopped.id, a.Leading(), b.Leading())
	}
	// A write with the epoch the new leader already passed is refused as a
	// conflict, not applied.
	err = b.commit(testCtx(t), second.key, second.rev, st, []change{{shard: 1, node: 7}}, testLogger())
	if !errors.Is(err, errConflict) {
		t.Fatalf("write on a stale read: %v", err)
	}
}

// TestEtcdRestart: while etcd is down, a node's fence closes when its own
// reckoning of the lease lapses unless the other nodes report etcd down
// too; when etcd returns, the nodes renew and keep their shards at the
// same epochs.
func TestEtcdRestart(t *testing.T) {
	dir := t.TempDir()
	cfg := testEtcdConfig(dir)
	e, err := StartEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	var e2 *Etcd
	t.Cleanup(func() { // after the clients and nodes: Close waits for their streams
		if !closed {
			e.Close()
		}
		if e2 != nil {
			e2.Close()
		}
	})
	cli := testClient(t, e)
	if err := Create(testCtx(t), cli, "", 4); err != nil {
		t.Fatal(err)
	}
	testController(t, cli, 1, func(c *ControllerConfig) { c.MinNodes = 2 })
	clk := &manualClock{}
	var nodes [2]*Node
	var evs [2]*events
	for i := range nodes {
		evs[i] = newEvents()
		nodes[i] = testNode(t, cli, uint32(i+1), func(c *NodeConfig) {
			c.Mono = clk.Now
			// etcd's Close waits up to 5 s for the clients' streams while
			// refusing new requests: the leases must outlive that.
			c.LeaseTTL = 20 * time.Second
			c.hook = evs[i].hook
		})
	}
	var before *State
	for _, n := range nodes {
		if before, err = n.WaitFor(testCtx(t), (*State).AllPlaced); err != nil {
			t.Fatal(err)
		}
	}
	shardOf := func(id uint32) uint16 { return before.ShardsOn(id)[0] }

	e.Close()
	closed = true
	evs[0].next(t, evFailed)
	evs[1].next(t, evFailed)
	clk.Set(time.Hour) // every reckoning has lapsed; no keepalive can succeed
	for i, n := range nodes {
		if !n.Fence().EtcdDown() {
			t.Fatalf("node %d does not report etcd down", i+1)
		}
		if _, ok := n.Fence().Valid(shardOf(uint32(i + 1))); ok {
			t.Fatalf("node %d's fence open with etcd down and no reports", i+1)
		}
	}
	// The router passes each node's report to the other over the links.
	nodes[0].Fence().ReportPeer(2, nodes[1].Fence().EtcdDown())
	nodes[1].Fence().ReportPeer(1, nodes[0].Fence().EtcdDown())
	for i, n := range nodes {
		if epoch, ok := n.Fence().Valid(shardOf(uint32(i + 1))); !ok || epoch != before.Owner(shardOf(uint32(i+1))).Epoch {
			t.Fatalf("node %d's fence with etcd down for everyone: %d, %v", i+1, epoch, ok)
		}
	}

	cfg.ClientAddr, cfg.PeerAddr = e.ClientAddr(), e.PeerAddr()
	if e2, err = StartEtcd(cfg); err != nil {
		t.Fatal(err)
	}
	for i, n := range nodes {
		evs[i].next(t, evRenewed)
		n.Fence().ReportPeer(uint32(2-i), false)
		s := shardOf(uint32(i + 1))
		if err := n.Fence().Check(s, before.Owner(s).Epoch); err != nil {
			t.Fatalf("node %d after etcd returned: %v", i+1, err)
		}
	}
	w := testWatcher(t, cli)
	now := waitState(t, w, "both nodes live", func(st *State) bool { return st.Live(1) && st.Live(2) })
	if !slices.Equal(now.Placement, before.Placement) || now.Epoch != before.Epoch {
		t.Fatalf("placement after the restart %v at %d, before %v at %d", now.Placement, now.Epoch, before.Placement, before.Epoch)
	}
}

// TestNodeMonotonicClock: the fence follows the node's monotonic clock
// only: it closes when that clock passes the keepalive's send time plus the
// TTL minus the margin, though etcd still holds the lease.
func TestNodeMonotonicClock(t *testing.T) {
	e := testEtcd(t)
	cli := testClient(t, e)
	if err := Create(testCtx(t), cli, "", 1); err != nil {
		t.Fatal(err)
	}
	testController(t, cli, 1, nil)
	clk := &manualClock{}
	clk.Set(time.Minute)
	n := testNode(t, cli, 1, func(c *NodeConfig) {
		c.Mono = clk.Now
		c.LeaseTTL = 30 * time.Second // no keepalive during the test
		c.Margin = 2 * time.Second
		c.KeepAliveEvery = 25 * time.Second
	})
	if _, err := n.WaitFor(testCtx(t), (*State).AllPlaced); err != nil {
		t.Fatal(err)
	}
	clk.Set(time.Minute + 28*time.Second - 1)
	if _, ok := n.Fence().Valid(0); !ok {
		t.Fatal("fence closed before TTL - margin")
	}
	clk.Set(time.Minute + 28*time.Second)
	if _, ok := n.Fence().Valid(0); ok {
		t.Fatal("fence open at TTL - margin")
	}
	if ttl, err := cli.TimeToLive(testCtx(t), n.Lease()); err != nil || ttl.TTL <= 0 {
		t.Fatalf("etcd's lease: %+v, %v", ttl, err)
	}
}

// TestDuplicateNode: a second process with a node's id and boot generation
// is refused; a later boot takes the registration over and the earlier one
// stops.
func TestDuplicateNode(t *testing.T) {
	e := testEtcd(t)
	cli := testClient(t, e)
	ev := newEvents()
	old := testNode(t, cli, 1, func(c *NodeConfig) { c.Member.Gen = 5; c.hook = ev.hook })
	_, err := Join(testCtx(t), NodeConfig{Client: cli, Member: Member{ID: 1, Gen: 5}})
	if !errors.Is(err, ErrDuplicateNode) {
		t.Fatalf("same boot twice: %v", err)
	}
	again := testNode(t, cli, 1, func(c *NodeConfig) { c.Member.Gen = 6 })
	ev.next(t, evSuperseded)
	if _, ok := old.Fence().Valid(0); ok {
		t.Fatal("superseded node's fence open")
	}
	w := testWatcher(t, cli)
	st := waitState(t, w, "node 1 registered", func(st *State) bool { return st.Live(1) })
	if st.Members[1].Gen != 6 {
		t.Fatalf("registered boot %d", st.Members[1].Gen)
	}
	leases, err := MemberLeases(testCtx(t), cli, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(leases) != 1 || leases[1] != again.Lease() || leases[1] == old.Lease() {
		t.Fatalf("MemberLeases = %v, want node 1 under the new boot's lease %x (old %x)", leases, again.Lease(), old.Lease())
	}
}

func TestConfigValidate(t *testing.T) {
	err := (&NodeConfig{LeaseTTL: time.Second, Margin: -1, KeepAliveEvery: -1}).validate()
	for _, want := range []string{"client", "node id 0", "LeaseTTL", "Margin", "KeepAliveEvery"} {
		if err == nil || !contains(err.Error(), want) {
			t.Fatalf("node config error %v lacks %q", err, want)
		}
	}
	err = (&ControllerConfig{MinNodes: -1, SessionTTL: time.Millisecond}).validate()
	for _, want := range []string{"client", "id 0", "MinNodes", "SessionTTL"} {
		if err == nil || !contains(err.Error(), want) {
			t.Fatalf("controller config error %v lacks %q", err, want)
		}
	}
	err = (&EtcdConfig{StartTimeout: -1, TickMs: 100, ElectionMs: 200, Peers: map[string]string{"x": "a:1"}}).validate()
	for _, want := range []string{"data directory", "StartTimeout", "ElectionMs", "missing from Peers", "PeerAddr"} {
		if err == nil || !contains(err.Error(), want) {
			t.Fatalf("etcd config error %v lacks %q", err, want)
		}
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// waitKeys waits until n keys exist under prefix.
func waitKeys(t *testing.T, cli *clientv3.Client, prefix string, n int) {
	t.Helper()
	ctx := testCtx(t)
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	count := int(resp.Count)
	if count >= n {
		return
	}
	wch := cli.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
	for wr := range wch {
		for _, ev := range wr.Events {
			if ev.Type == clientv3.EventTypePut && ev.IsCreate() {
				count++
			} else if ev.Type == clientv3.EventTypeDelete {
				count--
			}
		}
		if count >= n {
			return
		}
	}
	t.Fatalf("%d keys under %s, want %d", count, prefix, n)
}

// TestControllerCloseWithoutEtcd: a controller waiting behind the leader
// stops within its SessionTTL when etcd no longer answers (a node stopping
// during an etcd outage), and its goroutine ends once the client closes.
func TestControllerCloseWithoutEtcd(t *testing.T) {
	e := testEtcd(t)
	cli := testClient(t, e)
	testController(t, cli, 1, nil)
	p, err := faultproxy.Listen("127.0.0.1:0", e.ClientAddr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	far, err := NewClient([]string{"http://" + p.Addr()}, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			_ = far.Close()
		}
	})
	const ttl = 2 * time.Second
	c, err := StartController(ControllerConfig{Client: far, ID: 2, SessionTTL: ttl, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	waitKeys(t, cli, keys{DefaultPrefix}.leader(), 2) // it campaigns behind controller 1
	// A round trip on its connection after its key exists: the answer to
	// the campaign's write went before it, so the campaign waits for the
	// leader's key to go (where a cancel resigns) when the partition comes.
	if _, err := far.Get(testCtx(t), keys{DefaultPrefix}.leader(), clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	p.Partition(faultproxy.Both)

	returned := make(chan time.Duration, 1)
	start := time.Now()
	go func() { c.Close(); returned <- time.Since(start) }()
	select {
	case d := <-returned:
		if d > ttl+time.Second {
			t.Fatalf("Close took %v, want at most SessionTTL %v", d, ttl)
		}
	case <-time.After(waitBound):
		t.Fatal("Close did not return with etcd unreachable")
	}
	_ = far.Close()
	closed = true
	select {
	case <-c.done:
	case <-time.After(waitBound):
		t.Fatal("the controller's goroutine outlived its client")
	}
}

// TestRegisterAnsweredLate: a registration etcd applied but whose answer
// the node did not get in time (and whose lease it then could not revoke
// either) is the node's own, not another process's: when the node
// registers again it takes it over and serves, instead of stopping as if
// a later boot had its id. Seen in cluster chaos (seed 1): a partitioned
// node's registration timed out at the heal, the next attempt found it and
// the node stopped for good, its clients unanswered while it ran.
func TestRegisterAnsweredLate(t *testing.T) {
	e := testEtcd(t)
	cli := testClient(t, e)
	late := &lateAnswers{}
	nodeCli := testClient(t, e)
	nodeCli.KV, nodeCli.Lease = lateKV{nodeCli.KV, late}, lateLease{nodeCli.Lease, late}
	ev := newEvents()
	n := testNode(t, nodeCli, 1, func(c *NodeConfig) { c.hook = ev.hook })

	late.armed.Store(true)
	if _, err := cli.Revoke(testCtx(t), n.Lease()); err != nil {
		t.Fatal(err)
	}
	ev.next(t, evLost)
	// The first registration fails (etcd applied it); the next finds its
	// record.
	deadline := time.NewTimer(waitBound)
	defer deadline.Stop()
	for registered := false; !registered; {
		select {
		case got := <-ev.ch:
			switch got {
			case evRegistered:
				registered = true
			case evSuperseded:
				t.Fatal("the node stopped: it took its own registration, answered late, for another boot's")
			}
		case <-deadline.C:
			t.Fatalf("node 1 not registered again within %v", waitBound)
		}
	}
	if !late.applied.Load() {
		t.Fatal("no registration was answered late: the test did not test")
	}
	w := testWatcher(t, cli)
	waitState(t, w, "node 1 registered", func(st *State) bool { return st.Live(1) })
	leases, err := MemberLeases(testCtx(t), cli, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(leases) != 1 || leases[1] != n.Lease() {
		t.Fatalf("MemberLeases = %v, want node 1 under its lease %x", leases, n.Lease())
	}
}

// lateAnswers makes the next transaction, once armed, apply in etcd and
// then fail as a timed-out request does, and the revoke after it fail too.
type lateAnswers struct {
	armed   atomic.Bool // the next Txn commits, then reports a timeout
	revoke  atomic.Bool // the next Revoke reports a timeout without revoking
	applied atomic.Bool // a Txn was answered late
}

// lateKV is a KV whose transactions lateAnswers may answer late.
type lateKV struct {
	clientv3.KV
	late *lateAnswers
}

func (k lateKV) Txn(ctx context.Context) clientv3.Txn {
	return &lateTxn{Txn: k.KV.Txn(ctx), late: k.late}
}

// lateTxn is a transaction of lateKV.
type lateTxn struct {
	clientv3.Txn
	late *lateAnswers
}

func (x *lateTxn) If(cs ...clientv3.Cmp) clientv3.Txn   { x.Txn = x.Txn.If(cs...); return x }
func (x *lateTxn) Then(ops ...clientv3.Op) clientv3.Txn { x.Txn = x.Txn.Then(ops...); return x }
func (x *lateTxn) Else(ops ...clientv3.Op) clientv3.Txn { x.Txn = x.Txn.Else(ops...); return x }

func (x *lateTxn) Commit() (*clientv3.TxnResponse, error) {
	resp, err := x.Txn.Commit()
	if err == nil && x.late.armed.CompareAndSwap(true, false) {
		x.late.applied.Store(true)
		x.late.revoke.Store(true)
		return nil, context.DeadlineExceeded
	}
	return resp, err
}

// lateLease is a Lease whose revokes lateAnswers may fail.
type lateLease struct {
	clientv3.Lease
	late *lateAnswers
}

func (l lateLease) Revoke(ctx context.Context, id clientv3.LeaseID) (*clientv3.LeaseRevokeResponse, error) {
	if l.late.revoke.CompareAndSwap(true, false) {
		return nil, context.DeadlineExceeded
	}
	return l.Lease.Revoke(ctx, id)
}
