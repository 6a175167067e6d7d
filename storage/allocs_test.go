package storage_test

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
	"github.com/parley-im/parley/router"
	"github.com/parley-im/parley/storage"
)

// The message path's allocations, counted (STYLE.md, "Hot path"). One
// stepped shard, or two for the paths that cross shards (no actor, no
// syncer: every allocation counted is the cycle's own, on the test's
// goroutine), carries a message from SEND to the last ACK of its
// receipt; the tests fail on any allocation beyond the ones named, so a
// new one on the path goes red.

// Allocations per message left on the path: none. A new one fails the
// tests; name it here if it must stay. Find one with go test ./storage
// -run TestAllocsGroup -memprofile m.pprof -memprofilerate 1 (go tool
// pprof -sample_index=alloc_objects).
const (
	want1to1  = 0
	wantGroup = 0
)

// allocsPerMessage sends a few messages to warm up (users loaded, buffers
// grown) and settles st's memtable, then counts the allocations of message
// in windows of runs messages and fails unless the fewest of a window
// are want per message: Pebble now and then grows a buffer or its WAL
// file, or rotates a file, which a window may catch and the steady path
// does not do. A race build, whose detector allocates and whose sync.Pool
// drops items at random, only logs them. It returns how many messages it
// sent.
func allocsPerMessage(t *testing.T, st *steppedShard, what string, message func(), runs int, want float64) int {
	t.Helper()
	const warm, windows = 3, 5
	for range warm {
		message()
	}
	st.settleMemtable()
	allocs := math.Inf(1)
	for range windows {
		allocs = min(allocs, testing.AllocsPerRun(runs, message)) // runs+1 messages: one to warm up
	}
	t.Logf("allocations per %s: %v", what, allocs)
	if !raceBuild && allocs != want {
		t.Errorf("%v allocations per %s, want %v", allocs, what, want)
	}
	return warm + windows*(runs+1)
}

// quietEndpoint is an Endpoint that allocates nothing: it counts the
// frames it gets by kind and keeps the highest entry seq, enough to
// acknowledge what it got. The shard is stepped, so its calls come on the
// test's goroutine.
type quietEndpoint struct {
	ref   storage.ConnRef
	last  uint64   // the highest seq of the entries posted
	kinds [256]int // frames got, by kind
	auth  bool     // Authenticated was called
	dec   *codec.Decompressor
	buf   []byte // decompression scratch
}

func newQuietEndpoint(t *testing.T) *quietEndpoint {
	dec, err := codec.NewDecompressor(protocol.MaxFrameBody)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dec.Close)
	e := &quietEndpoint{ref: storage.ConnRef{ID: testConns.last.Add(1)}, dec: dec}
	testConns.m.Store(e.ref, e)
	t.Cleanup(func() { testConns.m.Delete(e.ref) })
	return e
}

func (e *quietEndpoint) Post(b []byte) bool {
	e.decode(b)
	return true
}

func (e *quietEndpoint) decode(b []byte) {
	for len(b) > 0 {
		f, n, _, err := codec.Parse(b, protocol.MaxFrameBody)
		if err != nil || n == 0 {
			panic(fmt.Sprintf("quiet endpoint got a bad frame: % x: %v", b, err))
		}
		b = b[n:]
		body := f.Body
		if f.Compressed {
			e.buf, err = e.dec.Decompress(e.buf[:0], f.Body)
			if err != nil {
				panic(err)
			}
			body = e.buf
		}
		if f.Kind == protocol.KindBatch {
			e.decode(body)
			continue
		}
		e.kinds[f.Kind]++
		switch f.Kind {
		case protocol.KindMessage, protocol.KindReceipt, protocol.KindReceipts:
			// An entry: its seq is field 1 (codec.AppendEntry).
			num, typ, n := protowire.ConsumeTag(body)
			if n < 0 || num != 1 || typ != protowire.VarintType {
				panic(fmt.Sprintf("entry %v without a seq: % x", f.Kind, body))
			}
			seq, _ := protowire.ConsumeVarint(body[n:])
			e.last = max(e.last, seq)
		}
	}
}

