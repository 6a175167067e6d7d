package loadtest

import (
	"context"
	"fmt"
	"time"

	"github.com/parley-im/parley/storage"
)

// chaosScenario is mixed traffic while the node dies: users on every
// shard, each with two or three devices (a primary and linked
// companions), send 1:1 messages to users on other shards and messages to
// groups whose members live on several shards, mark what they got read,
// and group admins add and remove members, while the coordinator kills
// parleyd with SIGKILL or restarts it with SIGTERM, Kills times at moments
// drawn from Seed, on the same data directory and ports. The clients are
// the SDK's (client/): they reconnect, resume from their cursors and
// resend what was not answered with the same cmid.
//
// When the traffic ends, every user sends one more message (so every
// device acknowledges something after the last restart), the run waits
// until everything owed has arrived (or DrainTimeout), reads each group's
// final state, logs every device in again and waits for its Synced, and
// then checks what was acknowledged against what arrived (chaos_verify.go).
// Any violation fails the run; the report lists the first few with their
// ids.
//
// The run's choices (phones, devices, groups, who sends what to whom,
// read marks, membership changes, the moments and kinds of the faults)
// come from Seed and repeat with it; timing does not, so a failure found
// with a seed may need a few runs with it to recur.
var chaosScenario = Scenario{
	Name:    "chaos",
	Summary: "mixed 1:1, group, companion and receipt traffic over --shards shards while parleyd (--parleyd) is killed or restarted --kills times at moments from --seed; checks that every acknowledged message arrived once, in order, everywhere",
	Steps: func(cfg *Config) []Step {
		return []Step{
			{
				Name:   "register",
				Worker: func(ctx context.Context, w *Worker) error { return w.chaos.register(ctx, w) },
				Timed:  true,
			},
			{
				Name:   "link companions",
				Worker: func(ctx context.Context, w *Worker) error { return w.chaos.link(ctx, w) },
				Timed:  true,
			},
			{
				Name:   "create groups",
				Worker: func(ctx context.Context, w *Worker) error { return w.chaos.createGroups(ctx, w) },
				Timed:  true,
			},
			{
				Name:        "traffic and faults",
				Worker:      func(ctx context.Context, w *Worker) error { return w.chaos.traffic(ctx, w) },
				During:      func(ctx context.Context, c *coordinator) error { return c.faultLoop(ctx) },
				Timed:       true,
				MeasureFrom: true,
			},
			{
				Name:      "converge",
				Worker:    func(ctx context.Context, w *Worker) error { return w.chaos.converge(ctx, w) },
				Timed:     true,
				MeasureTo: true,
			},
			{
				Name:   "close",
				Worker: func(_ context.Context, w *Worker) error { w.chaos.closeAll(); return nil },
			},
		}
	},
}

// chaosPlan is who is who in a chaos run; the coordinator and the worker
// make the same one from the Config.
type chaosPlan struct {
	shards  int
	devices []int // per user: its devices, primary included (2 or 3)
	groups  int
	size    int // members of a group when it is created
}

// planChaos makes the plan for cfg (defaults applied): Connections
// devices over users with two and three devices in turn.
func planChaos(cfg *Config) chaosPlan {
	p := chaosPlan{shards: cfg.SpawnShards, groups: cfg.Groups, size: cfg.GroupSize}
	for left := cfg.Connections; left > 0; {
		n := 2 + len(p.devices)%2
		switch {
		case left-n == 1: // no user with one device: the other size
			n = 5 - n
		case left < n:
			n = left
		}
		p.devices = append(p.devices, n)
		left -= n
	}
	return p
}

// users returns the number of users.
func (p chaosPlan) users() int { return len(p.devices) }

// shardOfUser returns the shard user index i is placed on: users go to
// the shards in turn, on purpose.
func (p chaosPlan) shardOfUser(i int) int { return i % p.shards }

// creator returns the user index that creates group g.
func (p chaosPlan) creator(g int) int { return g * p.users() / p.groups }

// initial returns the user indices of group g's members when it is
// created: its creator and the next size-1 users, which are on the next
// shards.
func (p chaosPlan) initial(g int) []int {
	m := make([]int, p.size)
	for k := range m {
		m[k] = (p.creator(g) + k) % p.users()
	}
	return m
}

// check reports a plan the scenario cannot run.
func (p chaosPlan) check() error {
	switch {
	case p.shards < 2:
		return fmt.Errorf("chaos: %d shards: want 2 or more (the point is the paths between shards)", p.shards)
	case p.users() < 4 || p.users() < p.shards:
		return fmt.Errorf("chaos: %d users over %d shards: want at least 4, and one per shard", p.users(), p.shards)
	case p.groups < 1 || p.groups > p.users():
		return fmt.Errorf("chaos: %d groups: want 1 to the %d users", p.groups, p.users())
	case p.size < 3 || p.size > p.users():
		return fmt.Errorf("chaos: group size %d: want 3 to the %d users", p.size, p.users())
	}
	return nil
}

