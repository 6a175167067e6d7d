package storage_test

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
	"github.com/parley-im/parley/router"
	"github.com/parley-im/parley/storage"
)

// The deterministic simulation of the storage layer (issue 9, section 2).
//
// Several shards run on Pebble's in-memory crashable file system, driven
// step by step on the test's goroutine (Shard.Step and Shard.Tick), so one
// seed decides everything: which client does what, which forward between
// shards is delivered, lost, repeated or overtaken, when the clock moves,
// and when the whole node crashes (keeping only what was synced, plus a
// random part of what was not) or restarts cleanly. Simulated clients
// behave as the spec asks real ones to: they log in with the seq they have
// processed, drop entries they already have by seq, acknowledge
// cumulatively, and retry a send with the same cmid until it is answered.
//
// After every frame a client takes, the model checks that nothing was
// skipped (a device's stream is contiguous), nothing was delivered twice
// (one message id at one seq per device), an entry seen again carries the
// same content, every message was sent by someone, a group's messages
// arrive in gseq order and only while the device's user is a member. At
// the end the node is allowed to settle and the model checks that every
// send answered SENT reached every device of its recipients (the sender's
// other devices included), that the devices of one user hold the same
// entry at every seq, and that every delivered and read receipt reached
// the sender's devices.
//
// A failing seed is printed with the steps that led to it and replays
// exactly: go test ./storage -run TestSimulation -sim.seed=N -v.

// defaultSimSeeds is how many seeds go test runs: a few hundred, fewer
// under the race detector; -sim.seeds runs many thousands.
func defaultSimSeeds() int {
	if raceBuild {
		return 50
	}
	return 300
}

var (
	simSeeds   = flag.Int("sim.seeds", defaultSimSeeds(), "simulation: seeds to run (TestSimulation)")
	simSeed    = flag.Uint64("sim.seed", 0, "simulation: run only this seed")
	simSteps   = flag.Int("sim.steps", 400, "simulation: steps per seed")
	simTrail   = flag.Int("sim.trail", 40, "simulation: steps shown when a seed fails")
	simVerbose = flag.Bool("sim.verbose", false, "simulation: note every entry a device takes in the trail")
)

func TestSimulation(t *testing.T) {
	if *simSeed != 0 {
		runSim(t, *simSeed, *simSteps)
		return
	}
	lazy := 0
	for seed := uint64(1); seed <= uint64(*simSeeds); seed++ {
		ok, n := runSim(t, seed, *simSteps)
		if !ok {
			return
		}
		lazy += n
	}
	// The seeds must crash shards whose unsynced cycles hold only
	// promises that may wait (receipts, 1:1 watermarks: shard_sync.go):
	// that is where an effect released before its sync would be lost.
	t.Logf("%d crashes fell on a shard holding only promises that may wait unsynced", lazy)
	if lazy == 0 && *simSeeds >= 50 {
		t.Errorf("no crash of %d seeds fell on a shard holding only promises that may wait unsynced", *simSeeds)
	}
}

// runSim runs one seed and reports whether it passed, and how many times
// a crash fell on a shard whose unsynced cycles held only promises that
// may wait.
func runSim(t *testing.T, seed uint64, steps int) (ok bool, lazyCrashes int) {
	t.Helper()
	s := newSim(t, seed)
	defer s.closeShards()
	ok = s.run(steps)
	if !ok {
		t.Errorf("simulation seed %d failed: %s\nlast steps:\n%s\nreplay: go test ./storage -run TestSimulation -sim.seed=%d -v",
			seed, s.failure, strings.Join(s.trail, "\n"), seed)
	}
	return ok, s.lazyCrashes
}

// sim is one simulated node and its clients.
type sim struct {
	t       *testing.T
	seed    uint64
	rng     *rand.Rand
	fs      *vfs.MemFS
	clock   *clock
	codes   *codeBox
	router  *router.Router
	shards  []*storage.Shard
	net     []storage.Op // in flight between shards, oldest first
	users   []*simUser
	devices []*simDevice
	groups  []*simGroup
	sends   map[sendKey]*simSend
	reads   []simRead
	rid     uint32

	pendingChanges []memberChange
	pendingReads   []pendingRead
	revokes        map[uint64]*simRevoke // by message id (sim_revoke_test.go)
	pendingRevokes []pendingRevoke

	step        int
	lazyCrashes int      // crashes on a shard holding only promises that may wait unsynced
	trail       []string // the last steps, for the failure report
	failure     string
}

// simUser is one account.
type simUser struct {
	idx     int
	id      uint64
	devices []*simDevice
}

// simDevice is one client device: its connection, what it has processed,
// and the sends it has not seen answered.
type simDevice struct {
	user     *simUser
	id       uint32
	cred     []byte
	name     string
	ep       *endpoint // the live connection, nil when offline
	last     uint64    // highest seq processed: the client's cursor
	stream   map[uint64]string
	count    map[uint64]int    // message id → seqs it was delivered at
	gseq     map[uint64]uint64 // group → last gseq seen
	member   map[uint64]bool   // group → member, by the events this device saw
	receipts map[receiptOf]uint64
	lastFrom map[uint64]uint64 // peer → last 1:1 message id received from it
	nextCMID uint64
	pending  map[uint64]*simSend // cmid → a send not yet answered
	revokes  *revokeState        // nil until a deletion concerns it
}

