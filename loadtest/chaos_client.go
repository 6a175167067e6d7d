package loadtest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/parley-im/parley/client"
	"github.com/parley-im/parley/internal/clock"
	"github.com/parley-im/parley/protocol/pb"
)

// chaosRun is a worker's state in a chaos run: every user and device of
// the run (a chaos run has one worker), their SDK clients, and the
// verifier their events feed.
//
// Threading: the steps run on the worker's goroutine; each device's
// events arrive on its client's goroutine and update the user under its
// mutex; the verifier locks for itself.
type chaosRun struct {
	plan    chaosPlan
	ver     *chaosVerifier
	cfg     client.Config // Addr, Fingerprint, Dial and the rest; OnEvent set per device
	users   []*chaosUser
	devices []*chaosDevice
	groups  []*chaosGroup
	w       *Worker
	retries *retryCounter // the clients' OnRetry

	bg sync.WaitGroup // read marks under way

	mu         sync.Mutex
	memberOps  int // guarded by mu: membership changes asked for
	memberDone int // guarded by mu: answered OK
}

// chaosUser is one account.
type chaosUser struct {
	index   int
	phone   string
	shard   int // planned, and checked against the user id
	id      uint64
	devices []*chaosDevice

	mu     sync.Mutex
	view   map[uint64]*groupView // guarded by mu: the groups as this user's devices saw them
	latest map[[2]uint64]uint64  // guarded by mu: (group, sender) → largest message id received
	marked map[[2]uint64]uint64  // guarded by mu: (group, sender) → largest id marked read
}

// groupView is a group as one user knows it from its events.
type groupView struct {
	gseq    uint64
	members map[uint64]bool
}

// chaosDevice is one device of a user and its SDK client.
type chaosDevice struct {
	user  *chaosUser
	k     int // 0: the primary
	key   chaosDevKey
	store *client.MemoryStore
	rng   *rand.Rand // its traffic loop's

	mu         sync.Mutex
	c          *client.Client // guarded by mu
	runDone    chan struct{}  // guarded by mu: closed when c's Run returned
	synced     chan struct{}  // guarded by mu: closed at c's first Synced
	online     bool           // guarded by mu
	logins     int            // guarded by mu
	n          uint64         // guarded by mu: sends numbered so far
	unanswered int            // guarded by mu
	reading    bool           // guarded by mu: a read mark is under way
}

// chaosGroup is one group of the run.
type chaosGroup struct {
	index   int
	id      uint64
	creator *chaosUser
	rng     *rand.Rand // its membership loop's
}

func newChaosRun(w *Worker) *chaosRun {
	cfg := &w.spec.Config
	r := &chaosRun{plan: planChaos(cfg), ver: newChaosVerifier(), w: w, retries: newRetryCounter()}
	r.cfg = client.Config{
		Addr:         w.spec.Addr,
		Fingerprint:  w.spec.Fingerprint,
		Dial:         w.dialer.DialContext,
		DialTimeout:  10 * time.Second,
		BackoffMin:   50 * time.Millisecond,
		BackoffMax:   time.Second,
		Decompressor: w.dec,
		Logger:       w.log,
		OnRetry:      r.retries.count,
	}
	seed := uint64(cfg.Seed)
	for i, n := range r.plan.devices {
		u := &chaosUser{index: i, shard: r.plan.shardOfUser(i), view: map[uint64]*groupView{},
			latest: map[[2]uint64]uint64{}, marked: map[[2]uint64]uint64{}}
		for k := range n {
			d := &chaosDevice{user: u, k: k, store: client.NewMemoryStore(), rng: rand.New(rand.NewPCG(seed, uint64(i)<<8|uint64(k)))}
			u.devices = append(u.devices, d)
			r.devices = append(r.devices, d)
		}
		r.users = append(r.users, u)
	}
	for g := range r.plan.groups {
		r.groups = append(r.groups, &chaosGroup{index: g, creator: r.users[r.plan.creator(g)], rng: rand.New(rand.NewPCG(seed, 1<<32|uint64(g)))})
	}
	return r
}

