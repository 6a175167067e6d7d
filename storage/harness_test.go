package storage_test

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
	"github.com/parley-im/parley/router"
	"github.com/parley-im/parley/storage"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clock is a settable clock for tests.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// codeBox captures verification codes instead of sending them. It
// reports each code taken at once, unless hold is set: then it keeps the
// done callbacks for the test to call (held).
type codeBox struct {
	mu      sync.Mutex
	codes   map[string]string
	hold    bool
	pending map[string]func(error)
	arrived chan string // with hold: the phone of each code held
}

func (b *codeBox) SendCode(phone, code string, done func(error)) {
	b.mu.Lock()
	if b.codes == nil {
		b.codes = make(map[string]string)
	}
	b.codes[phone] = code
	if b.hold {
		if b.pending == nil {
			b.pending = make(map[string]func(error))
		}
		b.pending[phone] = done
		b.mu.Unlock()
		b.arrived <- phone
		return
	}
	b.mu.Unlock()
	done(nil)
}

// held returns the done callback of phone's code, held by a codeBox with
// hold set.
func (b *codeBox) held(phone string) func(error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.pending[phone]
}

func (b *codeBox) code(phone string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.codes[phone]
}

// node is a set of shards behind a router, on one file system.
type node struct {
	t      *testing.T
	fs     vfs.FS
	router *router.Router
	shards []*storage.Shard
	clock  *clock
	codes  *codeBox
	tweak  func(*storage.Config)
	rid    uint32 // the last request id the helpers used
}

// newFencedNode is newNode with every shard's fence open until the test
// sets closed.
func newFencedNode(t *testing.T, shards int) (n *node, closed *atomic.Bool) {
	t.Helper()
	closed = new(atomic.Bool)
	return newNode(t, shards, func(c *storage.Config) { c.Fence = func() bool { return !closed.Load() } }), closed
}

func newNode(t *testing.T, shards int, tweak func(*storage.Config)) *node {
	t.Helper()
	return newNodeOn(t, vfs.NewMem(), shards, tweak)
}

// newNodeOn opens a node on the shards stored in fs.
func newNodeOn(t *testing.T, fs vfs.FS, shards int, tweak func(*storage.Config)) *node {
	t.Helper()
	n := &node{t: t, fs: fs, clock: &clock{now: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}, codes: &codeBox{}, tweak: tweak}
	n.open(shards)
	t.Cleanup(n.close)
	return n
}

func (n *node) open(count int) {
	n.t.Helper()
	r, err := router.New(count)
	if err != nil {
		n.t.Fatal(err)
	}
	n.router = r
	n.shards = nil
	for i := range count {
		cfg := storage.Config{
			ID: uint16(i), Dir: fmt.Sprintf("shard-%d", i), FS: n.fs,
			Forwarder: n.router, Conns: testConns, Codes: n.codes, Now: n.clock.Now,
		}
		if n.tweak != nil {
			n.tweak(&cfg)
		}
		s, err := storage.Open(cfg)
		if err != nil {
			n.t.Fatal(err)
		}
		n.shards = append(n.shards, s)
	}
	if err := n.router.Attach(n.shards); err != nil {
		n.t.Fatal(err)
	}
	for _, s := range n.shards {
		s.Start()
	}
}

func (n *node) close() {
	for _, s := range n.shards {
		if err := s.Close(); err != nil {
			n.t.Errorf("close shard: %v", err)
		}
	}
	n.shards = nil
}

// restart closes every shard and opens them again on the same files.
func (n *node) restart() {
	count := len(n.shards)
	n.close()
	n.open(count)
}

func (n *node) submit(op storage.Op) {
	n.t.Helper()
	if err := n.router.Submit(op); err != nil {
		n.t.Fatalf("submit %v: %v", op.Kind, err)
	}
}

// frame is one frame an endpoint received, decoded into its pb message.
type frame struct {
	kind protocol.Kind
	msg  any
}