// shardOf returns the shard that owns user or group id on a node with
// shards shards: the id's slot (storage.SlotOfUser), and slots in equal
// contiguous ranges per shard, as router.Attach assigns them.
func shardOf(id uint64, shards int) int {
	return int(storage.SlotOfUser(id)) * shards / storage.NumSlots
}

// shardOfPhone returns the shard that creates the account of phone.
func shardOfPhone(phone string, shards int) int {
	return int(storage.SlotOfPhone(phone)) * shards / storage.NumSlots
}

// Chaos traffic shape.
const (
	// chaosDirectShare and chaosGroupShare are the shares of a device's
	// actions that are 1:1 and group sends; the rest are read marks.
	chaosDirectShare = 0.5
	chaosGroupShare  = 0.3
	// chaosMembershipEvery is the mean time between membership changes of
	// one group.
	chaosMembershipEvery = 1500 * time.Millisecond
	// chaosMaxUnanswered is the most sends one device leaves unanswered;
	// while the node is down it skips sending beyond that.
	chaosMaxUnanswered = 32
	// chaosSetupTimeout bounds each setup step.
	chaosSetupTimeout = 2 * time.Minute
)

// result runs the final check and reports it with the run's layout.
func (r *chaosRun) result() *ChaosResult {
	c := r.ver.check(true)
	res := &ChaosResult{
		Shards: r.plan.shards, Users: len(r.users), Devices: len(r.devices), Groups: len(r.groups),
		UsersPerShard: make([]int, r.plan.shards),
		Sent:          c.sent, Acknowledged: c.acked, Failed: c.failed, FailedBy: c.failedBy, RetriedBy: r.retries.snapshot(), Unanswered: c.unanswered,
		DeliveriesExpected: c.expected, Delivered: c.delivered, GroupEvents: c.events,
		ReadMarks: c.reads, ReceiptsExpected: c.receipts, Redelivered: r.ver.redelivered(),
		Lost: c.counts[vLost], Duplicated: c.counts[vDuplicated], Reordered: c.counts[vReordered],
		Skipped: c.counts[vSkipped], OrderMismatch: c.counts[vGroupOrder], Unexpected: c.counts[vUnexpected],
		ReceiptsMissing: c.counts[vReceipt], UnansweredSends: c.counts[vUnanswered], Violations: c.total(),
		LostGroupMessages: c.lostSends["group"], LostDirectMessages: c.lostSends["1:1"], LostCopies: c.lostSends["copy"],
	}
	for _, u := range r.users {
		res.UsersPerShard[u.shard]++
	}
	for _, g := range r.groups {
		shards := map[int]bool{}
		for _, i := range r.plan.initial(g.index) {
			shards[r.users[i].shard] = true
		}
		res.GroupShards = append(res.GroupShards, len(shards))
	}
	r.mu.Lock()
	res.MembershipChanges, res.MembershipAnswered = r.memberOps, r.memberDone
	r.mu.Unlock()
	for _, kind := range violationKinds {
		for _, e := range c.examples[kind] {
			res.First = append(res.First, kind+": "+e)
		}
	}
	return res
}

// assembleChaos adds the fault loop's figures to a chaos run's result.
func (c *coordinator) assembleChaos() {
	if c.cfg.Scenario != chaosScenario.Name {
		return
	}
	var ch *ChaosResult
	for _, w := range c.workers {
		if w.result.Chaos != nil {
			ch = w.result.Chaos
		}
	}
	if ch == nil {
		ch = &ChaosResult{Violations: 1, First: []string{"the worker reported no chaos check"}}
	}
	f := c.faults
	ch.Seed = c.cfg.Seed
	ch.Kills, ch.Restarts, ch.SlowStops, ch.BadExits = f.kills, f.graceful, f.slowStops, f.badExits
	ch.DowntimeMaxMS = float64(f.downMax) / float64(time.Millisecond)
	if n := f.kills + f.graceful; n > 0 {
		ch.DowntimeMeanMS = float64(f.downTotal) / float64(n) / float64(time.Millisecond)
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	ch.Partitions, ch.PartitionLeaseLost = f.partitions, f.leaseLost
	ch.PartitionLeaseGoneMS, ch.PartitionBackMS = ms(f.leaseGone), ms(f.backMax)
	ch.EtcdRestarts, ch.EtcdDownMaxMS, ch.EtcdReregistered = f.etcdRestarts, ms(f.etcdDownMax), f.reregistered
	for _, s := range f.cutOff {
		ch.AckedPartitioned += ackedWithin(c.res.Series, s)
	}
	for _, s := range f.etcdDown {
		ch.AckedWhileEtcdOff += ackedWithin(c.res.Series, s)
	}
	c.res.Chaos = ch
}

// ackedWithin returns the sends acknowledged within s as the one-second
// series saw them: from the last point at or before its start to the
// last point at or before its end (so a little less than s, never more).
func ackedWithin(series []Point, s span) int64 {
	var from, to int64 = -1, -1
	for _, p := range series {
		t := time.Duration(p.T * float64(time.Second))
		if t <= s.from {
			from = p.Acked
		}
		if t <= s.to {
			to = p.Acked
		}
	}
	if from < 0 || to < from {
		return 0
	}
	return to - from
}