func (e *quietEndpoint) Reply(b []byte)                { e.decode(b) }
func (e *quietEndpoint) Authenticated(storage.Session) { e.auth = true }
func (e *quietEndpoint) Fail(code protocol.Code) {
	panic(fmt.Sprintf("quiet endpoint failed: %v", code))
}
func (e *quietEndpoint) Close(code protocol.Code) {
	panic(fmt.Sprintf("quiet endpoint closed: %v", code))
}
func (e *quietEndpoint) LookupPart(uint64, []*pb.Contact) {}

// steppedShard is one node's shards, stepped on the test's goroutine in
// turn, behind a router of their own: one shard, or two for the paths
// that cross shards.
type steppedShard struct {
	t      *testing.T
	router *router.Router
	shards []*storage.Shard
	codes  *codeBox
	rid    uint32
}

// quietDevice is a registered device and its quiet connection.
type quietDevice struct {
	user   uint64
	device uint32
	cred   []byte
	ep     *quietEndpoint
}

func newSteppedShard(t *testing.T) *steppedShard { return newSteppedShards(t, 1) }

// newSteppedShards opens count shards on one router, each stepped.
func newSteppedShards(t *testing.T, count int) *steppedShard {
	r, err := router.New(count)
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{now: time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)}
	var n byte
	st := &steppedShard{t: t, router: r, codes: &codeBox{}}
	fs := vfs.NewMem()
	for id := range count {
		sh, err := storage.Open(storage.Config{
			ID: uint16(id), Dir: fmt.Sprintf("shard-%d", id), FS: fs,
			Forwarder: r, Conns: testConns, Codes: st.codes, Now: clk.Now,
			Rand: func(b []byte) {
				for i := range b {
					n++
					b[i] = n
				}
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := sh.Close(); err != nil {
				t.Error(err)
			}
		})
		st.shards = append(st.shards, sh)
	}
	if err := r.Attach(st.shards); err != nil {
		t.Fatal(err)
	}
	for _, sh := range st.shards {
		sh.Step() // replays the outbox, runs maintenance
	}
	return st
}

// settleMemtable flushes enough times for Pebble's memtables to reach 8
// MiB, so no rotation (and no flush, whose allocations would be counted)
// falls among the messages counted.
func (st *steppedShard) settleMemtable() {
	for _, sh := range st.shards {
		for range 6 {
			if err := sh.Flush(); err != nil {
				st.t.Fatal(err)
			}
		}
	}
}

// submit queues op; run applies it.
func (st *steppedShard) submit(op storage.Op) {
	if err := st.router.Submit(op); err != nil {
		st.t.Fatalf("submit %v: %v", op.Kind, err)
	}
}

// run steps and syncs the shards in turn until nothing is queued on any,
// so every effect of what was submitted has been carried out, forwards
// and their answers included.
func (st *steppedShard) run() {
	for range 100 {
		queued := 0
		for _, sh := range st.shards {
			sh.Step()
			if err := sh.Sync(); err != nil {
				st.t.Fatal(err)
			}
		}
		for _, sh := range st.shards {
			queued += sh.Stats().QueueLength
		}
		if queued == 0 {
			return
		}
	}
	st.t.Fatal("the shards did not settle")
}

// take runs the shard and takes a frame of kind k from ep.
func (st *steppedShard) take(ep *endpoint, k protocol.Kind) any {
	st.run()
	return ep.take(st.t, k)
}

// register registers a user with the phone +1555000nnnn and returns its
// primary device.
func (st *steppedShard) register(i int) quietDevice {
	return st.registerPhone(fmt.Sprintf("+1555000%04d", i))
}

// registerOn registers user i on shard id: a phone +1555nnnmmmm whose
// slot the shard owns.
func (st *steppedShard) registerOn(id uint16, i int) quietDevice {
	return st.registerPhone(phoneOnShard(st.t, st.router, "+1555", id, i))
}