// conns resolves the refs of test endpoints; every test shard resolves
// through testConns, so an endpoint outlives a node's restart as a client
// connection outlives a shard's.
type conns struct {
	last atomic.Uint64
	m    sync.Map // storage.ConnRef → storage.Endpoint (*endpoint, *benchEndpoint)
}

var testConns = &conns{}

func (c *conns) Endpoint(ref storage.ConnRef) storage.Endpoint {
	if e, ok := c.m.Load(ref); ok {
		return e.(storage.Endpoint)
	}
	return nil
}

// endpoint records what a shard sends one connection.
type endpoint struct {
	ref      storage.ConnRef // its name in testConns
	mu       sync.Mutex
	frames   []frame
	session  *storage.Session
	closed   protocol.Code
	isClosed bool
	changed  chan struct{}
	dec      *codec.Decompressor
}

func newEndpoint(t *testing.T) *endpoint {
	dec, err := codec.NewDecompressor(protocol.MaxFrameBody)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dec.Close)
	e := &endpoint{ref: storage.ConnRef{ID: testConns.last.Add(1)}, changed: make(chan struct{}, 1), dec: dec}
	testConns.m.Store(e.ref, e)
	t.Cleanup(func() { testConns.m.Delete(e.ref) })
	return e
}

func (e *endpoint) notify() {
	select {
	case e.changed <- struct{}{}:
	default:
	}
}

func (e *endpoint) Post(b []byte) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.isClosed {
		return false
	}
	e.decode(b)
	e.notify()
	return true
}

func (e *endpoint) decode(b []byte) {
	for len(b) > 0 {
		f, n, _, err := codec.Parse(b, protocol.MaxFrameBody)
		if err != nil || n == 0 {
			panic(fmt.Sprintf("endpoint got a bad frame: % x: %v", b, err))
		}
		b = b[n:]
		body := f.Body
		if f.Compressed {
			body, err = e.dec.Decompress(nil, f.Body)
			if err != nil {
				panic(err)
			}
		}
		if f.Kind == protocol.KindBatch {
			e.decode(body)
			continue
		}
		e.frames = append(e.frames, frame{f.Kind, decodeBody(f.Kind, body)})
	}
}

func decodeBody(k protocol.Kind, body []byte) any {
	switch k {
	case protocol.KindMessage:
		v, err := codec.ParseMessage(body)
		if err != nil {
			panic(err)
		}
		v.Body = append([]byte(nil), v.Body...)
		return v
	case protocol.KindReceipt:
		v, err := codec.ParseReceipt(body)
		if err != nil {
			panic(err)
		}
		return v
	}
	factory := map[protocol.Kind]func() proto.Message{
		protocol.KindSent:            func() proto.Message { return &pb.Sent{} },
		protocol.KindError:           func() proto.Message { return &pb.Error{} },
		protocol.KindSynced:          func() proto.Message { return &pb.Synced{} },
		protocol.KindOK:              func() proto.Message { return &pb.Ok{} },
		protocol.KindCodeSent:        func() proto.Message { return &pb.CodeSent{} },
		protocol.KindRegistered:      func() proto.Message { return &pb.Registered{} },
		protocol.KindLookupResult:    func() proto.Message { return &pb.LookupResult{} },
		protocol.KindGroupInfo:       func() proto.Message { return &pb.GroupInfo{} },
		protocol.KindGroupEvent:      func() proto.Message { return &pb.GroupEvent{} },
		protocol.KindReceipts:        func() proto.Message { return &pb.Receipts{} },
		protocol.KindGroupListResult: func() proto.Message { return &pb.GroupListResult{} },
		protocol.KindDeviceList:      func() proto.Message { return &pb.DeviceList{} },
		protocol.KindLinkCode:        func() proto.Message { return &pb.LinkCode{} },
		protocol.KindLinked:          func() proto.Message { return &pb.Linked{} },
		protocol.KindPresence:        func() proto.Message { return &pb.Presence{} },
		protocol.KindIsTyping:        func() proto.Message { return &pb.IsTyping{} },
		protocol.KindKeyBundles:      func() proto.Message { return &pb.KeyBundles{} },
		protocol.KindKeysChanged:     func() proto.Message { return &pb.KeysChanged{} },
		protocol.KindPreKeysLow:      func() proto.Message { return &pb.PreKeysLow{} },
		protocol.KindRevoked:         func() proto.Message { return &pb.Revoked{} },
		protocol.KindBlocked:         func() proto.Message { return &pb.Blocked{} },
		protocol.KindTimer:           func() proto.Message { return &pb.Timer{} },
		protocol.KindBlockListResult: func() proto.Message { return &pb.BlockListResult{} },
	}[k]
	if factory == nil {
		panic(fmt.Sprintf("unexpected kind %v", k))
	}
	m := factory()
	must(codec.ParseProto(body, m))
	return m
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}

