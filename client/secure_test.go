package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/parley-im/parley/internal/node"
	"github.com/parley-im/parley/internal/nodetest"
	"github.com/parley-im/parley/internal/wiretest"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// recordingStore is a MemoryKeyStore that remembers every send it stored,
// ciphertexts included, so a test can look at what went on the wire.
type recordingStore struct {
	*MemoryKeyStore
	mu    sync.Mutex
	sends []Outgoing
}

func (r *recordingStore) AddOutgoing(o Outgoing) error {
	r.mu.Lock()
	r.sends = append(r.sends, o)
	r.mu.Unlock()
	return r.MemoryKeyStore.AddOutgoing(o)
}

func (r *recordingStore) last() Outgoing {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sends[len(r.sends)-1]
}

// secureNode is a real node and the clients of a test.
type secureNode struct {
	*nodetest.Node
	t       testing.TB
	cfg     Config
	dataDir string
}

func startSecureNode(t testing.TB) *secureNode {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a node")
	}
	var dir string
	n := nodetest.Start(t, func(c *node.Config) { dir = c.DataDir })
	return &secureNode{Node: n, t: t, dataDir: dir, cfg: Config{
		Addr: n.Addr().String(), Fingerprint: n.Fingerprint(), DialTimeout: waitE2E,
		BackoffMin: 10 * time.Millisecond, BackoffMax: 100 * time.Millisecond, Logger: nodetest.Logger(t),
	}}
}

func creds(u wiretest.User) Credentials {
	return Credentials{User: u.ID, Device: u.Device, Secret: u.Cred}
}

// account registers a user on shard with a primary and companions more
// devices, and returns their credentials, primary first.
func (n *secureNode) account(shard, companions int) []Credentials {
	n.t.Helper()
	u := n.RegisterOn(n.t, shard)
	out := []Credentials{creds(u)}
	if companions > 0 {
		primary, _ := n.Login(n.t, u, 0)
		for i := range companions {
			out = append(out, creds(n.Link(n.t, primary, fmt.Sprintf("companion %d", i+1))))
		}
		_ = primary.Conn.Close()
	}
	return out
}

// device runs an encrypting client for c and waits until it published
// its keys and caught up.
func (n *secureNode) device(c Credentials, store Store) *testClient {
	n.t.Helper()
	if store == nil {
		store = NewMemoryKeyStore()
	}
	t := n.t.(*testing.T)
	tc := startClientAs(t, n.cfg, c, store)
	if !tc.Encrypted() {
		t.Fatal("client does not encrypt")
	}
	until(t, tc, func(ev Event) bool { _, ok := ev.(Synced); return ok })
	return tc
}

// got is what one device decrypted, in order.
type got struct {
	id    uint64
	from  uint64
	dev   uint32
	group uint64
	text  string
}

// collect reads c's messages until it has want of them (its own copies,
// which carry nothing for it, left out).
func collect(t *testing.T, c *testClient, want int) []got {
	t.Helper()
	var out []got
	until(t, c, func(ev Event) bool {
		m, ok := ev.(Message)
		if !ok {
			return false
		}
		if m.DecryptErr != nil {
			t.Fatalf("%d/%d could not decrypt %d from %d/%d: %v", c.User(), c.Device(), m.ID, m.From, m.FromDevice, m.DecryptErr)
		}
		if !m.Secure {
			t.Fatalf("%d/%d got a message that was not encrypted: %+v", c.User(), c.Device(), m)
		}
		if m.From == c.User() && m.FromDevice == c.Device() {
			if len(m.Body) != 0 {
				t.Fatalf("own copy with a body: %+v", m)
			}
			return false
		}
		out = append(out, got{m.ID, m.From, m.FromDevice, m.Group, string(m.Body)})
		return len(out) == want
	})
	return out
}