// receiptOf names what a receipt says: type, peer, group.
type receiptOf struct {
	typ   pb.ReceiptType
	peer  uint64
	group uint64
}

// simGroup is one group and the model's view of its members.
type simGroup struct {
	id      uint64
	admin   *simUser
	state   map[*simUser]memberState
	version map[*simUser]int // bumped whenever a change is asked or answered
}

type memberState uint8

const (
	nonMember memberState = iota
	isMember
	changing // a change was asked and not answered (or its answer lost)
)

// sendKey names one send: sender device and cmid.
type sendKey struct {
	user   uint64
	device uint32
	cmid   uint64
}

// simSend is one send the model made.
type simSend struct {
	key      sendKey
	from     *simDevice
	to       *simUser  // 1:1
	group    *simGroup // group
	body     string
	id       uint64           // the message id, from Sent or the first delivery
	sent     bool             // Sent was received
	refused  protocol.Code    // an Error that ends the send
	stable   map[*simUser]int // group: members at submission and their versions
	expected []*simUser       // group: members throughout, fixed at Sent
}

// simRead is a read the server confirmed: the reader's devices and the
// sender's devices must hear of it.
type simRead struct {
	reader, sender *simUser
	upTo           uint64
}

func newSim(t *testing.T, seed uint64) *sim {
	s := &sim{
		t: t, seed: seed, rng: rand.New(rand.NewPCG(seed, 0x5eed)),
		fs:    vfs.NewCrashableMem(),
		clock: &clock{now: time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)},
		codes: &codeBox{},
		sends: map[sendKey]*simSend{}, revokes: map[uint64]*simRevoke{},
	}
	return s
}

// Forwarder: the sim is the network between its shards.

func (s *sim) ShardOf(user uint64) uint16 { return s.router.ShardOf(user) }

func (s *sim) Forward(op storage.Op) { s.net = append(s.net, op) }

const simShards = 3

// open opens the shards on s.fs.
func (s *sim) open() {
	r, err := router.New(simShards)
	if err != nil {
		s.t.Fatal(err)
	}
	s.router = r
	s.shards = nil
	for i := range simShards {
		sh, err := storage.Open(storage.Config{
			ID: uint16(i), Dir: fmt.Sprintf("shard-%d", i), FS: s.fs,
			Forwarder: s, Conns: testConns, Codes: s.codes, Now: s.clock.Now,
			Rand: func(b []byte) {
				for i := range b {
					b[i] = byte(s.rng.Uint32())
				}
			},
		})
		if err != nil {
			s.t.Fatalf("seed %d: open shard %d: %v", s.seed, i, err)
		}
		s.shards = append(s.shards, sh)
	}
	if err := r.Attach(s.shards); err != nil {
		s.t.Fatal(err)
	}
	for _, sh := range s.shards {
		sh.Step() // replays the outbox
	}
}

// sync makes what sh committed durable, releasing the effects that waited.
func (s *sim) sync(sh *storage.Shard) {
	if err := sh.Sync(); err != nil {
		s.fail("sync shard %d: %v", sh.ID(), err)
	}
}

func (s *sim) closeShards() {
	for _, sh := range s.shards {
		_ = sh.Close()
	}
	s.shards = nil
}

func (s *sim) fail(format string, args ...any) {
	if s.failure == "" {
		s.failure = fmt.Sprintf("step %d: ", s.step) + fmt.Sprintf(format, args...)
	}
}

func (s *sim) note(format string, args ...any) {
	s.trail = append(s.trail, fmt.Sprintf("%4d ", s.step)+fmt.Sprintf(format, args...))
	if len(s.trail) > *simTrail {
		s.trail = s.trail[1:]
	}
}

func (s *sim) submit(op storage.Op) {
	if err := s.router.Submit(op); err != nil {
		s.fail("submit %v: %v", op.Kind, err)
	}
}

// settle delivers every forward in order and steps every shard until
// nothing is queued; the setup and the final check use it.
func (s *sim) settle() {
	for range 10_000 {
		if len(s.net) > 0 {
			op := s.net[0]
			s.net = s.net[1:]
			s.deliverOp(op)
			continue
		}
		busy := false
		for _, sh := range s.shards {
			if sh.Stats().QueueLength > 0 {
				sh.Step()
				busy = true
			}
			s.sync(sh)
		}
		if !busy && len(s.net) == 0 {
			return
		}
	}
	s.fail("the node did not settle")
}

func (s *sim) deliverOp(op storage.Op) {
	switch op.Kind {
	case storage.OpForward, storage.OpForwardDone:
		if err := s.shards[op.Dest].Submit(op); err != nil {
			s.fail("deliver %v: %v", op.Kind, err)
		}
	default:
		s.submit(op)
	}
}

