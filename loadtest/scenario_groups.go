package loadtest

import (
	"context"
	"fmt"
	"iter"
	"sync"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// groupsScenario is group traffic: Groups groups of GroupSize members
// (up to 1024), GroupSenders of each sending to it at Rate in total or
// flat out. Group g's members are the accounts g·M, g·M+1, … (mod the
// account count), so a group spans worker processes, and its first
// GroupSenders members send; its first member creates it.
//
// Every member checks every delivery, keyed by (group, sender, cmid):
// nothing lost, nothing twice, each sender's cmids in order, and the
// group's gseq strictly increasing in its inbox. The gseq → (sender, cmid)
// table of each group must be the same for every member in every worker
// (the group's one order, [S-16-6]); a difference counts in
// order_mismatch. Latency is per delivery (latency_us) and, for each
// message, until the last member has it (fanout_latency_us: the budget of
// DESIGN.md, a message to a 1024-member group at every online member,
// p99 ≤ 50 ms). Members that share a worker with all of a message's other
// receivers complete its fan-out there; otherwise the workers report their
// part and the coordinator completes it.
var groupsScenario = Scenario{
	Name:    "groups",
	Summary: "--groups groups of --group-size members (≤1024) over the workers, each of --devices devices; --group-senders each send at --rate or flat out; fan-out latency to the last device",
	Steps:   func(cfg *Config) []Step { return groupSteps(cfg, false) },
}

// groupSteps are the steps of a groups run; e2e adds what end-to-end
// encryption adds (scenario_group_envelopes.go): keys, the sender keys'
// distribution, and group messages of a sender key message's size.
func groupSteps(cfg *Config, e2e bool) []Step {
	steps := []Step{
		{
			Name:   "register",
			Worker: func(ctx context.Context, w *Worker) error { return w.register(ctx) },
			After:  func(ctx context.Context, c *coordinator) error { return c.readBaseline(ctx) },
			Timed:  true,
		},
		{
			// Companions (--devices), and every account's user id and
			// device ids for the other workers.
			Name:   "link",
			Worker: func(ctx context.Context, w *Worker) error { return w.linkCompanions(ctx) },
			Timed:  true,
			Share:  shareAccounts,
		},
		stepConnect("connect", func(d *device) bool { return d.session() == nil }, 0),
	}
	if e2e {
		steps = append(steps, Step{
			Name:   "keys",
			Worker: func(ctx context.Context, w *Worker) error { return w.publishKeys(ctx) },
		})
	}
	steps = append(steps,
		Step{
			Name:   "create groups",
			Worker: func(ctx context.Context, w *Worker) error { return w.groups.create(ctx, w, e2e) },
			Timed:  true,
			Share: func(w *Worker) []uint64 {
				gids := make([]uint64, 0, len(w.devices))
				for _, d := range w.primaries() {
					gids = append(gids, d.createdGroup)
				}
				return gids
			},
		},
		Step{
			Name:   "join",
			Worker: func(ctx context.Context, w *Worker) error { return w.groups.join(ctx, w) },
			Timed:  true,
		})
	if e2e {
		step := len(steps)
		steps = append(steps, Step{
			Name:   "sender keys",
			Worker: func(ctx context.Context, w *Worker) error { return w.groups.distribute(ctx, w) },
			After:  func(_ context.Context, c *coordinator) error { c.assembleKeys(step); return nil },
			Timed:  true,
		})
	}
	return append(steps,
		Step{
			Name: "traffic",
			Worker: func(ctx context.Context, w *Worker) error {
				cfg := &w.spec.Config
				w.traffic(ctx, planTraffic(cfg, cfg.Groups*cfg.GroupSenders, cfg.Duration), cfg.Warmup)
				return nil
			},
			Timed:       true,
			MeasureFrom: true,
		},
		Step{
			Name:   "answered",
			Worker: func(ctx context.Context, w *Worker) error { return w.waitAnswered(ctx, w.spec.Config.DrainTimeout) },
			Share: func(w *Worker) []uint64 {
				last := make([]uint64, 0, len(w.devices))
				for _, d := range w.primaries() {
					d.mu.Lock()
					last = append(last, d.nextCMID-1)
					d.mu.Unlock()
				}
				return last
			},
		},
		Step{
			Name:      "drain",
			Worker:    func(ctx context.Context, w *Worker) error { return w.groups.drain(ctx, w) },
			Timed:     true,
			MeasureTo: true,
		},
		stepClose(),
	)
}

// isGroupRun reports whether cfg runs groups, opaque or end to end.
func isGroupRun(cfg *Config) bool {
	return cfg.Scenario == groupsScenario.Name || cfg.Scenario == groupEnvelopesName
}

// deliveriesPerGroupMessage is how many devices get each group message:
// every device of every other member, and the sender's other devices
// (Devices 0 counts as the default, 1).
func deliveriesPerGroupMessage(cfg *Config) int {
	return cfg.GroupSize*max(1, cfg.Devices) - 1
}

// groupPlan says who is in which group and who sends.
type groupPlan struct {
	n, groups, size, senders int
}

func planGroups(cfg *Config) groupPlan {
	return groupPlan{n: cfg.Connections + cfg.Connections%2, groups: cfg.Groups, size: cfg.GroupSize, senders: cfg.GroupSenders}
}

// member returns the account index of member k of group g; member 0
// creates the group and members 0 … senders-1 send to it.
func (p groupPlan) member(g, k int) int { return (g*p.size + k) % p.n }

// check reports a plan the scenario cannot run: groups the server would
// refuse, or a device that would send to two groups.
func (p groupPlan) check() error {
	if p.size < 2 || p.size > protocol.MaxGroupMembers || p.size > p.n {
		return fmt.Errorf("group size %d: want 2 to %d and at most the %d connections", p.size, protocol.MaxGroupMembers, p.n)
	}
	if p.senders < 1 || p.senders > p.size {
		return fmt.Errorf("%d senders per group: want 1 to the group size %d", p.senders, p.size)
	}
	if p.groups < 1 || p.groups*p.senders > p.n {
		return fmt.Errorf("%d groups × %d senders: want 1 group or more, and at most one group per sending device (%d connections)", p.groups, p.senders, p.n)
	}
	if per := (p.groups*p.size + p.n - 1) / p.n; per > protocol.MaxGroupsPerUser {
		return fmt.Errorf("%d groups of %d over %d accounts: %d groups per user, over the server's %d", p.groups, p.size, p.n, per, protocol.MaxGroupsPerUser)
	}
	seen := make(map[int]bool, p.groups*p.senders)
	for g := range p.groups {
		for k := range p.senders {
			i := p.member(g, k)
			if seen[i] {
				return fmt.Errorf("account %d would send to two groups: use fewer groups or senders, or more connections", i)
			}
			seen[i] = true
		}
	}
	return nil
}

// groupWorker is a worker's state in a groups run.
type groupWorker struct {
	plan    groupPlan
	users   []uint64       // by account index
	devices [][]uint32     // by account index: the user's device ids, primary first
	index   map[uint64]int // user id → account index
	gids    []uint64       // by group index
	local   []int          // by group index: member devices in this worker
	lo, hi  int            // this worker's accounts
	last    []uint64       // by account index: the last cmid sent, for the drain
	// e2e marks a group-envelopes run; skip is then how many cmids each
	// sender spent on its sender key's distribution before its group
	// messages (scenario_group_envelopes.go), 0 otherwise.
	e2e  bool
	skip uint64

	mu      sync.Mutex
	pending map[fanoutKey]*fanoutState // guarded by mu: fan-outs under way here
	parts   []fanoutPart               // guarded by mu: partial fan-outs not reported yet
	done    *hdr.Histogram             // guarded by mu: fan-outs completed here, µs
	order   []map[uint64]fanoutKey     // guarded by mu: by group index, gseq → message
}

// deviceGroups is what a device sends to and receives in a groups run.
type deviceGroups struct {
	sendTo uint64              // the group this device sends to; 0: none
	in     map[uint64]*groupIn // group id → what arrives in it
	// keysTo lists, on a sender in a group-envelopes run, the member whose
	// sender key distribution each of its first cmids carries (cmid i+1
	// to keysTo[i]); keys what distributions this device is owed, by
	// sender and recipient. Read-only once set.
	keysTo []keyTarget
	keys   map[keySource]*keysIn
}

// groupIn is one member's view of one group; only the device's reader
// touches lastGSeq.
type groupIn struct {
	g        int
	lastGSeq uint64
	from     map[uint64]*direction // sender's user id → its messages here
}

// fanoutKey names a group message; fanoutState is its fan-out so far.
type fanoutKey struct{ Sender, CMID uint64 }

type fanoutState struct {
	intended, last int64
	n, expect      int
}

// fanoutPart is a worker's share of one message's fan-out: N of its
// members had it, the last at T (unix ns); I is the intended send time.
type fanoutPart struct {
	S uint64 `json:"s"`
	C uint64 `json:"c"`
	N int    `json:"n"`
	I int64  `json:"i"`
	T int64  `json:"t"`
}

// orderEntry is one line of a group's order: gseq Q holds the message
// (S, C). Workers report theirs; the coordinator compares them.
type orderEntry struct {
	G int    `json:"g"`
	Q uint64 `json:"q"`
	S uint64 `json:"s"`
	C uint64 `json:"c"`
}

// maxOrderReport bounds the order entries one worker reports.
const maxOrderReport = 200_000

// create learns every account's user and devices (shareAccounts) and
// makes the groups whose creator is in this worker: GROUP_CREATE with
// every other member, answered by GROUP_INFO.
func (gw *groupWorker) create(ctx context.Context, w *Worker, e2e bool) error {
	cfg := &w.spec.Config
	gw.plan = planGroups(cfg)
	gw.lo, gw.hi = w.spec.Lo, w.spec.Hi
	gw.e2e = e2e
	stride := 1 + cfg.Devices
	if len(w.shared) != gw.plan.n*stride {
		return fmt.Errorf("groups: %d values shared, want %d accounts of %d", len(w.shared), gw.plan.n, stride)
	}
	gw.users = make([]uint64, gw.plan.n)
	gw.devices = make([][]uint32, gw.plan.n)
	gw.index = make(map[uint64]int, gw.plan.n)
	for i := range gw.plan.n {
		a := w.shared[i*stride : (i+1)*stride]
		gw.users[i] = a[0]
		gw.index[a[0]] = i
		for _, id := range a[1:] {
			gw.devices[i] = append(gw.devices[i], uint32(id))
		}
	}
	creators := map[int]int{} // account index → group
	for g := range gw.plan.groups {
		creators[gw.plan.member(g, 0)] = g
	}
	return w.forEach(ctx, 16, func(d *device) bool { _, ok := creators[d.index]; return ok && d.primary == nil }, func(ctx context.Context, d *device) error {
		g := creators[d.index]
		s := d.session()
		if s == nil {
			return fmt.Errorf("groups: creator %d not connected", d.index)
		}
		members := make([]uint64, 0, gw.plan.size-1)
		for k := 1; k < gw.plan.size; k++ {
			members = append(members, gw.users[gw.plan.member(g, k)])
		}
		ctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		r, err := s.request(ctx, protocol.KindGroupCreate, func(rid uint32) proto.Message {
			return &pb.GroupCreate{Rid: rid, Name: fmt.Sprintf("load %d", g), Members: members}
		})
		if err != nil {
			return fmt.Errorf("groups: create group %d: %w", g, err)
		}
		if r.kind == protocol.KindError {
			var e pb.Error
			_ = codec.ParseProto(r.body, &e)
			return fmt.Errorf("groups: create group %d: %v %s", g, e.Code, e.Message)
		}
		var info pb.GroupInfo
		if err := codec.ParseProto(r.body, &info); err != nil {
			return err
		}
		if len(info.Refused) > 0 {
			return fmt.Errorf("groups: group %d refused %d members (first: %v)", g, len(info.Refused), info.Refused[0])
		}
		d.createdGroup = info.Group
		return nil
	})
}

// join learns the group ids, waits until every member here has its
// group's ADD event (or CREATE, for the creator), and sets up what each
// device sends and checks.
func (gw *groupWorker) join(ctx context.Context, w *Worker) error {
	p := gw.plan
	gw.gids = make([]uint64, p.groups)
	gids := map[uint64]int{}
	for g := range p.groups {
		gw.gids[g] = w.shared[p.member(g, 0)]
		if gw.gids[g] == 0 {
			return fmt.Errorf("groups: group %d has no id", g)
		}
		gids[gw.gids[g]] = g
	}
	gw.local = make([]int, p.groups)
	gw.order = make([]map[uint64]fanoutKey, p.groups)
	gw.pending = map[fanoutKey]*fanoutState{}
	gw.done = newHist()
	if gw.e2e {
		gw.skip = uint64(p.size - 1)
	}
	// Each device checks its own stream: its own ledgers, its own
	// place in each group's order.
	dgs := map[*device]*deviceGroups{}
	for g := range p.groups {
		gw.order[g] = map[uint64]fanoutKey{}
		for k := range p.size {
			i := p.member(g, k)
			if i < gw.lo || i >= gw.hi {
				continue
			}
			for _, d := range w.devices {
				if d.index != i {
					continue
				}
				gw.local[g]++
				dg := dgs[d]
				if dg == nil {
					dg = &deviceGroups{in: map[uint64]*groupIn{}, keys: map[keySource]*keysIn{}}
					dgs[d] = dg
				}
				if k < p.senders && d.primary == nil {
					dg.sendTo = gw.gids[g]
				}
				gi := &groupIn{g: g, from: map[uint64]*direction{}}
				for s := range p.senders {
					// The sender's own messages reach its other devices.
					if s != k || d.primary != nil {
						gi.from[gw.users[p.member(g, s)]] = &direction{}
					}
				}
				dg.in[gw.gids[g]] = gi
				if gw.e2e {
					gw.planKeys(d, dg, g, k)
				}
			}
		}
	}
	deadline := time.Now().Add(time.Minute)
	for _, d := range w.devices {
		dg := dgs[d]
		if dg == nil {
			continue
		}
		for {
			d.mu.Lock()
			missing := 0
			for gid, gi := range dg.in {
				if q, ok := d.groupEvents[gid]; ok {
					gi.lastGSeq = q
				} else {
					missing++
				}
			}
			d.mu.Unlock()
			if missing == 0 {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("groups: device %d has not joined %d of its groups after a minute", d.index, missing)
			}
			if err := sleepCtx(ctx, 10*time.Millisecond); err != nil {
				return err
			}
		}
		d.group.Store(dg)
	}
	return nil
}

// groupEvent records a GROUP_EVENT entry: the member knows its group from
// then on, and the event takes its place in the group's order.
func (d *device) groupEvent(ev *pb.GroupEvent) {
	if dg := d.group.Load(); dg != nil {
		if gi := dg.in[ev.Group]; gi != nil {
			if ev.Gseq <= gi.lastGSeq {
				d.w.stats.reordered.Add(1)
				d.w.logAnomaly("group event out of gseq order", d, ev.Gseq, gi.lastGSeq)
			}
			gi.lastGSeq = max(gi.lastGSeq, ev.Gseq)
		}
	}
	d.mu.Lock()
	if d.groupEvents == nil {
		d.groupEvents = map[uint64]uint64{}
	}
	d.groupEvents[ev.Group] = max(d.groupEvents[ev.Group], ev.Gseq)
	d.mu.Unlock()
}

// groupDelivery checks one group message that reached d at now.
func (w *Worker) groupDelivery(d *device, m codec.Message, now int64) {
	var gi *groupIn
	if dg := d.group.Load(); dg != nil {
		gi = dg.in[m.Group]
	}
	if m.From == d.user && m.FromDevice == d.id {
		return // its own message, in its user's inbox for its other devices
	}
	intended, actual, cmid, ok := parseBody(m.Body)
	var dir *direction
	if gi != nil {
		dir = gi.from[m.From]
	}
	if !ok || dir == nil {
		w.stats.foreign.Add(1)
		return
	}
	if m.GSeq <= gi.lastGSeq {
		w.stats.reordered.Add(1)
		w.logAnomaly("group message out of gseq order", d, m.GSeq, gi.lastGSeq)
	}
	gi.lastGSeq = max(gi.lastGSeq, m.GSeq)
	n := 1
	if k := w.spec.Config.InjectDuplicate; k > 0 && (w.stats.delivered.Load()+1)%int64(k) == 0 {
		n = 2 // injected fault: the same message processed twice
	}
	for range n {
		switch dir.Receive(cmid) {
		case deliveredTwice:
			w.stats.duplicated.Add(1)
			w.logAnomaly("group message delivered twice", d, m.From, cmid)
			return
		case deliveredOutOfOrder:
			w.stats.reordered.Add(1)
			w.logAnomaly("group message out of order from its sender", d, m.From, cmid)
		}
		w.stats.delivered.Add(1)
		w.groups.delivered(w, gi.g, m, cmid, intended, now)
		w.latency.record(d.index, intended, actual, now)
	}
}

// delivered enters one first delivery into the group's order table and
// its message's fan-out.
func (gw *groupWorker) delivered(w *Worker, g int, m codec.Message, cmid uint64, intended, now int64) {
	key := fanoutKey{Sender: m.From, CMID: cmid}
	from := w.latency.from.Load()
	gw.mu.Lock()
	defer gw.mu.Unlock()
	if k, ok := gw.order[g][m.GSeq]; !ok {
		gw.order[g][m.GSeq] = key
	} else if k != key {
		w.stats.orderMismatch.Add(1)
		w.log.Warn("two members saw different messages at one gseq", "group", m.Group, "gseq", m.GSeq, "a", k, "b", key)
	}
	if from == 0 || intended < from {
		return
	}
	st := gw.pending[key]
	if st == nil {
		expect := gw.local[g]
		if s := gw.index[m.From]; s >= gw.lo && s < gw.hi {
			expect-- // the sending device is one of ours and takes no part
		}
		st = &fanoutState{intended: intended, expect: expect}
		gw.pending[key] = st
	}
	st.n++
	st.last = max(st.last, now)
	if st.n < st.expect {
		return
	}
	delete(gw.pending, key)
	if st.expect == deliveriesPerGroupMessage(&w.spec.Config) {
		_ = gw.done.RecordValue(min(histMax, max(1, (st.last-st.intended)/1e3)))
		return
	}
	gw.parts = append(gw.parts, fanoutPart{S: key.Sender, C: key.CMID, N: st.n, I: st.intended, T: st.last})
}

// takeParts returns the partial fan-outs not reported yet.
func (gw *groupWorker) takeParts() []fanoutPart {
	gw.mu.Lock()
	defer gw.mu.Unlock()
	p := gw.parts
	gw.parts = nil
	return p
}

// drain waits until every member here has every message its group's
// senders sent (the shared last cmids), or the drain timeout passes.
func (gw *groupWorker) drain(ctx context.Context, w *Worker) error {
	gw.last = w.shared
	ctx, cancel := context.WithTimeout(ctx, w.spec.Config.DrainTimeout)
	defer cancel()
	for gw.missing(w, false) > 0 {
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			if w.ctx.Err() != nil {
				return w.ctx.Err()
			}
			w.log.Warn("drain timed out: counting what has not arrived as lost")
			return nil
		}
	}
	return nil
}