// TestSecureTwoUsersTwoDevices: two users with two devices each, on two
// shards, exchange encrypted 1:1 messages through a real node: every
// device decrypts every message (its user's and the copies of its own
// user's other device) once and in the same order as the other device of
// its user; a third device of Bob, linked later, is learned from
// DEVICES_CHANGED and the send goes through; after Bob revokes a device,
// it gets nothing new and could not decrypt what is sent next; the
// security codes match and change with the devices; and the server's
// data directory never holds a plaintext.
func TestSecureTwoUsersTwoDevices(t *testing.T) {
	n := startSecureNode(t)
	ac, bc := n.account(0, 1), n.account(1, 1)
	aliceStore := &recordingStore{MemoryKeyStore: NewMemoryKeyStore()}
	alice, alaptop := n.device(ac[0], aliceStore), n.device(ac[1], nil)
	blaptopStore := NewMemoryKeyStore()
	bob, blaptop := n.device(bc[0], nil), n.device(bc[1], blaptopStore)
	ctx := context.Background()
	if err := bob.Subscribe(ctx, []uint64{alice.User()}); err != nil {
		t.Fatal(err)
	}

	secret := func(i int) string { return fmt.Sprintf("plaintext %d: the meeting is at the old mill", i) }
	senders := []*testClient{alice, bob, alaptop, blaptop, alice, blaptop}
	var ids []uint64
	for i, s := range senders {
		to := bob.User()
		if s.User() == bob.User() {
			to = alice.User()
		}
		sent, err := s.Send(ctx, to, []byte(secret(i)), pb.ContentType_CONTENT_TEXT)
		if err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		ids = append(ids, sent.ID)
	}
	// Each device sees every message but those it sent itself.
	views := map[*testClient][]got{}
	for _, c := range []*testClient{alice, alaptop, bob, blaptop} {
		own := 0
		for _, s := range senders {
			if s == c {
				own++
			}
		}
		views[c] = collect(t, c, len(senders)-own)
		seen := map[int]bool{}
		last := map[*testClient]int{} // by sender: the last message's index
		for _, g := range views[c] {
			i := slices.Index(ids, g.id)
			if i < 0 || g.text != secret(i) || g.from != senders[i].User() || g.dev != senders[i].Device() {
				t.Fatalf("%d/%d got %+v, want message %d %q", c.User(), c.Device(), g, i, secret(i))
			}
			// Once, and each sender's messages in the order sent.
			if seen[i] || senders[i] == c {
				t.Fatalf("%d/%d got message %d twice, or its own", c.User(), c.Device(), i)
			}
			if j, ok := last[senders[i]]; ok && j > i {
				t.Fatalf("%d/%d got message %d after %d from the same device", c.User(), c.Device(), i, j)
			}
			seen[i], last[senders[i]] = true, i
		}
	}
	for _, pair := range [][2]*testClient{{alice, alaptop}, {bob, blaptop}} {
		a, b := views[pair[0]], views[pair[1]]
		order := func(v []got) []uint64 {
			var o []uint64
			for _, g := range v {
				o = append(o, g.id)
			}
			return o
		}
		common := func(o []uint64, other []got) []uint64 {
			return slices.DeleteFunc(slices.Clone(o), func(id uint64) bool {
				return !slices.ContainsFunc(other, func(g got) bool { return g.id == id })
			})
		}
		if x, y := common(order(a), b), common(order(b), a); !slices.Equal(x, y) {
			t.Fatalf("devices of user %d saw different orders: %v and %v", pair[0].User(), x, y)
		}
	}

	code, err := alice.SecurityCode(ctx, bob.User())
	if err != nil {
		t.Fatal(err)
	}
	if code2, err := bob.SecurityCode(ctx, alice.User()); err != nil || code2 != code || len(code) != 60 {
		t.Fatalf("security codes %q and %q (%v)", code, code2, err)
	}

	// Bob links a tablet: Alice's view of his devices is stale. She sends
	// before the KEYS_CHANGED reaches her (her client is not reading
	// events): DEVICES_CHANGED, and the send is encrypted again and goes
	// through without the application noticing.
	btablet := n.device(n.link(bob, "tablet"), nil)
	before := alice.sec.reseals.Load()
	sent, err := alice.Send(ctx, bob.User(), []byte(secret(101)), pb.ContentType_CONTENT_TEXT)
	if err != nil {
		t.Fatal(err)
	}
	if alice.sec.reseals.Load() == before {
		t.Fatal("alice's send to bob's new device was not refused DEVICES_CHANGED and encrypted again")
	}
	if g := collect(t, btablet, 1); g[0].id != sent.ID || g[0].text != secret(101) {
		t.Fatalf("tablet got %+v", g)
	}
	if code2, err := alice.SecurityCode(ctx, bob.User()); err != nil || code2 == code {
		t.Fatalf("security code after bob's new device: %q (%v), was %q", code2, err, code)
	}

	// Bob revokes his laptop: its connection ends, it gets nothing new
	// (its credentials no longer log in), and what is sent next is not
	// encrypted for it.
	if err := bob.RevokeDevice(ctx, blaptop.Device()); err != nil {
		t.Fatal(err)
	}
	if f := next(t, blaptop, func(Fatal) bool { return true }); CodeOf(f.Err) != protocol.CodeDeviceRevoked {
		t.Fatalf("the revoked laptop stopped with %v, want DEVICE_REVOKED", f.Err)
	}
	sent, err = alice.Send(ctx, bob.User(), []byte(secret(102)), pb.ContentType_CONTENT_TEXT)
	if err != nil {
		t.Fatal(err)
	}
	again := startClientAs(t, n.cfg, bc[1], blaptopStore)
	until(t, again, func(ev Event) bool {
		if m, ok := ev.(Message); ok {
			t.Fatalf("the revoked laptop logged in again and got %+v", m)
		}
		f, ok := ev.(Fatal)
		if ok && CodeOf(f.Err) != protocol.CodeDeviceRevoked {
			t.Fatalf("the revoked laptop's new login stopped with %v, want DEVICE_REVOKED", f.Err)
		}
		return ok
	})
	last := aliceStore.last()
	for _, e := range last.Envelopes {
		if e.Device == blaptop.Device() {
			t.Fatalf("the message after the revocation is encrypted for the revoked device: %+v", last.Envelopes)
		}
		// The revoked device's keys open none of the envelopes.
		m := Message{ID: sent.ID, From: alice.User(), FromDevice: alice.Device(), Body: e.Body, Cipher: e.Cipher}
		if opened := blaptop.sec.open(m); opened == nil || opened.DecryptErr == nil {
			t.Fatalf("the revoked device decrypted the envelope for device %d: %+v", e.Device, opened)
		}
	}
	if g := collect(t, bob, 2); g[0].text != secret(101) || g[1].text != secret(102) {
		t.Fatalf("bob got %+v", g)
	}

	// A plain client's message is in the data directory as it was sent,
	// so the search below can find a plaintext; the encrypted ones are
	// not.
	plainCfg := n.cfg
	plainCfg.Plain = true
	plain := startClientAs(t, plainCfg, creds(n.RegisterOn(t, 0)), NewMemoryStore())
	control := "a control message sent in the clear"
	if _, err := plain.Send(ctx, bob.User(), []byte(control), pb.ContentType_CONTENT_TEXT); err != nil {
		t.Fatal(err)
	}
	texts := []string{control, secret(0), secret(3), secret(101), secret(102)}
	if found := inDataDir(t, n.dataDir, texts); !slices.Equal(found, []string{control}) {
		t.Fatalf("plaintexts found in the data directory: %q, want only the control", found)
	}
	// The files hold them as written (the WAL); an sstable's blocks are
	// compressed, so the stores are also read key by key, from a copy.
	if found := inStores(t, n, texts); !slices.Equal(found, []string{control}) {
		t.Fatalf("plaintexts found in the shards' keys and values: %q, want only the control", found)
	}
}

