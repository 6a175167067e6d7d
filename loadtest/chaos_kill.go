package loadtest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"syscall"
	"time"
)

// A chaos run's faults: Kills times during the traffic, at moments drawn
// from the seed, the coordinator either kills parleyd (or a spawned
// cluster's node) with SIGKILL or stops it with SIGTERM (a graceful
// shutdown: GoAway to every client, then the shards commit and close),
// and starts it again on the same data directory and ports. On a spawned
// cluster it also partitions a node (Partitions times) and restarts etcd
// (EtcdRestarts times), at moments of their own from the seed. The
// faults run one at a time: one that falls due while another lasts waits
// for it.

// errParleydExit is returned when parleyd exits on its own during a
// chaos run: a crash, which is a finding.
var errParleydExit = errors.New("loadtest: parleyd exited on its own")

// gracefulShare is the share of the faults that are graceful restarts
// (SIGTERM) rather than SIGKILL.
const gracefulShare = 0.3

// gracefulStopTimeout bounds a graceful stop: parleyd gives itself 10 s.
const gracefulStopTimeout = 30 * time.Second

// faultKind is what a fault does.
type faultKind uint8

// Fault kinds.
const (
	faultKill      faultKind = iota // SIGKILL or SIGTERM, then start again
	faultPartition                  // cut a node off from etcd and the others, then heal
	faultEtcd                       // stop etcd, then start it again
)

// fault is one planned fault: at offset At into the traffic, a kill
// (SIGTERM if Graceful, else SIGKILL), a partition or an etcd restart, of
// node index Node for the first two on a cluster.
type fault struct {
	At       time.Duration
	Graceful bool
	Kind     faultKind
	Node     int
}

// planFaults draws n faults from seed, at moments spread at random over
// [lead, window-tail) of the traffic, in time order. The same seed gives
// the same plan.
func planFaults(seed int64, n int, window time.Duration) []fault {
	rng := rand.New(rand.NewPCG(uint64(seed), 0xfa17))
	lead, tail := min(window/10, time.Second), min(window/10, 2*time.Second)
	span := max(window-lead-tail, time.Millisecond)
	fs := make([]fault, n)
	for i := range fs {
		fs[i] = fault{At: lead + time.Duration(rng.Int64N(int64(span))), Graceful: rng.Float64() < gracefulShare}
	}
	slices.SortFunc(fs, func(a, b fault) int { return int(a.At - b.At) })
	return fs
}

// chaosFaults is what the fault loop did, for the result.
type chaosFaults struct {
	kills, graceful int
	slowStops       int           // graceful stops that needed SIGKILL after the timeout
	badExits        int           // graceful stops that exited non-zero
	downMax         time.Duration // longest from the signal to the ready line
	downTotal       time.Duration

	partitions int
	leaseLost  int           // partitions during which the node's lease expired in etcd
	leaseGone  time.Duration // longest from a cut to the node's record gone from etcd
	backMax    time.Duration // longest from a heal to the node registered again
	cutOff     []span        // each partition, from the cut to the heal

	etcdRestarts int
	etcdDownMax  time.Duration // longest from the stop to etcd serving again
	reregistered int           // nodes whose lease did not survive an etcd restart
	etcdDown     []span        // each restart, from the stop to etcd serving again
}

// span is a stretch of the run, as offsets from its start.
type span struct{ from, to time.Duration }

// planChaosFaults draws a chaos run's faults from seed, in time order:
// kills (planFaults, struck nodes from faultNodes), partitions of nodes
// lasting partitionFor and etcd restarts lasting etcdDownFor, the last
// two each from a generator of their own, over a cluster of nodes (1: a
// single parleyd, kills only). A plan of kills alone is what it was
// before partitions and etcd restarts existed. Otherwise the moments are
// drawn over the window less the partitions' and restarts' lengths, and
// each fault is moved later by the lengths of those before it, so that
// run one at a time they end within the window, while the traffic runs.
func planChaosFaults(seed int64, kills, partitions, etcd, nodes int, partitionFor, etcdDownFor, window time.Duration) []fault {
	long := time.Duration(partitions)*partitionFor + time.Duration(etcd)*etcdDownFor
	draw := max(window-long, window/4)
	plan := planFaults(seed, kills, draw)
	for i, n := range faultNodes(seed, len(plan), nodes) {
		plan[i].Node = n
	}
	others := func(stream uint64, n int, kind faultKind) {
		rng := rand.New(rand.NewPCG(uint64(seed), stream))
		for _, f := range planFaults(int64(rng.Uint64()), n, draw) {
			plan = append(plan, fault{At: f.At, Kind: kind, Node: rng.IntN(max(nodes, 1))})
		}
	}
	others(0xc07, partitions, faultPartition)
	others(0xe7cd, etcd, faultEtcd)
	slices.SortStableFunc(plan, func(a, b fault) int { return cmp.Compare(a.At, b.At) })
	var before time.Duration
	for i := range plan {
		plan[i].At += before
		switch plan[i].Kind {
		case faultPartition:
			before += partitionFor
		case faultEtcd:
			before += etcdDownFor
		}
	}
	return plan
}