// missing counts the deliveries still missing here: quickly (counts
// only) or exactly (which cmids).
func (gw *groupWorker) missing(w *Worker, exact bool) int64 {
	var n int64
	for dg := range w.groupStates() {
		for _, gi := range dg.in {
			for sender, dir := range gi.from {
				// A sender's first skip cmids carried its sender key, 1:1.
				last := gw.last[gw.index[sender]]
				if last <= gw.skip {
					continue
				}
				if exact {
					n += int64(dir.Missing(last)) - int64(gw.skip)
				} else if _, recv := dir.Counts(); uint64(recv) < last-gw.skip {
					n += int64(last-gw.skip) - int64(recv)
				}
			}
		}
	}
	return n
}

// groupStates yields the group state of each device here that has one.
func (w *Worker) groupStates() iter.Seq[*deviceGroups] {
	return func(yield func(*deviceGroups) bool) {
		for _, d := range w.devices {
			if dg := d.group.Load(); dg != nil && !yield(dg) {
				return
			}
		}
	}
}

// finish counts what never arrived as lost.
func (gw *groupWorker) finish(w *Worker) {
	if gw.last != nil {
		w.stats.lost.Add(gw.missing(w, true))
	}
	if gw.e2e {
		w.stats.lost.Add(gw.keysMissing(w))
	}
}