// take waits (by settling) for a frame of kind k on ep and removes the
// frames up to it; setup only.
func (s *sim) take(ep *endpoint, k protocol.Kind) any {
	s.settle()
	ep.mu.Lock()
	defer ep.mu.Unlock()
	for i, f := range ep.frames {
		if f.kind == k {
			ep.frames = ep.frames[i+1:]
			return f.msg
		}
	}
	s.t.Fatalf("seed %d: setup: no %v among %d frames (closed %v)", s.seed, k, len(ep.frames), ep.closed)
	return nil
}

// setup registers users on every shard, links companions, and creates
// groups whose members span shards.
func (s *sim) setup() {
	s.open()
	nUsers := 5 + s.rng.IntN(3)
	for i := range nUsers {
		phone := s.phoneOn(i%simShards, i)
		ep := newEndpoint(s.t)
		s.rid++
		s.submit(storage.Op{Kind: storage.OpRequestCode, Phone: phone, RID: s.rid, Conn: ep.ref})
		s.take(ep, protocol.KindCodeSent)
		s.submit(storage.Op{Kind: storage.OpVerify, Phone: phone, Code: s.codes.code(phone), Name: "primary", RID: s.rid, Conn: ep.ref})
		r := s.take(ep, protocol.KindRegistered).(*pb.Registered)
		u := &simUser{idx: i, id: r.User}
		s.users = append(s.users, u)
		primary := s.newDevice(u, r.Device, r.Credential, "primary")
		// Companions: one user in two has one or two.
		if s.rng.IntN(2) == 0 {
			pep := s.login(primary)
			for c := range 1 + s.rng.IntN(2) {
				cep := newEndpoint(s.t)
				var random [10]byte
				for j := range random {
					random[j] = byte(s.rng.Uint32())
				}
				s.rid++
				s.submit(storage.Op{Kind: storage.OpLinkRequest, Code: storage.NewLinkCode(random), Name: "companion", RID: s.rid, Conn: cep.ref})
				code := s.take(cep, protocol.KindLinkCode).(*pb.LinkCode).Code
				s.rid++
				s.submit(storage.Op{Kind: storage.OpLinkApprove, Code: code, User: u.id, Device: primary.id, RID: s.rid, Conn: pep.ref})
				l := s.take(cep, protocol.KindLinked).(*pb.Linked)
				s.newDevice(u, l.Device, l.Credential, fmt.Sprintf("companion%d", c))
			}
			s.disconnect(primary)
		}
	}
	for gi := range 2 {
		admin := s.users[gi]
		g := &simGroup{admin: admin, state: map[*simUser]memberState{}, version: map[*simUser]int{}}
		var members []uint64
		for _, u := range s.users {
			if u != admin && s.rng.IntN(3) > 0 {
				members = append(members, u.id)
			}
		}
		ep := s.login(admin.devices[0])
		s.rid++
		s.submit(storage.Op{Kind: storage.OpGroupCreate, User: admin.id, Name: fmt.Sprintf("g%d", gi), Users: members, RID: s.rid, Conn: ep.ref})
		info := s.take(ep, protocol.KindGroupInfo).(*pb.GroupInfo)
		g.id = info.Group
		for _, m := range info.Members {
			g.state[s.user(m.User)] = isMember
		}
		s.groups = append(s.groups, g)
		s.disconnect(admin.devices[0])
	}
	s.settle()
	shardsUsed := map[uint16]bool{}
	for _, u := range s.users {
		shardsUsed[s.router.ShardOf(u.id)] = true
	}
	if len(shardsUsed) != simShards {
		s.t.Fatalf("seed %d: users on %d shards, want %d", s.seed, len(shardsUsed), simShards)
	}
}

func (s *sim) phoneOn(shard, tag int) string {
	return phoneOnShard(s.t, s.router, "+1556", uint16(shard), tag)
}

func (s *sim) newDevice(u *simUser, id uint32, cred []byte, name string) *simDevice {
	d := &simDevice{
		user: u, id: id, cred: cred, name: fmt.Sprintf("u%d.%s", u.idx, name),
		stream: map[uint64]string{}, count: map[uint64]int{}, gseq: map[uint64]uint64{},
		member: map[uint64]bool{}, receipts: map[receiptOf]uint64{}, lastFrom: map[uint64]uint64{},
		nextCMID: 1, pending: map[uint64]*simSend{},
	}
	u.devices = append(u.devices, d)
	s.devices = append(s.devices, d)
	return d
}

func (s *sim) user(id uint64) *simUser {
	for _, u := range s.users {
		if u.id == id {
			return u
		}
	}
	s.fail("unknown user %d", id)
	return &simUser{id: id}
}