// registerPhone registers a user with phone and returns its primary device.
func (st *steppedShard) registerPhone(phone string) quietDevice {
	ep := newEndpoint(st.t)
	st.rid++
	st.submit(storage.Op{Kind: storage.OpRequestCode, Phone: phone, RID: st.rid, Conn: ep.ref})
	st.take(ep, protocol.KindCodeSent)
	st.rid++
	st.submit(storage.Op{Kind: storage.OpVerify, Phone: phone, Code: st.codes.code(phone), Name: "primary", RID: st.rid, Conn: ep.ref})
	r := st.take(ep, protocol.KindRegistered).(*pb.Registered)
	return quietDevice{user: r.User, device: r.Device, cred: r.Credential}
}

// link links a companion to primary's user and returns it.
func (st *steppedShard) link(primary quietDevice) quietDevice {
	return st.linkWith(primary, [10]byte{byte(primary.user), 7})
}

// linkWith links a companion to primary's user with the link code made of
// random and returns it.
func (st *steppedShard) linkWith(primary quietDevice, random [10]byte) quietDevice {
	pep := newEndpoint(st.t)
	st.submit(storage.Op{Kind: storage.OpLogin, User: primary.user, Device: primary.device, Credential: primary.cred, Conn: pep.ref})
	cep := newEndpoint(st.t)
	st.rid++
	st.submit(storage.Op{Kind: storage.OpLinkRequest, Code: storage.NewLinkCode(random), Name: "companion", RID: st.rid, Conn: cep.ref})
	code := st.take(cep, protocol.KindLinkCode).(*pb.LinkCode).Code
	st.rid++
	st.submit(storage.Op{Kind: storage.OpLinkApprove, Code: code, User: primary.user, Device: primary.device, RID: st.rid, Conn: pep.ref})
	l := st.take(cep, protocol.KindLinked).(*pb.Linked)
	st.submit(storage.Op{Kind: storage.OpLogout, User: primary.user, Device: primary.device, Conn: pep.ref})
	st.run()
	return quietDevice{user: primary.user, device: l.Device, cred: l.Credential}
}

// login connects d on a new quiet endpoint.
func (st *steppedShard) login(d *quietDevice) {
	d.ep = newQuietEndpoint(st.t)
	st.submit(storage.Op{Kind: storage.OpLogin, User: d.user, Device: d.device, Credential: d.cred, Conn: d.ep.ref})
	st.run()
	if !d.ep.auth {
		st.t.Fatalf("login of %d/%d failed", d.user, d.device)
	}
}

// ack queues d's acknowledgement of everything it got.
func (st *steppedShard) ack(d quietDevice) {
	st.submit(storage.Op{Kind: storage.OpAck, User: d.user, Device: d.device, Seq: d.ep.last, Conn: d.ep.ref})
}

// TestAllocsOneToOne counts the allocations of a 1:1 message between two
// online users of one shard, the recipient with two devices: the SEND and
// its delivery, both devices' ACKs and the delivered receipt they make,
// and the sender's ACK of that receipt. Three cycles, each synced.
func TestAllocsOneToOne(t *testing.T) {
	st := newSteppedShard(t)
	a := st.register(1)
	b1 := st.register(2)
	b2 := st.link(b1)
	for _, d := range []*quietDevice{&a, &b1, &b2} {
		st.login(d)
	}
	body := []byte("twenty bytes of text")
	cmid := uint64(0)
	message := func() {
		cmid++
		st.submit(storage.Op{Kind: storage.OpSend, From: a.user, FromDevice: a.device, User: b1.user, CMID: cmid, Body: body, Conn: a.ep.ref})
		st.run()
		st.ack(b1)
		st.ack(b2)
		st.run()
		st.ack(a)
		st.run()
	}
	was := [...]int{a.ep.kinds[protocol.KindSent], a.ep.kinds[protocol.KindReceipt], b1.ep.kinds[protocol.KindMessage], b2.ep.kinds[protocol.KindMessage]}
	n := allocsPerMessage(t, st, "1:1 message (delivery to 2 devices, their ACKs, the delivered receipt and its ACK)", message, 20, want1to1)
	now := [...]int{a.ep.kinds[protocol.KindSent], a.ep.kinds[protocol.KindReceipt], b1.ep.kinds[protocol.KindMessage], b2.ep.kinds[protocol.KindMessage]}
	for i, what := range []string{"the sender's Sent", "the sender's receipts", "b's first device's messages", "b's second device's messages"} {
		if got := now[i] - was[i]; got != n {
			t.Errorf("%s: %d over %d messages", what, got, n)
		}
	}
}