// result adds the worker's fan-outs and group order to its result event.
func (gw *groupWorker) result(ev *event) {
	if gw.done == nil {
		return
	}
	gw.mu.Lock()
	defer gw.mu.Unlock()
	ev.Fanout, gw.parts = gw.parts, nil
	ev.FanoutLocal = encodeHist(gw.done)
	for g, t := range gw.order {
		for q, k := range t {
			if len(ev.Order) == maxOrderReport {
				return
			}
			ev.Order = append(ev.Order, orderEntry{G: g, Q: q, S: k.Sender, C: k.CMID})
		}
	}
}

// fanoutMerger completes in the coordinator the fan-outs whose members
// are in several workers.
type fanoutMerger struct {
	pending map[fanoutKey]*fanoutState
	hist    *hdr.Histogram
}

func (f *fanoutMerger) add(cfg *Config, parts []fanoutPart) {
	if len(parts) == 0 {
		return
	}
	if f.pending == nil {
		f.pending, f.hist = map[fanoutKey]*fanoutState{}, newHist()
	}
	for _, p := range parts {
		key := fanoutKey{Sender: p.S, CMID: p.C}
		st := f.pending[key]
		if st == nil {
			st = &fanoutState{intended: p.I, expect: deliveriesPerGroupMessage(cfg)}
			f.pending[key] = st
		}
		st.n += p.N
		st.last = max(st.last, p.T)
		if st.n >= st.expect {
			_ = f.hist.RecordValue(min(histMax, max(1, (st.last-st.intended)/1e3)))
			delete(f.pending, key)
		}
	}
}