// login connects d with its cursor and retries its unanswered sends.
func (s *sim) login(d *simDevice) *endpoint {
	d.ep = newEndpoint(s.t)
	s.submit(storage.Op{Kind: storage.OpLogin, User: d.user.id, Device: d.id, Credential: d.cred, Seq: d.last, Conn: d.ep.ref})
	s.note("%s logs in at %d", d.name, d.last)
	for _, cmid := range sortedKeys(d.pending) {
		s.submitSend(d.pending[cmid])
	}
	return d.ep
}

func (s *sim) disconnect(d *simDevice) {
	if d.ep == nil {
		return
	}
	s.submit(storage.Op{Kind: storage.OpLogout, User: d.user.id, Device: d.id, Conn: d.ep.ref})
	d.ep.Close(0)
	d.ep = nil
	s.note("%s disconnects", d.name)
}

func sortedKeys[K interface{ ~uint64 }, V any](m map[K]V) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func (s *sim) submitSend(m *simSend) {
	op := storage.Op{Kind: storage.OpSend, From: m.key.user, FromDevice: m.key.device, CMID: m.key.cmid, Body: []byte(m.body), Conn: m.from.ep.ref}
	if m.group != nil {
		op.Group = m.group.id
	} else {
		op.User = m.to.id
	}
	s.submit(op)
}

// send makes a new send from d: 1:1 to another user, or to a group.
func (s *sim) send(d *simDevice) {
	cmid := d.nextCMID
	d.nextCMID++
	m := &simSend{key: sendKey{d.user.id, d.id, cmid}, from: d}
	m.body = fmt.Sprintf("%d/%d/%d", m.key.user, m.key.device, m.key.cmid)
	if s.rng.IntN(3) == 0 {
		g := s.groups[s.rng.IntN(len(s.groups))]
		m.group = g
		m.stable = map[*simUser]int{}
		for u, st := range g.state {
			if st == isMember {
				m.stable[u] = g.version[u]
			}
		}
		s.note("%s sends %s to group %d", d.name, m.body, g.id)
	} else {
		to := s.users[s.rng.IntN(len(s.users))]
		if to == d.user {
			to = s.users[(to.idx+1)%len(s.users)]
		}
		m.to = to
		s.note("%s sends %s to u%d", d.name, m.body, to.idx)
	}
	s.sends[m.key] = m
	d.pending[cmid] = m
	s.submitSend(m)
}

// changeMembers has a group's admin add or remove one user.
func (s *sim) changeMembers(g *simGroup) {
	d := g.admin.devices[0]
	if d.ep == nil {
		return
	}
	var u *simUser
	for range 10 {
		if c := s.users[s.rng.IntN(len(s.users))]; c != g.admin {
			u = c
			break
		}
	}
	if u == nil {
		return
	}
	gop := pb.GroupOp_GROUP_OP_ADD
	if g.state[u] == isMember {
		gop = pb.GroupOp_GROUP_OP_REMOVE
	}
	g.state[u] = changing
	g.version[u]++
	s.rid++
	s.pendingChanges = append(s.pendingChanges, memberChange{rid: s.rid, ep: d.ep, group: g, user: u, op: gop})
	s.note("u%d %v u%d in group %d (rid %d)", g.admin.idx, gop, u.idx, g.id, s.rid)
	s.submit(storage.Op{Kind: storage.OpGroupUpdate, User: g.admin.id, Group: g.id, GroupOp: gop, Users: []uint64{u.id}, RID: s.rid, Conn: d.ep.ref})
}

// memberChange is a membership change waiting for its answer.
type memberChange struct {
	rid   uint32
	ep    *endpoint
	group *simGroup
	user  *simUser
	op    pb.GroupOp
}

// read has d's user mark the messages of a peer read up to the last it got.
func (s *sim) read(d *simDevice) {
	peers := sortedKeys(d.lastFrom)
	if len(peers) == 0 {
		return
	}
	peer := peers[s.rng.IntN(len(peers))]
	s.rid++
	s.pendingReads = append(s.pendingReads, pendingRead{rid: s.rid, ep: d.ep, read: simRead{reader: d.user, sender: s.user(peer), upTo: d.lastFrom[peer]}})
	s.note("%s reads u%d up to %d (rid %d)", d.name, s.user(peer).idx, d.lastFrom[peer], s.rid)
	s.submit(storage.Op{Kind: storage.OpRead, User: peer, From: d.user.id, UpTo: d.lastFrom[peer], RID: s.rid, Conn: d.ep.ref})
}

// pendingRead is a read waiting for its Ok.
type pendingRead struct {
	rid  uint32
	ep   *endpoint
	read simRead
}

// run sets the node up, runs steps random steps, lets the node settle and
// checks the end state. It reports whether every check passed.
func (s *sim) run(steps int) bool {
	s.setup()
	for s.step = 1; s.step <= steps && s.failure == ""; s.step++ {
		s.randomStep()
	}
	if s.failure == "" {
		s.finish()
	}
	return s.failure == ""
}