// faultNodes draws, from seed, which node of a cluster of n each of k
// faults strikes (node index 0 … n-1); nil for one node. It has a
// generator of its own so that a seed's single-node plan stays what it
// was.
func faultNodes(seed int64, k, n int) []int {
	if n <= 1 {
		return nil
	}
	rng := rand.New(rand.NewPCG(uint64(seed), 0x40de))
	out := make([]int, k)
	for i := range out {
		out[i] = rng.IntN(n)
	}
	return out
}

// faultWait bounds the waits of a fault for etcd to see a node again.
const faultWait = 30 * time.Second

// faultLoop carries out the fault plan against the spawned parleyd, or a
// spawned cluster, while the workers run the traffic step; it returns
// when every fault is done and the cluster whole again (every node up and
// registered in etcd). A fault that falls due while the previous one
// lasts waits for it.
func (c *coordinator) faultLoop(ctx context.Context) error {
	nodes := 1
	if c.cluster != nil {
		nodes = len(c.cluster.nodes)
	}
	plan := planChaosFaults(c.cfg.Seed, c.cfg.Kills, c.cfg.Partitions, c.cfg.EtcdRestarts, nodes, c.cfg.PartitionFor, c.cfg.EtcdDownFor, c.cfg.Duration)
	start := time.Now()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for i, f := range plan {
		p, who := c.parleyd, "parleyd"
		if c.cluster != nil {
			p, who = c.cluster.nodes[f.Node], fmt.Sprintf("node %d", f.Node+1)
		}
		timer.Reset(max(0, time.Until(start.Add(f.At))))
		select {
		case <-timer.C:
		case <-ctx.Done():
			return ctx.Err()
		case <-p.exited:
			return fmt.Errorf("%w (%v); its last lines:\n%s", errParleydExit, p.exit, p.tail)
		}
		at := time.Since(start)
		var err error
		switch f.Kind {
		case faultKill:
			err = c.kill1(ctx, p, who, f.Graceful, i, len(plan), at)
		case faultPartition:
			err = c.partition1(ctx, f.Node, i, len(plan), at)
		case faultEtcd:
			err = c.restartEtcd(ctx, i, len(plan), at)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// kill1 stops p with SIGKILL (or SIGTERM if graceful) and starts it again.
func (c *coordinator) kill1(ctx context.Context, p *parleydProc, who string, graceful bool, i, n int, at time.Duration) error {
	sig, how := syscall.SIGKILL, "SIGKILL"
	if graceful {
		sig, how = syscall.SIGTERM, "SIGTERM"
	}
	down := time.Now()
	if ok, err := p.stopWith(sig, gracefulStopTimeout); graceful {
		c.faults.graceful++
		if !ok {
			c.faults.slowStops++
			c.cfg.Logger.Warn("parleyd did not stop within the timeout after SIGTERM; killed", "timeout", gracefulStopTimeout)
		} else if err != nil {
			c.faults.badExits++
			c.cfg.Logger.Warn("parleyd exited with an error after SIGTERM", "exit", err, "last_lines", p.tail.String())
		}
	} else {
		c.faults.kills++
	}
	if err := p.start(ctx); err != nil {
		return err
	}
	took := time.Since(down)
	c.faults.downTotal += took
	c.faults.downMax = max(c.faults.downMax, took)
	c.cfg.Logger.Info("fault", "n", i+1, "signal", how, "target", who, "at", at, "down", took)
	c.say("%6.1fs fault %d/%d: %s %s at %.1fs into the traffic; up again after %v",
		time.Since(c.start).Seconds(), i+1, n, how, who, at.Seconds(), took.Round(time.Millisecond))
	return nil
}

// partition1 cuts node k off from etcd and the other nodes for
// PartitionFor, then heals it, and waits until the node is registered in
// etcd again if its lease expired meanwhile.
func (c *coordinator) partition1(ctx context.Context, k, i, n int, at time.Duration) error {
	pc := c.cluster
	cli, err := pc.etcd.Client(nil)
	if err != nil {
		return fmt.Errorf("loadtest: %w", err)
	}
	defer cli.Close()
	before, err := pc.leases(ctx, cli)
	if err != nil {
		return err
	}
	cut := time.Now()
	pc.partition(k, true)
	healAt := cut.Add(c.cfg.PartitionFor)
	expired := pc.waitLease(ctx, cli, k, healAt, func(l int64) bool { return l != before[k] }) == nil
	gone := time.Since(cut)
	select { // the partition's length, whatever etcd did
	case <-time.After(time.Until(healAt)):
	case <-ctx.Done():
		pc.partition(k, false)
		return ctx.Err()
	}
	pc.partition(k, false)
	healed := time.Now()
	c.faults.partitions++
	c.faults.cutOff = append(c.faults.cutOff, span{cut.Sub(c.start), healed.Sub(c.start)})
	what := "its lease lived"
	if expired {
		c.faults.leaseLost++
		c.faults.leaseGone = max(c.faults.leaseGone, gone)
		if err := pc.waitLease(ctx, cli, k, healed.Add(faultWait), func(l int64) bool { return l != 0 }); err != nil {
			return fmt.Errorf("loadtest: node %d not registered in etcd again %v after a partition healed: %w", k+1, faultWait, err)
		}
		back := time.Since(healed)
		c.faults.backMax = max(c.faults.backMax, back)
		what = fmt.Sprintf("its lease expired after %v, registered again %v after the heal", gone.Round(time.Millisecond), back.Round(time.Millisecond))
	}
	c.cfg.Logger.Info("fault", "n", i+1, "kind", "partition", "target", k+1, "at", at, "lease_expired", expired)
	c.say("%6.1fs fault %d/%d: node %d cut off from etcd and the other nodes at %.1fs into the traffic for %v; %s",
		time.Since(c.start).Seconds(), i+1, n, k+1, at.Seconds(), c.cfg.PartitionFor, what)
	return nil
}

// restartEtcd stops etcd, starts it again EtcdDownFor later on its data
// and ports, and waits until every node is registered; it counts the
// nodes that had to register again.
func (c *coordinator) restartEtcd(ctx context.Context, i, n int, at time.Duration) error {
	pc := c.cluster
	cli, err := pc.etcd.Client(nil)
	if err != nil {
		return fmt.Errorf("loadtest: %w", err)
	}
	before, err := pc.leases(ctx, cli)
	_ = cli.Close()
	if err != nil {
		return err
	}
	down := time.Now()
	pc.stopEtcd()
	select {
	case <-time.After(time.Until(down.Add(c.cfg.EtcdDownFor))):
	case <-ctx.Done():
		return ctx.Err()
	}
	if err := pc.startEtcd(); err != nil {
		return err
	}
	up := time.Now()
	c.faults.etcdRestarts++
	c.faults.etcdDownMax = max(c.faults.etcdDownMax, up.Sub(down))
	c.faults.etcdDown = append(c.faults.etcdDown, span{down.Sub(c.start), up.Sub(c.start)})
	if cli, err = pc.etcd.Client(nil); err != nil {
		return fmt.Errorf("loadtest: %w", err)
	}
	defer cli.Close()
	again := 0
	for k := range pc.nodes {
		if err := pc.waitLease(ctx, cli, k, up.Add(faultWait), func(l int64) bool { return l != 0 }); err != nil {
			return fmt.Errorf("loadtest: node %d not registered in etcd %v after etcd restarted: %w", k+1, faultWait, err)
		}
		if now, err := pc.leases(ctx, cli); err == nil && now[k] != before[k] {
			again++
		}
	}
	c.faults.reregistered += again
	c.cfg.Logger.Info("fault", "n", i+1, "kind", "etcd restart", "at", at, "down", up.Sub(down), "registered_again", again)
	c.say("%6.1fs fault %d/%d: etcd stopped at %.1fs into the traffic, serving again after %v; %d of %d nodes registered again",
		time.Since(c.start).Seconds(), i+1, n, at.Seconds(), up.Sub(down).Round(time.Millisecond), again, len(pc.nodes))
	return nil
}