func (e *endpoint) Reply(b []byte) { e.Post(b) }

func (e *endpoint) Authenticated(s storage.Session) {
	e.mu.Lock()
	e.session = &s
	e.mu.Unlock()
	e.notify()
}

func (e *endpoint) Fail(code protocol.Code) { e.Close(code) }

// LookupPart records one shard's part of a lookup as a LookupResult frame
// whose rid is the lookup's number.
func (e *endpoint) LookupPart(lookup uint64, found []*pb.Contact) {
	e.mu.Lock()
	e.frames = append(e.frames, frame{protocol.KindLookupResult, &pb.LookupResult{Rid: uint32(lookup), Contacts: found}})
	e.mu.Unlock()
	e.notify()
}

func (e *endpoint) Close(code protocol.Code) {
	e.mu.Lock()
	if !e.isClosed {
		e.isClosed, e.closed = true, code
	}
	e.mu.Unlock()
	e.notify()
}

// wait waits until cond holds over the endpoint's state.
func (e *endpoint) wait(t *testing.T, what string, cond func(e *endpoint) bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		e.mu.Lock()
		ok := cond(e)
		e.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-e.changed:
		case <-deadline:
			e.mu.Lock()
			defer e.mu.Unlock()
			frames := e.frames
			if len(frames) > 5 {
				frames = frames[len(frames)-5:]
			}
			t.Fatalf("timed out waiting for %s; %d frames, the last: %+v; closed=%v(%v)", what, len(e.frames), frames, e.isClosed, e.closed)
		}
	}
}

// take waits for a frame of kind k and removes the frames up to it.
func (e *endpoint) take(t *testing.T, k protocol.Kind) any {
	t.Helper()
	return e.takeAny(t, k)
}

// takeAny waits for a frame of one of kinds and removes the frames up to it.
func (e *endpoint) takeAny(t *testing.T, kinds ...protocol.Kind) any {
	t.Helper()
	var got any
	e.wait(t, fmt.Sprint(kinds), func(e *endpoint) bool {
		for i, f := range e.frames {
			for _, k := range kinds {
				if f.kind == k {
					got = f.msg
					e.frames = append(e.frames[:0:0], e.frames[i+1:]...)
					return true
				}
			}
		}
		return false
	})
	return got
}

// takeOnly waits for a frame of one of kinds and removes only that frame:
// the frames before it stay, for later takes. It suits an answer that
// other shards' entries may overtake, such as SENT and the sending
// device's copy ([S-8-17]) when the recipient lives on another shard.
func (e *endpoint) takeOnly(t *testing.T, kinds ...protocol.Kind) any {
	t.Helper()
	var got any
	e.wait(t, fmt.Sprint(kinds), func(e *endpoint) bool {
		for i, f := range e.frames {
			if slices.Contains(kinds, f.kind) {
				got = f.msg
				e.frames = slices.Delete(slices.Clone(e.frames), i, i+1)
				return true
			}
		}
		return false
	})
	return got
}

// next waits for the next frame, what, and removes it.
func (e *endpoint) next(t *testing.T, what string) frame {
	t.Helper()
	var f frame
	e.wait(t, what, func(e *endpoint) bool {
		if len(e.frames) == 0 {
			return false
		}
		f, e.frames = e.frames[0], e.frames[1:]
		return true
	})
	return f
}