// randomStep does one thing, chosen by the seed.
func (s *sim) randomStep() {
	switch r := s.rng.IntN(113); {
	case r >= 110:
		if d := s.online(); d != nil {
			s.revoke(d)
		}
	case r >= 100:
		sh := s.shards[s.rng.IntN(len(s.shards))]
		s.note("sync shard %d", sh.ID())
		s.sync(sh)
	case r < 30:
		s.network()
	case r < 45:
		sh := s.shards[s.rng.IntN(len(s.shards))]
		sh.Step()
	case r < 60:
		if d := s.online(); d != nil {
			s.process(d, s.rng.IntN(8), s.rng.IntN(3) > 0)
		}
	case r < 72:
		if d := s.online(); d != nil {
			s.send(d)
		}
	case r < 78:
		d := s.devices[s.rng.IntN(len(s.devices))]
		if d.ep == nil {
			s.login(d)
		} else {
			s.disconnect(d)
		}
	case r < 81:
		if d := s.online(); d != nil {
			s.read(d)
		}
	case r < 84:
		s.changeMembers(s.groups[s.rng.IntN(len(s.groups))])
	case r < 92:
		d := time.Duration(100+s.rng.IntN(2900)) * time.Millisecond
		s.clock.Advance(d)
		s.note("clock +%v, tick", d)
		for _, sh := range s.shards {
			sh.Tick()
		}
	case r < 95:
		s.crash()
	case r < 96:
		s.restart()
	default:
		for _, sh := range s.shards {
			sh.Step()
		}
	}
}

// online returns a random connected device, or nil.
func (s *sim) online() *simDevice {
	var on []*simDevice
	for _, d := range s.devices {
		if d.ep != nil {
			on = append(on, d)
		}
	}
	if len(on) == 0 {
		return nil
	}
	return on[s.rng.IntN(len(on))]
}

// network delivers, loses, repeats or reorders one forward between shards.
// Internal requests (group joins, links, watches) are delivered in order:
// the outbox protocol is what must survive a faulty network.
func (s *sim) network() {
	if len(s.net) == 0 {
		return
	}
	i := 0
	if s.rng.IntN(4) == 0 {
		i = s.rng.IntN(len(s.net)) // overtakes the ones before it
	}
	op := s.net[i]
	outbox := op.Kind == storage.OpForward || op.Kind == storage.OpForwardDone
	if !outbox {
		i, op = 0, s.net[0]
	}
	switch r := s.rng.IntN(20); {
	case outbox && r == 0:
		s.net = append(s.net[:i:i], s.net[i+1:]...)
		s.note("net loses %v %d→%d #%d", op.Kind, op.Source, op.Dest, op.OutSeq)
	case outbox && r == 1:
		s.note("net repeats %v %d→%d #%d", op.Kind, op.Source, op.Dest, op.OutSeq)
		s.deliverOp(op)
	default:
		s.net = append(s.net[:i:i], s.net[i+1:]...)
		if outbox {
			s.note("net delivers %v %d→%d #%d", op.Kind, op.Source, op.Dest, op.OutSeq)
		} else {
			s.note("net delivers %v", op.Kind)
		}
		s.deliverOp(op)
	}
}

// crash kills the node: the file system keeps what was synced and a random
// part of what was not; queued ops, forwards and connections are lost.
func (s *sim) crash() {
	pct := s.rng.IntN(100)
	s.note("CRASH (keeping %d%% of unsynced data)", pct)
	for _, sh := range s.shards {
		if wanted, urgent := sh.SyncWanted(); wanted && !urgent {
			s.lazyCrashes++
			s.note("shard %d holds only promises that may wait unsynced", sh.ID())
		}
	}
	// The clone draws from its own generator: how much it draws depends on
	// what Pebble's background work left unsynced, which the seed does not
	// decide, and must not shift the seed's other choices.
	crashRNG := rand.New(rand.NewPCG(s.rng.Uint64(), s.seed))
	clone := s.fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: pct, RNG: crashRNG})
	s.closeShards()
	s.fs = clone
	s.dropConnections()
	s.open()
}

// restart stops the node cleanly and starts it again.
func (s *sim) restart() {
	s.note("RESTART")
	s.closeShards()
	s.dropConnections()
	s.open()
}

func (s *sim) dropConnections() {
	s.net = nil
	for _, d := range s.devices {
		if d.ep != nil {
			d.ep.Close(0)
			d.ep = nil
		}
	}
	s.pendingChanges = nil
	s.pendingReads = nil
	s.pendingRevokes = nil
}

// process has d take up to n frames from its connection (all if n is 0),
// checking each, and acknowledge what it processed if ack.
func (s *sim) process(d *simDevice, n int, ack bool) {
	d.ep.mu.Lock()
	frames := d.ep.frames
	if n == 0 || n > len(frames) {
		n = len(frames)
	}
	taken := frames[:n:n]
	d.ep.frames = frames[n:]
	closed := d.ep.isClosed
	d.ep.mu.Unlock()
	for _, f := range taken {
		s.frame(d, f)
	}
	if closed && len(d.ep.frames) == 0 {
		s.note("%s: connection closed by the server (%v)", d.name, d.ep.closed)
		d.ep = nil
		return
	}
	if ack && d.last > 0 && len(taken) > 0 {
		s.note("%s acks %d", d.name, d.last)
		s.submit(storage.Op{Kind: storage.OpAck, User: d.user.id, Device: d.id, Seq: d.last, Conn: d.ep.ref})
	}
}