// register picks for each user a phone number on its planned shard and
// registers its primary device.
func (r *chaosRun) register(ctx context.Context, w *Worker) error {
	cfg := &w.spec.Config
	next := 0
	for _, u := range r.users {
		for ; ; next++ {
			if next >= pow10(indexDigits) {
				return errors.New("chaos: ran out of phone numbers")
			}
			p := phone(cfg.PhonePrefix, w.spec.RunID, next)
			if shardOfPhone(p, r.plan.shards) == u.shard {
				u.phone = p
				next++
				break
			}
		}
	}
	ctx, cancel := context.WithTimeout(ctx, chaosSetupTimeout)
	defer cancel()
	return forEachParallel(ctx, r.users, 8, func(ctx context.Context, u *chaosUser) error {
		err := retrySetup(ctx, "request a code for "+u.phone, sleepCtx, func(ctx context.Context) error {
			_, err := client.RequestCode(ctx, r.cfgFor(u), u.phone)
			return err
		})
		if err != nil {
			return err
		}
		var creds client.Credentials
		err = retrySetup(ctx, "verify "+u.phone, sleepCtx, func(ctx context.Context) (err error) {
			creds, err = client.Verify(ctx, r.cfgFor(u), u.phone, cfg.TestCode, "chaos primary")
			return err
		})
		if err != nil {
			return err
		}
		if got := shardOf(creds.User, r.plan.shards); got != u.shard {
			return fmt.Errorf("chaos: user %d (%s) is on shard %d, planned on %d", creds.User, u.phone, got, u.shard)
		}
		u.id = creds.User
		d := u.devices[0]
		d.key = chaosDevKey{creds.User, creds.Device}
		return d.store.SaveCredentials(creds)
	})
}

// link starts every primary, links the companions to it and starts
// them, and waits until every device is logged in and synced.
func (r *chaosRun) link(ctx context.Context, w *Worker) error {
	ctx, cancel := context.WithTimeout(ctx, chaosSetupTimeout)
	defer cancel()
	return forEachParallel(ctx, r.users, 8, func(ctx context.Context, u *chaosUser) error {
		p := u.devices[0]
		if err := r.start(p); err != nil {
			return err
		}
		if err := p.waitSynced(ctx); err != nil {
			return fmt.Errorf("chaos: user %d primary: %w", u.id, err)
		}
		for _, d := range u.devices[1:] {
			var creds client.Credentials
			err := retrySetup(ctx, fmt.Sprintf("link a companion of user %d", u.id), sleepCtx, func(ctx context.Context) (err error) {
				creds, err = r.linkCompanion(ctx, u, d)
				return err
			})
			if err != nil {
				return err
			}
			d.key = chaosDevKey{creds.User, creds.Device}
			if err := d.store.SaveCredentials(creds); err != nil {
				return err
			}
			if err := r.start(d); err != nil {
				return err
			}
			if err := d.waitSynced(ctx); err != nil {
				return fmt.Errorf("chaos: user %d device %d: %w", u.id, creds.Device, err)
			}
		}
		return nil
	})
}

// linkCompanion links device d of user u to u's primary: a link request
// on a connection of its own, its approval by the primary, and the
// credentials it then gets.
func (r *chaosRun) linkCompanion(ctx context.Context, u *chaosUser, d *chaosDevice) (client.Credentials, error) {
	pl, err := client.RequestLink(ctx, r.cfgFor(u), fmt.Sprintf("chaos companion %d", d.k))
	if err != nil {
		return client.Credentials{}, fmt.Errorf("chaos: user %d: request a link: %w", u.id, err)
	}
	if err := u.devices[0].client().ApproveLink(ctx, pl.Code); err != nil {
		pl.Close()
		return client.Credentials{}, fmt.Errorf("chaos: user %d: approve a link: %w", u.id, err)
	}
	creds, err := pl.Wait(ctx)
	if err != nil {
		return client.Credentials{}, fmt.Errorf("chaos: user %d: linked: %w", u.id, err)
	}
	return creds, nil
}