// TestAllocsGroup counts the allocations of a message to a group of 32
// online members of one shard: the SEND and its fan-out, every member's
// ACK and the Receipts entry they make for the sender, and the sender's
// ACK of it.
func TestAllocsGroup(t *testing.T) {
	st := newSteppedShard(t)
	admin := st.register(0)
	members := make([]quietDevice, 32)
	for i := range members {
		members[i] = st.register(i + 1)
	}
	st.countGroup(admin, members, "message to 32 members (their ACKs, the Receipts entry and its ACK)", wantGroup)
}

// countGroup makes a group of admin and members, logs them all in, and
// counts the allocations of a message from admin to it: the SEND and its
// fan-out, every member's ACK and the Receipts entries they make (one
// per shard of members), and admin's ACK of them.
func (st *steppedShard) countGroup(admin quietDevice, members []quietDevice, what string, want float64) {
	t := st.t
	ids := make([]uint64, len(members))
	shards := map[uint16]bool{}
	for i, m := range members {
		ids[i] = m.user
		shards[st.router.ShardOf(m.user)] = true
	}
	aep := newEndpoint(t)
	st.rid++
	st.submit(storage.Op{Kind: storage.OpGroupCreate, User: admin.user, Name: "allocs", Users: ids, RID: st.rid, Conn: aep.ref})
	g := st.take(aep, protocol.KindGroupInfo).(*pb.GroupInfo).Group
	st.submit(storage.Op{Kind: storage.OpLogout, User: admin.user, Device: admin.device, Conn: aep.ref})
	st.run()
	st.login(&admin)
	for i := range members {
		st.login(&members[i])
	}
	body := []byte("twenty bytes of text")
	cmid := uint64(0)
	message := func() {
		cmid++
		st.submit(storage.Op{Kind: storage.OpSend, From: admin.user, FromDevice: admin.device, Group: g, CMID: cmid, Body: body, Conn: admin.ep.ref})
		st.run()
		for _, m := range members {
			st.ack(m)
		}
		st.run()
		st.ack(admin)
		st.run()
	}
	sent, receipts := admin.ep.kinds[protocol.KindSent], admin.ep.kinds[protocol.KindReceipts]
	got := make([]int, len(members))
	for i, m := range members {
		got[i] = m.ep.kinds[protocol.KindMessage]
	}
	n := allocsPerMessage(t, st, what, message, 10, want)
	if d := admin.ep.kinds[protocol.KindSent] - sent; d != n {
		t.Errorf("the sender got %d Sent over %d messages", d, n)
	}
	if d := admin.ep.kinds[protocol.KindReceipts] - receipts; d != len(shards)*n {
		t.Errorf("the sender got %d Receipts over %d messages, want one per shard of members", d, n)
	}
	for i, m := range members {
		if d := m.ep.kinds[protocol.KindMessage] - got[i]; d != n {
			t.Errorf("member %d got %d messages of %d", i, d, n)
		}
	}
}

// Allocations per message on the paths that cross shards: none either.
// wantCrossOneToOne counts an exchange, a message each way.
const (
	wantCrossOneToOne = 0
	wantCrossGroup    = 0
)