// frame checks and records one frame d received.
func (s *sim) frame(d *simDevice, f frame) {
	switch m := f.msg.(type) {
	case *pb.Sent:
		s.sent(d, m)
	case *pb.Error:
		s.refused(d, m)
	case *pb.GroupInfo:
		s.answerChange(d, m.Rid, m)
	case *pb.Ok:
		s.answerChange(d, m.Rid, nil)
		s.answerRead(d, m.Rid)
		s.answerRevoke(d, m.Rid, nil)
	case codec.Message:
		if s.entry(d, m.Seq, fmt.Sprintf("M %d %d %s %d/%d", m.ID, m.From, m.Body, m.Group, m.GSeq)) {
			s.message(d, m)
		}
	case codec.Receipt:
		if s.entry(d, m.Seq, fmt.Sprintf("R %v %d %d %d", m.Type, m.Peer, m.UpTo, m.Group)) {
			k := receiptOf{m.Type, m.Peer, m.Group}
			d.receipts[k] = max(d.receipts[k], m.UpTo)
		}
	case *pb.Receipts:
		if s.entry(d, m.Seq, fmt.Sprintf("Rs %v %d %v", m.Type, m.Group, m.Items)) {
			for _, it := range m.Items {
				k := receiptOf{m.Type, it.Peer, m.Group}
				d.receipts[k] = max(d.receipts[k], it.UpTo)
			}
		}
	case *pb.Revoked:
		if s.entry(d, m.Seq, fmt.Sprintf("X %d %d %d/%d %d", m.Id, m.From, m.Group, m.MessageGseq, m.To)) {
			s.revoked(d, m)
		}
	case *pb.GroupEvent:
		if s.entry(d, m.Seq, fmt.Sprintf("E %d %d %v %v", m.Group, m.Gseq, m.Op, m.Members)) {
			s.groupOrder(d, m.Group, m.Gseq)
			if slices.Contains(m.Members, d.user.id) {
				switch m.Op {
				case pb.GroupOp_GROUP_OP_CREATE, pb.GroupOp_GROUP_OP_ADD:
					d.member[m.Group] = true
				case pb.GroupOp_GROUP_OP_REMOVE, pb.GroupOp_GROUP_OP_LEAVE:
					d.member[m.Group] = false
				}
			}
		}
	case *pb.Synced, *pb.LinkCode, *pb.Linked, *pb.Registered, *pb.CodeSent:
	default:
		s.fail("%s got an unexpected %T", d.name, m)
	}
}

// entry checks the inbox entry at seq (its content summed up as fp) and
// reports whether it is new to d. A device's entries come in seq order with
// no gap; one seen again carries the same content; the devices of one user
// share one inbox, so they hold the same content at every seq.
func (s *sim) entry(d *simDevice, seq uint64, fp string) bool {
	if seq <= d.last {
		if prev, ok := d.stream[seq]; ok && !sameEntry(prev, fp) {
			s.fail("%s: seq %d was %q, now %q", d.name, seq, prev, fp)
		}
		return false
	}
	if seq != d.last+1 {
		s.fail("%s: seq %d after %d: entries skipped", d.name, seq, d.last)
	}
	for _, o := range d.user.devices {
		if prev, ok := o.stream[seq]; ok && !sameEntry(prev, fp) {
			s.fail("%s: seq %d is %q, but %s has %q there", d.name, seq, fp, o.name, prev)
		}
	}
	d.stream[seq] = fp
	d.last = seq
	if *simVerbose {
		s.note("%s takes #%d %s", d.name, seq, fp)
	}
	return true
}

// message checks a new Message entry.
func (s *sim) message(d *simDevice, m codec.Message) {
	var k sendKey
	if _, err := fmt.Sscanf(string(m.Body), "%d/%d/%d", &k.user, &k.device, &k.cmid); err != nil {
		s.fail("%s: message %d with a body no client sent: %q", d.name, m.ID, m.Body)
		return
	}
	snd := s.sends[k]
	switch {
	case snd == nil:
		s.fail("%s: message %d was never sent (%q)", d.name, m.ID, m.Body)
		return
	case m.From != k.user || m.FromDevice != k.device:
		s.fail("%s: message %q says it is from %d/%d", d.name, m.Body, m.From, m.FromDevice)
	case snd.id != 0 && snd.id != m.ID:
		s.fail("%s: send %q delivered as message %d, known as %d", d.name, m.Body, m.ID, snd.id)
	}
	snd.id = m.ID
	s.gotRevoked(d, m.ID)
	if d.count[m.ID]++; d.count[m.ID] > 1 {
		s.fail("%s: message %d (%q) delivered twice", d.name, m.ID, m.Body)
	}
	if snd.group != nil {
		if m.Group != snd.group.id {
			s.fail("%s: group send %q arrived for group %d", d.name, m.Body, m.Group)
		}
		s.groupOrder(d, m.Group, m.GSeq)
		if !d.member[m.Group] {
			s.fail("%s: group message %d (gseq %d) while not a member of group %d", d.name, m.ID, m.GSeq, m.Group)
		}
		return
	}
	switch d.user {
	case snd.to:
		if m.To != 0 {
			s.fail("%s: incoming message %d has To %d", d.name, m.ID, m.To)
		}
		d.lastFrom[m.From] = max(d.lastFrom[m.From], m.ID)
	case snd.from.user:
		if m.To != snd.to.id {
			s.fail("%s: copy of %d says To %d, want %d", d.name, m.ID, m.To, snd.to.id)
		}
	default:
		s.fail("%s: message %d for u%d reached u%d", d.name, m.ID, snd.to.idx, d.user.idx)
	}
}