// present returns the texts found, in their order.
func present(texts []string, found map[string]bool) []string {
	var out []string
	for _, s := range texts {
		if found[s] {
			out = append(out, s)
		}
	}
	return out
}

// inStores returns which of texts some key or value of a shard of n
// holds, read from a checkpoint of each shard (WAL and sstables alike).
func inStores(t *testing.T, n *secureNode, texts []string) []string {
	t.Helper()
	found := map[string]bool{}
	for i, sh := range n.Shards() {
		dir := filepath.Join(t.TempDir(), fmt.Sprint(i))
		if err := sh.Checkpoint(dir); err != nil {
			t.Fatal(err)
		}
		db, err := pebble.Open(dir, &pebble.Options{})
		if err != nil {
			t.Fatal(err)
		}
		it, err := db.NewIter(nil)
		if err != nil {
			t.Fatal(err)
		}
		for ok := it.First(); ok; ok = it.Next() {
			for _, s := range texts {
				if bytes.Contains(it.Key(), []byte(s)) || bytes.Contains(it.Value(), []byte(s)) {
					found[s] = true
				}
			}
		}
		if err := errors.Join(it.Close(), db.Close()); err != nil {
			t.Fatal(err)
		}
	}
	return present(texts, found)
}

// link links a companion to primary's account through the SDK.
func (n *secureNode) link(primary *testClient, name string) Credentials {
	n.t.Helper()
	ctx := context.Background()
	pending, err := RequestLink(ctx, n.cfg, name)
	if err != nil {
		n.t.Fatal(err)
	}
	if err := primary.ApproveLink(ctx, pending.Code); err != nil {
		n.t.Fatal(err)
	}
	c, err := pending.Wait(ctx)
	if err != nil {
		n.t.Fatal(err)
	}
	return c
}