// assembleGroups adds a groups run's figures to the result.
func (c *coordinator) assembleGroups() {
	cfg, r := c.cfg, c.res
	if !isGroupRun(cfg) {
		return
	}
	r.Groups, r.GroupSize, r.GroupSenders = cfg.Groups, cfg.GroupSize, cfg.GroupSenders
	h := newHist()
	if c.fanout.hist != nil {
		h.Merge(c.fanout.hist)
	}
	r.FanoutIncomplete = int64(len(c.fanout.pending))
	order := map[[2]uint64]fanoutKey{}
	for _, w := range c.workers {
		if l, err := decodeHist(w.result.FanoutLocal); err == nil {
			h.Merge(l)
		}
		for _, e := range w.result.Order {
			k := [2]uint64{uint64(e.G), e.Q}
			v := fanoutKey{Sender: e.S, CMID: e.C}
			if o, ok := order[k]; !ok {
				order[k] = v
			} else if o != v {
				r.OrderMismatch++
			}
		}
	}
	r.OrderMismatch += r.Counters.OrderMismatch
	r.FanoutLatency = percentiles(h)
	if r.MsgsPerSec > 0 {
		r.GroupMsgsPerSec = r.MsgsPerSec / float64(deliveriesPerGroupMessage(cfg))
	}
}

// groupSender reports whether d sends to a group.
func (d *device) groupSender() bool {
	dg := d.group.Load()
	return dg != nil && dg.sendTo != 0
}