// groupOrder checks that group entries reach d in gseq order.
func (s *sim) groupOrder(d *simDevice, group, gseq uint64) {
	if gseq <= d.gseq[group] {
		s.fail("%s: group %d gseq %d after %d", d.name, group, gseq, d.gseq[group])
	}
	d.gseq[group] = gseq
}

// sent records a Sent answer.
func (s *sim) sent(d *simDevice, m *pb.Sent) {
	snd := d.pending[m.Cmid]
	if snd == nil {
		snd = s.sends[sendKey{d.user.id, d.id, m.Cmid}]
		if snd == nil {
			s.fail("%s: Sent for cmid %d never sent", d.name, m.Cmid)
			return
		}
	}
	if snd.id != 0 && snd.id != m.Id {
		s.fail("%s: Sent %d for %q, delivered or answered before as %d", d.name, m.Id, snd.body, snd.id)
	}
	snd.id = m.Id
	if !snd.sent && snd.group != nil {
		// The members throughout: members when the send was made whose
		// membership nobody touched until now.
		for u, v := range snd.stable {
			if snd.group.state[u] == isMember && snd.group.version[u] == v {
				snd.expected = append(snd.expected, u)
			}
		}
	}
	snd.sent = true
	delete(d.pending, m.Cmid)
}

// refused handles an Error: a send or request that failed.
func (s *sim) refused(d *simDevice, m *pb.Error) {
	if m.Cmid != 0 {
		snd := d.pending[m.Cmid]
		if snd == nil {
			return
		}
		switch m.Code {
		case protocol.CodeOverloaded, protocol.CodeInternal:
			// retried at the next login
		case protocol.CodeNotMember:
			if snd.group == nil {
				s.fail("%s: 1:1 send refused NOT_MEMBER", d.name)
			}
			snd.refused = m.Code
			delete(d.pending, m.Cmid)
		default:
			s.fail("%s: send %q refused: %v", d.name, snd.body, m.Code)
		}
		return
	}
	if s.answerRevoke(d, m.Rid, m) {
		return
	}
	for i, c := range s.pendingChanges {
		if c.rid == m.Rid && c.ep == d.ep {
			s.pendingChanges = append(s.pendingChanges[:i], s.pendingChanges[i+1:]...)
			s.note("change rid %d refused: %v", m.Rid, m.Code)
			return // the state stays changing: the model no longer knows
		}
	}
}

// answerChange records the answer to a membership change.
func (s *sim) answerChange(d *simDevice, rid uint32, info *pb.GroupInfo) {
	for i, c := range s.pendingChanges {
		if c.rid != rid || c.ep != d.ep {
			continue
		}
		s.pendingChanges = append(s.pendingChanges[:i], s.pendingChanges[i+1:]...)
		g := c.group
		g.version[c.user]++
		switch {
		case c.op == pb.GroupOp_GROUP_OP_REMOVE:
			g.state[c.user] = nonMember
		case info != nil && slices.ContainsFunc(info.Members, func(m *pb.Member) bool { return m.User == c.user.id }):
			g.state[c.user] = isMember
		default:
			g.state[c.user] = nonMember // refused (info.Refused)
		}
		return
	}
}

// answerRead records a confirmed read.
func (s *sim) answerRead(d *simDevice, rid uint32) {
	for i, r := range s.pendingReads {
		if r.rid == rid && r.ep == d.ep {
			s.pendingReads = append(s.pendingReads[:i], s.pendingReads[i+1:]...)
			s.reads = append(s.reads, r.read)
			return
		}
	}
}