// messages waits for n Message entries and removes them.
func (e *endpoint) messages(t *testing.T, n int) []codec.Message {
	t.Helper()
	var out []codec.Message
	for range n {
		out = append(out, e.take(t, protocol.KindMessage).(codec.Message))
	}
	return out
}

// account is a registered device.
type account struct {
	user   uint64
	device uint32
	cred   []byte
}

// register verifies phone and returns the new device.
func (n *node) register(t *testing.T, phone string) account {
	t.Helper()
	ep := newEndpoint(t)
	n.submit(storage.Op{Kind: storage.OpRequestCode, Phone: phone, RID: 1, Conn: ep.ref})
	ep.take(t, protocol.KindCodeSent)
	n.submit(storage.Op{Kind: storage.OpVerify, Phone: phone, Code: n.codes.code(phone), Name: "test", RID: 2, Conn: ep.ref})
	r := ep.take(t, protocol.KindRegistered).(*pb.Registered)
	return account{user: r.User, device: r.Device, cred: r.Credential}
}

// login opens a session for a and returns its endpoint.
func (n *node) login(t *testing.T, a account, cursor uint64) *endpoint {
	t.Helper()
	ep := newEndpoint(t)
	n.submit(storage.Op{Kind: storage.OpLogin, User: a.user, Device: a.device, Credential: a.cred, Seq: cursor, Conn: ep.ref})
	ep.wait(t, "login", func(e *endpoint) bool { return e.session != nil || e.isClosed })
	if ep.session == nil {
		t.Fatalf("login of %d/%d failed: %v", a.user, a.device, ep.closed)
	}
	return ep
}

// send sends body from a to user to and waits for Sent, taking only that
// frame: entries that reach fromEP first, such as its own copy from
// another shard ([S-8-17]), stay for the test.
func (n *node) send(t *testing.T, from account, fromEP *endpoint, to uint64, cmid uint64, body string) uint64 {
	t.Helper()
	n.submit(storage.Op{Kind: storage.OpSend, From: from.user, FromDevice: from.device, User: to, CMID: cmid, Body: []byte(body), Conn: fromEP.ref})
	s := fromEP.takeOnly(t, protocol.KindSent).(*pb.Sent)
	if s.Cmid != cmid {
		t.Fatalf("Sent cmid = %d, want %d", s.Cmid, cmid)
	}
	return s.Id
}

func (n *node) ack(a account, ep *endpoint, seq uint64) {
	n.submit(storage.Op{Kind: storage.OpAck, User: a.user, Device: a.device, Seq: seq, Conn: ep.ref})
}

// nothingMore proves that ep, a connection of a, gets no more frames from
// what was submitted so far, by event: it asks a's shard for a's group
// list twice in a row and fails if any other frame comes before the
// answers. A shard emits a cycle's answers before the entries it pushes
// in that cycle, so the first answer may precede entries of its own cycle;
// the second comes from a later cycle than anything submitted before the
// first.
func (n *node) nothingMore(t *testing.T, a account, ep *endpoint) {
	t.Helper()
	for rid := uint32(1 << 30); rid < 1<<30+2; rid++ {
		n.submit(storage.Op{Kind: storage.OpGroupList, User: a.user, RID: rid, Conn: ep.ref})
		f := ep.next(t, "the group list marker")
		if r, ok := f.msg.(*pb.GroupListResult); !ok || r.Rid != rid {
			t.Fatalf("%d/%d got %v %+v, want nothing more", a.user, a.device, f.kind, f.msg)
		}
	}
}

// drain takes a's stream up to Synced, acknowledging as it goes, and
// returns the messages.
func (n *node) drain(t *testing.T, a account, ep *endpoint) []codec.Message {
	t.Helper()
	var out []codec.Message
	for {
		f := ep.next(t, "entry or Synced")
		switch m := f.msg.(type) {
		case codec.Message:
			out = append(out, m)
			n.ack(a, ep, m.Seq)
		case codec.Receipt:
			n.ack(a, ep, m.Seq)
		case *pb.Synced:
			return out
		}
	}
}