// linkOn links a companion to primary's user with a link code whose slot
// primary's shard owns, and returns it.
func (st *steppedShard) linkOn(primary quietDevice) quietDevice {
	// NewLinkCode puts random's first 12 bits in the code's slot.
	shard := st.router.ShardOf(primary.user)
	for b := range 256 {
		code := storage.NewLinkCode([10]byte{byte(b), 7})
		if slot, _ := storage.LinkCodeSlot(code); st.router.ShardOf(uint64(slot)) == shard {
			return st.linkWith(primary, [10]byte{byte(b), 7})
		}
	}
	st.t.Fatalf("no link code on shard %d", shard)
	return quietDevice{}
}

// TestAllocsCrossShardOneToOne counts the allocations of a 1:1 exchange
// between two users of different shards, each with two online devices: a
// message each way, each with its SEND and Sent, the forward to the
// recipient's shard and its answer, the delivery to both the recipient's
// devices and the copy to the sender's other device, all four devices'
// ACKs, the delivered receipt forwarded back and its ACK.
func TestAllocsCrossShardOneToOne(t *testing.T) {
	st := newSteppedShards(t, 2)
	a1 := st.registerOn(0, 1)
	b1 := st.registerOn(1, 2)
	if st.router.ShardOf(a1.user) != 0 || st.router.ShardOf(b1.user) != 1 {
		t.Fatalf("users %d and %d on shards %d and %d, want 0 and 1", a1.user, b1.user, st.router.ShardOf(a1.user), st.router.ShardOf(b1.user))
	}
	a2 := st.linkOn(a1)
	b2 := st.linkOn(b1)
	devices := []*quietDevice{&a1, &a2, &b1, &b2}
	for _, d := range devices {
		st.login(d)
	}
	body := []byte("twenty bytes of text")
	cmid := uint64(0)
	one := func(from, to quietDevice) {
		cmid++
		st.submit(storage.Op{Kind: storage.OpSend, From: from.user, FromDevice: from.device, User: to.user, CMID: cmid, Body: body, Conn: from.ep.ref})
		st.run()
		for _, d := range devices {
			st.ack(*d)
		}
		st.run()
		for _, d := range devices {
			st.ack(*d)
		}
		st.run()
	}
	message := func() {
		one(a1, b1)
		one(b1, a1)
	}
	kinds := func() (k [4][3]int) {
		for i, d := range devices {
			k[i] = [3]int{d.ep.kinds[protocol.KindSent], d.ep.kinds[protocol.KindMessage], d.ep.kinds[protocol.KindReceipt]}
		}
		return k
	}
	was := kinds()
	n := allocsPerMessage(t, st, "cross-shard 1:1 exchange (a message each way, 2 devices each, their ACKs, the delivered receipts and their ACKs)", message, 10, wantCrossOneToOne)
	now := kinds()
	// Each user's inbox holds both messages of an exchange (the one it
	// got and its own, copied for its other device), and every device
	// reads it; the sending devices alone get Sent.
	want := [4][3]int{{n, 2 * n, n}, {0, 2 * n, n}, {n, 2 * n, n}, {0, 2 * n, n}}
	for i, name := range []string{"a1", "a2", "b1", "b2"} {
		for j, what := range []string{"Sent", "messages", "receipts"} {
			if got := now[i][j] - was[i][j]; got != want[i][j] {
				t.Errorf("%s got %d %s over %d exchanges, want %d", name, got, what, n, want[i][j])
			}
		}
	}
}

// TestAllocsCrossShardGroup counts the allocations of a message to a
// group of 32 online members spread over two shards: the SEND and its
// fan-out, the body and forward to the other shard and its answer, every
// member's ACK and the Receipts entries they make for the sender, and
// the sender's ACK of them.
func TestAllocsCrossShardGroup(t *testing.T) {
	st := newSteppedShards(t, 2)
	admin := st.registerOn(0, 100)
	members := make([]quietDevice, 32)
	for i := range members {
		members[i] = st.registerOn(uint16(i%2), i+1)
	}
	st.countGroup(admin, members, "message to 32 members on 2 shards (their ACKs, the Receipts entries and their ACK)", wantCrossGroup)
}