// finish lets the node settle with every device connected, acknowledging
// everything and retrying what is unanswered, then checks that everything
// acknowledged arrived everywhere it should.
func (s *sim) finish() {
	s.step = -1
	s.note("FINISH")
	for round := 0; ; round++ {
		for _, d := range s.devices {
			if d.ep == nil {
				s.login(d)
			}
		}
		s.settle()
		for _, d := range s.devices {
			if d.ep != nil {
				s.process(d, 0, true)
			}
		}
		s.settle()
		if s.failure != "" {
			return
		}
		if s.revokesUnanswered() == 0 && s.quiet() {
			break
		}
		if round == 200 {
			s.fail("the node did not converge: %s%s", s.unsettled(), s.revokesUnsettled())
			return
		}
		// Past the outbox's retransmission interval, for what the network
		// lost.
		s.clock.Advance(2 * time.Second)
		for _, sh := range s.shards {
			sh.Tick()
		}
	}
	s.check()
}

// quiet reports whether nothing is left to do: no forwards, no queued ops,
// no unanswered sends, no frames unprocessed.
func (s *sim) quiet() bool {
	return s.unsettled() == ""
}

func (s *sim) unsettled() string {
	if len(s.net) > 0 {
		return fmt.Sprintf("%d forwards in flight", len(s.net))
	}
	for _, sh := range s.shards {
		if st := sh.Stats(); st.QueueLength > 0 {
			return fmt.Sprintf("shard %d has %d ops queued", sh.ID(), st.QueueLength)
		}
	}
	for _, d := range s.devices {
		if len(d.pending) > 0 {
			return fmt.Sprintf("%s has %d sends unanswered (first: cmid %d)", d.name, len(d.pending), sortedKeys(d.pending)[0])
		}
		if d.ep == nil {
			return d.name + " is offline"
		}
		d.ep.mu.Lock()
		n := len(d.ep.frames)
		d.ep.mu.Unlock()
		if n > 0 {
			return fmt.Sprintf("%s has %d frames to process", d.name, n)
		}
	}
	// Every outbox confirmed: a pair with entries unconfirmed still works.
	return s.outboxBusy()
}

func (s *sim) outboxBusy() string {
	for _, sh := range s.shards {
		if st := sh.Stats(); st.Unconfirmed > 0 {
			return fmt.Sprintf("shard %d has %d outbox entries unconfirmed", sh.ID(), st.Unconfirmed)
		}
	}
	return ""
}

// check verifies the end state against everything the model recorded.
func (s *sim) check() {
	s.checkRevokes()
	for _, k := range sortedSends(s.sends) {
		m := s.sends[k]
		if !m.sent {
			if m.refused == 0 {
				s.fail("send %q neither answered nor refused after settling", m.body)
			}
			continue
		}
		if s.revokes[m.id] != nil {
			continue // deleted for everyone: checkRevokes
		}
		var want []*simDevice
		var who []*simUser
		if m.group != nil {
			who = m.expected
		} else {
			who = []*simUser{m.to}
		}
		for _, u := range who {
			if u == m.from.user {
				continue
			}
			want = append(want, u.devices...)
		}
		if len(m.from.user.devices) > 1 {
			want = append(want, m.from.user.devices...) // [S-8-17] every device of the sender
		}
		for _, d := range want {
			if d.count[m.id] != 1 {
				s.fail("acknowledged %q (message %d) reached %s %d times", m.body, m.id, d.name, d.count[m.id])
			}
		}
		// The delivered receipt reaches every device of the sender.
		if m.group == nil {
			for _, d := range m.from.user.devices {
				if got := d.receipts[receiptOf{pb.ReceiptType_RECEIPT_DELIVERED, m.to.id, 0}]; got < m.id {
					s.fail("%s: delivered receipt from u%d up to %d, want at least %d (%q)", d.name, m.to.idx, got, m.id, m.body)
				}
			}
		} else {
			for _, u := range m.expected {
				if u == m.from.user {
					continue
				}
				for _, d := range m.from.user.devices {
					if got := d.receipts[receiptOf{pb.ReceiptType_RECEIPT_DELIVERED, u.id, m.group.id}]; got < m.id {
						s.fail("%s: group delivered receipt from u%d up to %d, want at least %d (%q)", d.name, u.idx, got, m.id, m.body)
					}
				}
			}
		}
	}
	for _, r := range s.reads {
		for _, d := range r.sender.devices {
			if got := d.receipts[receiptOf{pb.ReceiptType_RECEIPT_READ, r.reader.id, 0}]; got < r.upTo {
				s.fail("%s: read receipt from u%d up to %d, want at least %d", d.name, r.reader.idx, got, r.upTo)
			}
		}
		if len(r.reader.devices) > 1 {
			for _, d := range r.reader.devices {
				if got := d.receipts[receiptOf{pb.ReceiptType_RECEIPT_SELF_READ, r.sender.id, 0}]; got < r.upTo {
					s.fail("%s: own read of u%d up to %d, want at least %d", d.name, r.sender.idx, got, r.upTo)
				}
			}
		}
	}
}

func sortedSends(m map[sendKey]*simSend) []sendKey {
	keys := make([]sendKey, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b sendKey) int {
		switch {
		case a.user != b.user:
			return cmpU64(a.user, b.user)
		case a.device != b.device:
			return cmpU64(uint64(a.device), uint64(b.device))
		}
		return cmpU64(a.cmid, b.cmid)
	})
	return keys
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