// createGroups creates the groups, checks that each has members on
// several shards, and waits until every member knows it is in.
func (r *chaosRun) createGroups(ctx context.Context, w *Worker) error {
	ctx, cancel := context.WithTimeout(ctx, chaosSetupTimeout)
	defer cancel()
	for _, g := range r.groups {
		var ids []uint64
		shards := map[int]bool{}
		for _, i := range r.plan.initial(g.index) {
			shards[r.users[i].shard] = true
			if u := r.users[i]; u != g.creator {
				ids = append(ids, u.id)
			}
		}
		if len(shards) < 2 {
			return fmt.Errorf("chaos: group %d would have members on one shard only", g.index)
		}
		admin := g.creator.devices[0].client()
		info, err := admin.CreateGroup(ctx, fmt.Sprintf("chaos %d", g.index), nil, ids)
		if err != nil {
			return fmt.Errorf("chaos: create group %d: %w", g.index, err)
		}
		err = addRefused(ctx, g.index, info.Refused, sleepCtx, func(ctx context.Context, ids []uint64) ([]client.GroupRefusal, error) {
			added, err := admin.AddGroupMembers(ctx, info.ID, ids)
			return added.Refused, err
		})
		if err != nil {
			return err
		}
		g.id = info.ID
		r.ver.addGroup(g.id)
	}
	return r.waitFor(ctx, func() bool {
		for _, g := range r.groups {
			for _, i := range r.plan.initial(g.index) {
				if !r.users[i].isMember(g.id) {
					return false
				}
			}
		}
		return true
	})
}

// traffic runs every device's traffic and every group's membership
// changes for the run's duration; the coordinator injects the faults
// meanwhile.
func (r *chaosRun) traffic(ctx context.Context, w *Worker) error {
	cfg := &w.spec.Config
	ctx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	mean := time.Duration(float64(len(r.devices)) / float64(cfg.Rate) * float64(time.Second))
	var wg sync.WaitGroup
	for _, d := range r.devices {
		wg.Go(func() { r.deviceLoop(ctx, d, mean) })
	}
	for _, g := range r.groups {
		wg.Go(func() { r.membershipLoop(ctx, g) })
	}
	wg.Wait()
	return nil
}

// deviceLoop is one device's traffic: at random moments (mean apart) a
// 1:1 send to another user, a send to one of its user's groups, or a read
// mark.
func (r *chaosRun) deviceLoop(ctx context.Context, d *chaosDevice, mean time.Duration) {
	for {
		if sleepCtx(ctx, time.Duration(d.rng.ExpFloat64()*float64(mean))) != nil {
			return
		}
		roll := d.rng.Float64()
		if roll >= chaosDirectShare+chaosGroupShare {
			r.markRead(d)
			continue
		}
		if roll >= chaosDirectShare {
			if gs := d.user.memberOf(); len(gs) > 0 {
				r.send(d, 0, gs[d.rng.IntN(len(gs))], false)
				continue
			}
		}
		// Another user, most likely on another shard.
		to := r.users[(d.user.index+1+d.rng.IntN(len(r.users)-1))%len(r.users)]
		r.send(d, to.id, 0, false)
	}
}

// send sends one message from d to user to or to group, unless d has too
// many unanswered already and must is false.
func (r *chaosRun) send(d *chaosDevice, to, group uint64, must bool) {
	d.mu.Lock()
	c := d.c
	if (d.unanswered >= chaosMaxUnanswered && !must) || c == nil {
		d.mu.Unlock()
		return
	}
	d.n++
	d.unanswered++
	k := chaosSendKey{User: d.key.User, Device: d.key.Device, N: d.n}
	d.mu.Unlock()
	body := appendChaosBody(nil, k)
	r.ver.sendStarted(k, to, group)
	done := func(sent client.Sent, err error) {
		r.ver.sendDone(k, sent, err)
		d.mu.Lock()
		d.unanswered--
		d.mu.Unlock()
		if err == nil {
			r.w.stats.acked.Add(1)
		} else {
			r.w.stats.errorFrames.Add(1)
		}
	}
	var cmid uint64
	var err error
	if group != 0 {
		cmid, err = c.SendGroupAsync(group, body, pb.ContentType_CONTENT_TEXT, done)
	} else {
		cmid, err = c.SendAsync(to, body, pb.ContentType_CONTENT_TEXT, done)
	}
	if err != nil {
		r.ver.dropSend(k)
		d.mu.Lock()
		d.unanswered--
		d.mu.Unlock()
		return
	}
	r.ver.sendCMID(k, cmid)
	r.w.stats.sent.Add(1)
}