// inDataDir returns which of texts some file under dir holds.
func inDataDir(t *testing.T, dir string, texts []string) []string {
	t.Helper()
	found := map[string]bool{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil // a file that went away meanwhile
		}
		for _, s := range texts {
			if bytes.Contains(b, []byte(s)) {
				found[s] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return present(texts, found)
}

// TestSecureGroup: two users with two devices each and a third user with
// one exchange encrypted group messages through a real node: each device
// hands its sender key to every other member device before its first
// message, every device decrypts every group message once, in the
// group's order; after the third user is removed, the next message uses a
// new sender key that the removed user's device cannot decrypt.
func TestSecureGroup(t *testing.T) {
	n := startSecureNode(t)
	ac, bc, cc := n.account(0, 1), n.account(1, 1), n.account(0, 0)
	aliceStore := &recordingStore{MemoryKeyStore: NewMemoryKeyStore()}
	alice, alaptop := n.device(ac[0], aliceStore), n.device(ac[1], nil)
	bob, blaptop := n.device(bc[0], nil), n.device(bc[1], nil)
	carol := n.device(cc[0], nil)
	ctx := context.Background()
	g, err := alice.CreateGroup(ctx, "encrypted", nil, []uint64{bob.User(), carol.User()})
	if err != nil || len(g.Members) != 3 {
		t.Fatalf("create: %+v %v", g, err)
	}
	text := func(i int) string { return fmt.Sprintf("group plaintext %d: bring the maps", i) }
	senders := []*testClient{alice, blaptop, carol, alaptop, bob, alice}
	var ids []uint64
	for i, s := range senders {
		sent, err := s.SendGroup(ctx, g.ID, []byte(text(i)), pb.ContentType_CONTENT_TEXT)
		if err != nil {
			t.Fatalf("group send %d: %v", i, err)
		}
		ids = append(ids, sent.ID)
	}
	for _, c := range []*testClient{alice, alaptop, bob, blaptop, carol} {
		var gotIDs []uint64
		for _, gm := range collectGroup(t, c, g.ID, senders) {
			i := slices.Index(ids, gm.id)
			if i < 0 || gm.text != text(i) {
				t.Fatalf("%d/%d got %+v", c.User(), c.Device(), gm)
			}
			gotIDs = append(gotIDs, gm.id)
		}
		var want []uint64
		for i, s := range senders {
			if s != c {
				want = append(want, ids[i])
			}
		}
		if !slices.Equal(gotIDs, want) {
			t.Fatalf("%d/%d got %v, want %v in the group's order", c.User(), c.Device(), gotIDs, want)
		}
	}

	if err := alice.RemoveGroupMembers(ctx, g.ID, []uint64{carol.User()}); err != nil {
		t.Fatal(err)
	}
	next(t, alice, func(ev GroupEvent) bool { return ev.Op == pb.GroupOp_GROUP_OP_REMOVE })
	if _, err := alice.SendGroup(ctx, g.ID, []byte(text(100)), pb.ContentType_CONTENT_TEXT); err != nil {
		t.Fatal(err)
	}
	last := aliceStore.last()
	m := Message{From: alice.User(), FromDevice: alice.Device(), Group: g.ID, Body: last.Body, Cipher: last.Cipher}
	if opened := carol.sec.open(m); opened == nil || opened.DecryptErr == nil {
		t.Fatalf("the removed member decrypted the message after its removal: %+v", opened)
	}
	if got := collectGroup(t, bob, g.ID, []*testClient{alice}); got[0].text != text(100) {
		t.Fatalf("bob got %+v", got)
	}
}

// collectGroup reads c's group messages of group until it has one for
// each sender in senders that is not c.
func collectGroup(t *testing.T, c *testClient, group uint64, senders []*testClient) []got {
	t.Helper()
	want := 0
	for _, s := range senders {
		if s != c {
			want++
		}
	}
	var out []got
	until(t, c, func(ev Event) bool {
		m, ok := ev.(Message)
		if !ok || m.Group != group || (m.From == c.User() && m.FromDevice == c.Device()) {
			return false
		}
		if m.DecryptErr != nil || m.Cipher != pb.Cipher_CIPHER_SENDER_KEY {
			t.Fatalf("%d/%d: group message %d from %d/%d: cipher %v, %v", c.User(), c.Device(), m.ID, m.From, m.FromDevice, m.Cipher, m.DecryptErr)
		}
		out = append(out, got{m.ID, m.From, m.FromDevice, m.Group, string(m.Body)})
		return len(out) == want
	})
	return out
}

// TestSecureGroupKeysChanged: Bob, on another shard than Alice and her
// group, links a tablet; Alice is not his contact, but as a co-member she
// hears of it (KEYS_CHANGED through the group's shard, [S-17-5]), so her
// next group message hands her sender key to the tablet first and the
// tablet decrypts it. After Bob revokes the tablet, Alice's next group
// message uses a new sender key that the tablet cannot decrypt.
func TestSecureGroupKeysChanged(t *testing.T) {
	n := startSecureNode(t)
	ac, bc := n.account(0, 1), n.account(1, 0)
	aliceStore := &recordingStore{MemoryKeyStore: NewMemoryKeyStore()}
	alice, alaptop := n.device(ac[0], aliceStore), n.device(ac[1], nil)
	bob := n.device(bc[0], nil)
	ctx := context.Background()
	g, err := alice.CreateGroup(ctx, "co-members", nil, []uint64{bob.User()})
	if err != nil {
		t.Fatal(err)
	}
	text := func(i int) string { return fmt.Sprintf("group plaintext %d: the tide turns at six", i) }
	send := func(i int) uint64 {
		t.Helper()
		sent, err := alice.SendGroup(ctx, g.ID, []byte(text(i)), pb.ContentType_CONTENT_TEXT)
		if err != nil {
			t.Fatalf("group send %d: %v", i, err)
		}
		return sent.ID
	}
	check := func(c *testClient, id uint64, i int) {
		t.Helper()
		if got := collectGroup(t, c, g.ID, []*testClient{alice}); got[0].id != id || got[0].text != text(i) {
			t.Fatalf("%d/%d got %+v, want %d %q", c.User(), c.Device(), got, id, text(i))
		}
	}
	id := send(1)
	check(bob, id, 1)
	check(alaptop, id, 1)

	tablet := n.device(n.link(bob, "tablet"), nil)
	for _, c := range []*testClient{alice, alaptop} {
		next(t, c, func(kc KeysChanged) bool {
			return kc.User == bob.User() && slices.Equal(kc.Devices, []uint32{bob.Device(), tablet.Device()})
		})
	}
	id = send(2)
	check(tablet, id, 2)
	check(bob, id, 2)
	check(alaptop, id, 2)

	if err := bob.RevokeDevice(ctx, tablet.Device()); err != nil {
		t.Fatal(err)
	}
	next(t, alice, func(kc KeysChanged) bool {
		return kc.User == bob.User() && slices.Equal(kc.Devices, []uint32{bob.Device()})
	})
	id = send(3)
	last := aliceStore.last()
	m := Message{ID: id, From: alice.User(), FromDevice: alice.Device(), Group: g.ID, Body: last.Body, Cipher: last.Cipher}
	if opened := tablet.sec.open(m); opened == nil || opened.DecryptErr == nil {
		t.Fatalf("the revoked tablet decrypted the group message sent after its revocation: %+v", opened)
	}
	check(bob, id, 3)
}

// TestKeysChangedRepeatHidden: the same KEYS_CHANGED arriving by a second
// route ([S-17-5]) is not shown twice; a different list is.
func TestKeysChangedRepeatHidden(t *testing.T) {
	e := &secure{notices: map[uint64][]uint32{}}
	for i, tt := range []struct {
		kc   KeysChanged
		want bool
	}{
		{KeysChanged{User: 7, Devices: []uint32{1}}, false},
		{KeysChanged{User: 7, Devices: []uint32{1}}, true},
		{KeysChanged{User: 8, Devices: []uint32{1}}, false},
		{KeysChanged{User: 7, Devices: []uint32{1, 2}}, false},
		{KeysChanged{User: 7, Devices: []uint32{1}}, false},
		{KeysChanged{User: 7, Devices: nil}, false},
		{KeysChanged{User: 7, Devices: []uint32{}}, true},
	} {
		if got := e.repeated(tt.kc); got != tt.want {
			t.Errorf("%d: %+v repeated = %v, want %v", i, tt.kc, got, tt.want)
		}
	}
}

// TestSecureOfflineSendToUnfetched: a client that is not connected sends
// to a user whose keys it never fetched, and to a group whose members it
// never asked for: the sends are queued at once with their plaintext, and
// encrypted once the client connects, one after the other in cmid order.
// Both of Bob's devices decrypt every message once, the 1:1 messages in
// the order they were sent; each send gets one SENT with its own id.
func TestSecureOfflineSendToUnfetched(t *testing.T) {
	n := startSecureNode(t)
	ac, bc := n.account(0, 0), n.account(1, 1)
	store := NewMemoryKeyStore()
	first := n.device(ac[0], store)
	bob, blaptop := n.device(bc[0], nil), n.device(bc[1], nil)
	g, err := first.CreateGroup(context.Background(), "offline", nil, []uint64{bob.User()})
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}

	alice, err := New(n.cfg, ac[0], store) // not running: offline
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	type outcome struct {
		i    int
		sent Sent
		err  error
	}
	outcomes := make(chan outcome, 8)
	text := func(i int) string { return fmt.Sprintf("offline plaintext %d: leave the key under the stone", i) }
	groupAt := 2
	var cmids []uint64
	for i := range 5 {
		done := func(s Sent, err error) { outcomes <- outcome{i, s, err} }
		var cmid uint64
		var err error
		if i == groupAt {
			cmid, err = alice.SendGroupAsync(g.ID, []byte(text(i)), pb.ContentType_CONTENT_TEXT, done)
		} else {
			cmid, err = alice.SendAsync(bob.User(), []byte(text(i)), pb.ContentType_CONTENT_TEXT, done)
		}
		if err != nil {
			t.Fatalf("offline send %d: %v", i, err)
		}
		cmids = append(cmids, cmid)
	}
	st, err := store.Load()
	if err != nil || len(st.Outbox) != 5 {
		t.Fatalf("stored sends %d (%v), want 5", len(st.Outbox), err)
	}
	for _, o := range st.Outbox {
		if o.sealed() || len(o.Plain) == 0 {
			t.Fatalf("an offline send was encrypted before connecting, or lost its plaintext: %+v", o)
		}
	}
	go func() { _ = alice.Run(context.Background()) }()
	go func() { // the events nobody reads here
		for range alice.Events() {
		}
	}()

	ids := make([]uint64, 5)
	deadline := time.After(waitE2E)
	for range 5 {
		select {
		case o := <-outcomes:
			if o.err != nil || o.sent.ID == 0 || o.sent.CMID != cmids[o.i] {
				t.Fatalf("send %d (cmid %d): %+v %v", o.i, cmids[o.i], o.sent, o.err)
			}
			ids[o.i] = o.sent.ID
		case <-deadline:
			t.Fatalf("the offline sends were not answered: %v", ids)
		}
	}
	if len(slices.Compact(slices.Sorted(slices.Values(ids)))) != 5 {
		t.Fatalf("ids %v, want 5 distinct", ids)
	}
	for _, c := range []*testClient{bob, blaptop} {
		var direct []string
		for _, m := range collect(t, c, 5) {
			i := slices.Index(ids, m.id)
			if i < 0 || m.text != text(i) || (m.group != 0) != (i == groupAt) {
				t.Fatalf("%d/%d got %+v", c.User(), c.Device(), m)
			}
			if i != groupAt {
				direct = append(direct, m.text)
			}
		}
		if want := []string{text(0), text(1), text(3), text(4)}; !slices.Equal(direct, want) {
			t.Fatalf("%d/%d got the 1:1 messages %q, want %q", c.User(), c.Device(), direct, want)
		}
	}
}