// markRead marks read, on d, what d's user last got from a sender it has
// not marked that far, unless d has a mark under way.
func (r *chaosRun) markRead(d *chaosDevice) {
	u := d.user
	u.mu.Lock()
	var cands [][2]uint64
	for _, k := range slices.SortedFunc(maps.Keys(u.latest), func(a, b [2]uint64) int { return slices.Compare(a[:], b[:]) }) {
		if u.latest[k] > u.marked[k] {
			cands = append(cands, k)
		}
	}
	if len(cands) == 0 {
		u.mu.Unlock()
		return
	}
	k := cands[d.rng.IntN(len(cands))]
	upTo := u.latest[k]
	u.mu.Unlock()
	d.mu.Lock()
	c := d.c
	if d.reading || c == nil {
		d.mu.Unlock()
		return
	}
	d.reading = true
	d.mu.Unlock()
	u.mu.Lock()
	u.marked[k] = max(u.marked[k], upTo)
	u.mu.Unlock()
	group, peer := k[0], k[1]
	rk := chaosReadKey{Reader: u.id, Peer: peer, Group: group}
	r.ver.readStarted(rk, upTo)
	r.bg.Go(func() {
		var err error
		if group == 0 {
			err = c.MarkRead(r.w.ctx, peer, upTo)
		} else {
			err = c.MarkGroupRead(r.w.ctx, group, map[uint64]uint64{peer: upTo})
		}
		r.ver.readDone(rk, upTo, err)
		d.mu.Lock()
		d.reading = false
		d.mu.Unlock()
	})
}

// membershipLoop changes group g's members at random moments: its
// creator removes a member or adds a user, or a member leaves. Group
// sizes stay between 3 and the plan's size plus 3. An answer lost to a
// fault does not matter: the verifier goes by the group's events.
func (r *chaosRun) membershipLoop(ctx context.Context, g *chaosGroup) {
	admin := g.creator.devices[0]
	for {
		if sleepCtx(ctx, time.Duration(g.rng.ExpFloat64()*float64(chaosMembershipEvery))) != nil {
			return
		}
		members := g.creator.membersOf(g.id)
		var in, out []*chaosUser
		for _, u := range r.users {
			switch {
			case u == g.creator:
			case members[u.id]:
				in = append(in, u)
			default:
				out = append(out, u)
			}
		}
		roll := g.rng.Float64()
		var err error
		opCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		switch {
		case len(in) > 0 && (roll < 0.3 || len(in) >= r.plan.size+2):
			err = admin.client().RemoveGroupMembers(opCtx, g.id, []uint64{in[g.rng.IntN(len(in))].id})
		case len(in) > 0 && roll < 0.45 && len(in) > 2:
			m := in[g.rng.IntN(len(in))]
			err = m.devices[g.rng.IntN(len(m.devices))].client().LeaveGroup(opCtx, g.id)
		case len(out) > 0:
			_, err = admin.client().AddGroupMembers(opCtx, g.id, []uint64{out[g.rng.IntN(len(out))].id})
		}
		cancel()
		r.mu.Lock()
		r.memberOps++
		if err == nil {
			r.memberDone++
		}
		r.mu.Unlock()
	}
}

// converge ends the run: one more message from every user (so that every
// device acknowledges something after the last fault), a wait until
// everything owed has arrived, the groups' final states, and every device
// logged in again and synced with nothing more to come.
func (r *chaosRun) converge(ctx context.Context, w *Worker) error {
	// One deadline for the step; logging in again and GROUP_GET get at
	// least chaosFinalWait, even after a wait that timed out.
	deadline := time.Now().Add(w.spec.Config.DrainTimeout)
	for i, u := range r.users {
		r.send(u.devices[0], r.users[(i+1)%len(r.users)].id, 0, true)
	}
	if err := r.waitConverged(ctx, deadline); err != nil {
		return err
	}
	fctx, cancel := context.WithDeadline(ctx, later(deadline, time.Now().Add(chaosFinalWait)))
	defer cancel()
	for _, g := range r.groups {
		info, err := g.creator.devices[0].client().Group(fctx, g.id)
		if err != nil {
			return fmt.Errorf("chaos: group %d at the end: %w", g.id, err)
		}
		r.ver.groupFinal(info)
	}
	// Log every device in again: Synced then says that its inbox holds
	// nothing it has not got. Read marks still unanswered end with their
	// clients, as unanswered.
	for _, d := range r.devices {
		if err := r.restart(d); err != nil {
			return err
		}
	}
	for _, d := range r.devices {
		if err := d.waitSynced(fctx); err != nil {
			return fmt.Errorf("chaos: user %d device %d after logging in again: %w", d.key.User, d.key.Device, err)
		}
	}
	return r.waitConverged(ctx, deadline)
}

// chaosFinalWait is the least time the end of a chaos run gets to read
// the groups and log every device in again.
const chaosFinalWait = 10 * time.Second

// later returns the later of a and b.
func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// waitConverged waits until nothing is outstanding: every send and read
// mark answered, every delivery and receipt owed made. It waits for
// events, up to deadline; then it logs how much is missing and returns
// nil: the final check reports what.
func (r *chaosRun) waitConverged(ctx context.Context, deadline time.Time) error {
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	outstanding := 0
	err := r.waitFor(ctx, func() bool {
		outstanding = r.ver.check(false).outstanding
		return outstanding == 0
	})
	if err != nil && r.w.ctx.Err() == nil {
		r.w.log.Warn("chaos: not converged; the check reports what is missing", "outstanding", outstanding)
		return nil
	}
	return err
}

// waitFor waits until cond holds, checking it again after events the
// verifier records, or until ctx ends. After each check it lets three
// times the check's own time pass before the next: the final wait's check
// holds the verifier's lock, which every device needs to record each
// event, and checked after every event it held it nearly all the time
// (58 checks in 14.8 s of a 15 s drain, -race, load average 15): the
// devices then took their events, the answers to their sends among them,
// a few hundred a second, and sends answered long before looked
// unanswered at the end.
func (r *chaosRun) waitFor(ctx context.Context, cond func() bool) error {
	return waitPaced(ctx, clock.System{}, r.ver.changed, cond)
}

// waitPaced is waitFor on clk, looking again after a signal on changed.
func waitPaced(ctx context.Context, clk clock.Clock, changed <-chan struct{}, cond func() bool) error {
	for {
		start := clk.Now()
		if cond() {
			return nil
		}
		if err := clock.Sleep(ctx, clk, checkPace*clk.Now().Sub(start)); err != nil {
			return err
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// checkPace is how many times its own duration waitFor leaves between two
// checks.
const checkPace = 3

// closeAll closes every client; read marks still waiting end with them.
func (r *chaosRun) closeAll() {
	for _, d := range r.devices {
		r.closeDevice(d)
	}
	r.bg.Wait()
}

// cfgFor returns the client configuration of u's devices: on a spawned
// cluster they connect to node u.index mod nodes (round robin by
// account), else to the node.
func (r *chaosRun) cfgFor(u *chaosUser) client.Config {
	cfg := r.cfg
	home := r.w.spec.nodeOf(u.index)
	cfg.Addr, cfg.Fingerprint = home.Addr, home.Fingerprint
	return cfg
}

// start starts a client for d from its store.
func (r *chaosRun) start(d *chaosDevice) error {
	creds, err := d.store.Load()
	if err != nil {
		return err
	}
	r.ver.addDevice(creds.Credentials.User, creds.Credentials.Device)
	cfg := r.cfgFor(d.user)
	synced := make(chan struct{})
	var once sync.Once
	cfg.OnEvent = func(ev client.Event) { r.event(d, ev, func() { once.Do(func() { close(synced) }) }) }
	c, err := client.New(cfg, creds.Credentials, d.store)
	if err != nil {
		return fmt.Errorf("chaos: device %d of user %d: %w", creds.Credentials.Device, creds.Credentials.User, err)
	}
	done := make(chan struct{})
	d.mu.Lock()
	d.c, d.runDone, d.synced = c, done, synced
	d.mu.Unlock()
	go func() {
		defer close(done)
		if err := c.Run(r.w.ctx); err != nil && !errors.Is(err, client.ErrClosed) && r.w.ctx.Err() == nil {
			r.w.log.Warn("chaos: client stopped", "user", d.key.User, "device", d.key.Device, "err", err)
		}
	}()
	return nil
}

// restart closes d's client and starts a new one on its store, as an app
// does when it is restarted.
func (r *chaosRun) restart(d *chaosDevice) error {
	r.closeDevice(d)
	return r.start(d)
}

// event handles one event of device d: the user's view first, then the
// verifier, whose record wakes waiters.
func (r *chaosRun) event(d *chaosDevice, ev client.Event, synced func()) {
	u, st := d.user, &r.w.stats
	switch ev := ev.(type) {
	case client.Connected:
		d.mu.Lock()
		d.online = true
		d.logins++
		again := d.logins > 1
		d.mu.Unlock()
		st.connected.Add(1)
		st.logins.Add(1)
		if again {
			st.reconnects.Add(1)
		}
	case client.Disconnected:
		d.mu.Lock()
		was := d.online
		d.online = false
		d.mu.Unlock()
		if was {
			st.connected.Add(-1)
			st.drops.Add(1)
		}
	case client.Fatal:
		r.ver.fatal(d.key, ev.Err)
	case client.Message:
		st.delivered.Add(1)
		if ev.From != u.id && ev.To == 0 {
			k := [2]uint64{ev.Group, ev.From}
			u.mu.Lock()
			u.latest[k] = max(u.latest[k], ev.ID)
			u.mu.Unlock()
		}
	case client.Receipt, client.Receipts:
		st.receipts.Add(1)
	case client.GroupEvent:
		u.apply(ev)
	}
	r.ver.record(d.key, ev)
	if _, ok := ev.(client.Synced); ok {
		synced()
	}
}

// apply takes a group event into the user's view, once.
func (u *chaosUser) apply(ev client.GroupEvent) {
	u.mu.Lock()
	defer u.mu.Unlock()
	v := u.view[ev.Group]
	if v == nil {
		v = &groupView{members: map[uint64]bool{}}
		u.view[ev.Group] = v
	}
	if ev.GSeq <= v.gseq {
		return
	}
	v.gseq = ev.GSeq
	switch ev.Op {
	case pb.GroupOp_GROUP_OP_CREATE, pb.GroupOp_GROUP_OP_ADD:
		for _, m := range ev.Members {
			v.members[m] = true
		}
	case pb.GroupOp_GROUP_OP_REMOVE, pb.GroupOp_GROUP_OP_LEAVE:
		for _, m := range ev.Members {
			delete(v.members, m)
		}
	}
}

// isMember reports whether the user knows itself a member of group g.
func (u *chaosUser) isMember(g uint64) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	v := u.view[g]
	return v != nil && v.members[u.id]
}

// memberOf returns the groups the user knows itself a member of.
func (u *chaosUser) memberOf() []uint64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	var gs []uint64
	for g, v := range u.view {
		if v.members[u.id] {
			gs = append(gs, g)
		}
	}
	slices.Sort(gs)
	return gs
}

// membersOf returns group g's members as the user knows them.
func (u *chaosUser) membersOf(g uint64) map[uint64]bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if v := u.view[g]; v != nil {
		return maps.Clone(v.members)
	}
	return map[uint64]bool{}
}

// client returns d's current client.
func (d *chaosDevice) client() *client.Client {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.c
}

// waitSynced waits for the first Synced of d's current client.
func (d *chaosDevice) waitSynced(ctx context.Context) error {
	d.mu.Lock()
	synced, done := d.synced, d.runDone
	d.mu.Unlock()
	select {
	case <-synced:
		return nil
	case <-done:
		return errors.New("client stopped before it synced")
	case <-ctx.Done():
		return fmt.Errorf("not synced: %w", ctx.Err())
	}
}

// closeDevice closes d's client and waits for its Run to return.
func (r *chaosRun) closeDevice(d *chaosDevice) {
	d.mu.Lock()
	c, done, was := d.c, d.runDone, d.online
	d.c, d.online = nil, false
	d.mu.Unlock()
	if was {
		r.w.stats.connected.Add(-1)
	}
	if c != nil {
		_ = c.Close()
		<-done
	}
}
