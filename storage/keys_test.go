package storage_test

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
	"github.com/parley-im/parley/storage"
)

// testKey returns a well-formed public key derived from n.
func testKey(n int) []byte {
	k := make([]byte, protocol.KeyLen)
	k[0] = 0x05
	for i := 1; i < len(k); i++ {
		k[i] = byte(n*31 + i)
	}
	return k
}

// testKeys returns a first publish with identity i and prekeys ids from..to.
func testKeys(i, from, to int) *pb.KeysPublish {
	m := &pb.KeysPublish{
		IdentityKey: testKey(i), RegistrationId: uint32(i),
		SignedPrekey: &pb.SignedPreKey{Id: 1, Key: testKey(i + 1000), Signature: make([]byte, protocol.SignatureLen)},
	}
	for id := from; id <= to; id++ {
		m.Prekeys = append(m.Prekeys, &pb.PreKey{Id: uint32(id), Key: testKey(i*10000 + id)})
	}
	return m
}

// publish publishes keys for a and returns the answer's kind and code.
func (n *node) publish(t *testing.T, a account, ep *endpoint, keys *pb.KeysPublish) protocol.Code {
	t.Helper()
	n.submit(storage.Op{Kind: storage.OpKeysPublish, User: a.user, Device: a.device, Keys: keys, RID: 7, Conn: ep.ref})
	switch m := ep.takeAny(t, protocol.KindOK, protocol.KindError).(type) {
	case *pb.Error:
		return m.Code
	}
	return 0
}

// fetch asks for user's bundles on ep and returns them.
func (n *node) fetch(t *testing.T, ep *endpoint, user uint64, devices ...uint32) []*pb.KeyBundle {
	t.Helper()
	n.submit(storage.Op{Kind: storage.OpKeysFetch, User: user, Devices: devices, RID: 8, Conn: ep.ref})
	return ep.take(t, protocol.KindKeyBundles).(*pb.KeyBundles).Bundles
}

// TestKeysPublishAndFetch: a bundle carries the device's keys and its
// one-time prekeys one by one, in id order, then none; PREKEYS_LOW comes
// once when the count reaches the threshold, and again only after the
// device published more; a signed prekey is replaced (rotation); the
// identity key cannot change.
func TestKeysPublishAndFetch(t *testing.T) {
	n := newNode(t, 2, nil)
	alice, bob := n.register(t, "+15550007001"), n.register(t, "+15550007002")
	aep, bep := n.login(t, alice, 0), n.login(t, bob, 0)
	aep.take(t, protocol.KindSynced)
	bep.take(t, protocol.KindSynced)

	if code := n.publish(t, bob, bep, &pb.KeysPublish{Prekeys: testKeys(5, 1, 1).Prekeys}); code != protocol.CodeInvalidArgument {
		t.Fatalf("prekeys before an identity: %v, want INVALID_ARGUMENT", code)
	}
	if code := n.publish(t, bob, bep, testKeys(5, 1, 12)); code != 0 {
		t.Fatalf("publish: %v", code)
	}
	for i := 1; i <= 13; i++ {
		b := n.fetch(t, aep, bob.user)
		if len(b) != 1 || b[0].Device != bob.device || string(b[0].IdentityKey) != string(testKey(5)) || b[0].RegistrationId != 5 ||
			b[0].SignedPrekey.GetId() != 1 || string(b[0].SignedPrekey.GetKey()) != string(testKey(1005)) {
			t.Fatalf("fetch %d: %v", i, b)
		}
		switch {
		case i <= 12 && b[0].Prekey.GetId() != uint32(i):
			t.Fatalf("fetch %d: prekey %v, want id %d", i, b[0].Prekey, i)
		case i == 13 && b[0].Prekey != nil:
			t.Fatalf("fetch 13: prekey %v, want none left", b[0].Prekey)
		}
	}
	// 12 prekeys: the fetch that left 10 appended PREKEYS_LOW, and only it.
	low := bep.take(t, protocol.KindPreKeysLow).(*pb.PreKeysLow)
	if low.Device != bob.device || low.Count != protocol.PreKeysLow {
		t.Fatalf("PreKeysLow = %v, want device %d count %d", low, bob.device, protocol.PreKeysLow)
	}

	// Rotation, more prekeys; the identity stays.
	rot := &pb.KeysPublish{SignedPrekey: &pb.SignedPreKey{Id: 2, Key: testKey(77), Signature: make([]byte, protocol.SignatureLen)}}
	rot.Prekeys = testKeys(5, 100, 120).Prekeys
	if code := n.publish(t, bob, bep, rot); code != 0 {
		t.Fatalf("rotate: %v", code)
	}
	b := n.fetch(t, aep, bob.user, bob.device)
	if b[0].SignedPrekey.GetId() != 2 || b[0].Prekey.GetId() != 100 {
		t.Fatalf("after rotation: %v", b)
	}
	if code := n.publish(t, bob, bep, testKeys(6, 1, 1)); code != protocol.CodeIdentityKeyChanged {
		t.Fatalf("another identity: %v, want IDENTITY_KEY_CHANGED", code)
	}
	if code := n.publish(t, bob, bep, testKeys(5, 200, 200)); code != 0 {
		t.Fatalf("the same identity again: %v", code)
	}
	// 20 + 1 left: under the quota; then a publish past MaxPreKeys.
	if code := n.publish(t, bob, bep, &pb.KeysPublish{Prekeys: testKeys(5, 1000, 1000+protocol.MaxPreKeys-21).Prekeys}); code != protocol.CodeInvalidArgument {
		t.Fatalf("past MaxPreKeys: %v, want INVALID_ARGUMENT", code)
	}
	if b := n.fetch(t, aep, alice.user); len(b) != 0 {
		t.Fatalf("alice has no keys, got %v", b)
	}
	n.submit(storage.Op{Kind: storage.OpKeysFetch, User: 999 << 12, RID: 8, Conn: aep.ref})
	if e := aep.take(t, protocol.KindError).(*pb.Error); e.Code != protocol.CodeNotFound {
		t.Fatalf("fetch of nobody: %v", e)
	}
}

// TestKeysConcurrentFetches: fetches of the same device from many
// connections at once, on several shards and across a restart, never get
// the same one-time prekey twice, and get every one of them.
func TestKeysConcurrentFetches(t *testing.T) {
	n := newNode(t, 3, func(c *storage.Config) { c.PreKeysPerRequester = 1000 })
	bob := n.register(t, "+15550007011")
	bep := n.login(t, bob, 0)
	const prekeys = 150
	if code := n.publish(t, bob, bep, testKeys(9, 1, 100)); code != 0 {
		t.Fatal(code)
	}
	if code := n.publish(t, bob, bep, &pb.KeysPublish{Prekeys: testKeys(9, 101, prekeys).Prekeys}); code != 0 {
		t.Fatal(code)
	}
	var mu sync.Mutex
	var got []uint32
	fetchers := func(count, each int) {
		var wg sync.WaitGroup
		for range count {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ep := newEndpoint(t)
				for range each {
					if err := n.router.Submit(storage.Op{Kind: storage.OpKeysFetch, User: bob.user, RID: 1, Conn: ep.ref}); err != nil {
						panic(err)
					}
				}
				ep.wait(t, "bundles", func(e *endpoint) bool { return len(e.frames) == each })
				mu.Lock()
				defer mu.Unlock()
				for _, f := range ep.frames {
					if b := f.msg.(*pb.KeyBundles).Bundles; len(b) == 1 && b[0].Prekey != nil {
						got = append(got, b[0].Prekey.Id)
					}
				}
			}()
		}
		wg.Wait()
	}
	fetchers(8, 10) // 80 of 150
	n.restart()
	fetchers(8, 10) // 70 more, then 10 without a prekey
	slices.Sort(got)
	if len(got) != prekeys || len(slices.Compact(slices.Clone(got))) != prekeys {
		t.Fatalf("handed out %d prekeys, %d distinct, want each of %d once", len(got), len(slices.Compact(slices.Clone(got))), prekeys)
	}
}

// TestKeysChangedAndRevoked: a device's first keys and its revocation
// reach the user's contacts, including those of a revoked device, as
// KEYS_CHANGED, and its other devices too; a revoked device's keys are
// gone from the directory.
func TestKeysChangedAndRevoked(t *testing.T) {
	for _, shards := range []int{1, 3} {
		t.Run(fmt.Sprintf("%d shards", shards), func(t *testing.T) {
			n := newNode(t, shards, nil)
			alice, bob := n.register(t, "+15550007021"), n.register(t, "+15550007022")
			aep, bep := n.login(t, alice, 0), n.login(t, bob, 0)
			aep.take(t, protocol.KindSynced)
			bep.take(t, protocol.KindSynced)
			n.submit(storage.Op{Kind: storage.OpSubscribe, User: bob.user, Device: bob.device, Users: []uint64{alice.user}, RID: 1, Conn: bep.ref})
			bep.take(t, protocol.KindOK)

			if code := n.publish(t, bob, bep, testKeys(1, 1, 5)); code != 0 {
				t.Fatal(code)
			}
			kc := aep.take(t, protocol.KindKeysChanged).(*pb.KeysChanged)
			if kc.User != bob.user || !slices.Equal(kc.Devices, []uint32{bob.device}) {
				t.Fatalf("alice got %v, want bob's device %d", kc, bob.device)
			}
			laptop := n.link(t, bob, bep, "laptop")
			lep := n.login(t, laptop, 0)
			lep.take(t, protocol.KindSynced)
			if code := n.publish(t, laptop, lep, testKeys(2, 1, 5)); code != 0 {
				t.Fatal(code)
			}
			for _, ep := range []*endpoint{aep, bep, lep} {
				kc := ep.take(t, protocol.KindKeysChanged).(*pb.KeysChanged)
				if !slices.Equal(kc.Devices, []uint32{bob.device, laptop.device}) {
					t.Fatalf("after the laptop's keys: %v", kc)
				}
			}
			if b := n.fetch(t, aep, bob.user); len(b) != 2 {
				t.Fatalf("bundles %v, want 2", b)
			}
			n.submit(storage.Op{Kind: storage.OpRevokeDevice, User: bob.user, Device: bob.device, Target: laptop.device, RID: 3, Conn: bep.ref})
			bep.take(t, protocol.KindOK)
			if kc := aep.take(t, protocol.KindKeysChanged).(*pb.KeysChanged); !slices.Equal(kc.Devices, []uint32{bob.device}) {
				t.Fatalf("after the revocation: %v", kc)
			}
			if b := n.fetch(t, aep, bob.user); len(b) != 1 || b[0].Device != bob.device {
				t.Fatalf("bundles after the revocation %v", b)
			}
			// Re-registration: the new phone has no contacts yet, the old
			// one's still hear of it.
			n.clock.Advance(time.Minute)
			bob2 := n.register(t, "+15550007022")
			if kc := aep.take(t, protocol.KindKeysChanged).(*pb.KeysChanged); len(kc.Devices) != 0 {
				t.Fatalf("after re-registration: %v", kc)
			}
			b2ep := n.login(t, bob2, 0)
			if code := n.publish(t, bob2, b2ep, testKeys(3, 1, 5)); code != 0 {
				t.Fatal(code)
			}
			if kc := aep.take(t, protocol.KindKeysChanged).(*pb.KeysChanged); !slices.Equal(kc.Devices, []uint32{bob2.device}) {
				t.Fatalf("after the new phone's keys: %v", kc)
			}
		})
	}
}

// TestKeysChangedReachesGroupMembers: a user's device changes reach the
// members of its groups that are not its contacts, on other shards, through
// the groups' shards: one notice per change for a member that shares two
// groups of one shard with the user, none for a member removed since.
func TestKeysChangedReachesGroupMembers(t *testing.T) {
	n := newNode(t, 3, nil)
	alice := n.register(t, n.phoneOn(t, 0, 711))
	bob := n.register(t, n.phoneOn(t, 1, 712))
	carol := n.register(t, n.phoneOn(t, 2, 713))
	dave := n.register(t, n.phoneOn(t, 0, 714))
	aep, bep, cep, dep := n.login(t, alice, 0), n.login(t, bob, 0), n.login(t, carol, 0), n.login(t, dave, 0)
	for _, ep := range []*endpoint{aep, bep, cep, dep} {
		ep.take(t, protocol.KindSynced)
	}
	g1 := n.createGroup(t, alice, aep, "one", bob.user, carol.user)
	n.createGroup(t, dave, dep, "two", alice.user, bob.user)

	// notice reads ep's frames up to its next KEYS_CHANGED, which must be
	// about bob and list want.
	notice := func(ep *endpoint, who string, want ...uint32) {
		t.Helper()
		for {
			f := ep.next(t, who+"'s KEYS_CHANGED")
			kc, ok := f.msg.(*pb.KeysChanged)
			if !ok {
				continue
			}
			if kc.User != bob.user || !slices.Equal(kc.Devices, want) {
				t.Fatalf("%s got %v, want bob's %v", who, kc, want)
			}
			return
		}
	}
	if code := n.publish(t, bob, bep, testKeys(1, 1, 5)); code != 0 {
		t.Fatal(code)
	}
	notice(aep, "alice", bob.device)
	notice(cep, "carol", bob.device)
	notice(dep, "dave", bob.device)

	// newDevice links a device to bob and publishes its keys.
	newDevice := func(name string, keys int) account {
		t.Helper()
		d := n.link(t, bob, bep, name)
		ep := n.login(t, d, 0)
		ep.take(t, protocol.KindSynced)
		if code := n.publish(t, d, ep, testKeys(keys, 1, 5)); code != 0 {
			t.Fatal(code)
		}
		return d
	}
	laptop := newDevice("laptop", 2)
	// alice shares both groups (one shard) with bob: one notice, so the
	// next one she reads is the laptop's.
	notice(aep, "alice", bob.device, laptop.device)
	notice(cep, "carol", bob.device, laptop.device)
	notice(dep, "dave", bob.device, laptop.device)

	n.groupUpdate(t, alice, aep, g1.Group, pb.GroupOp_GROUP_OP_REMOVE, carol.user)
	aep.take(t, protocol.KindOK)
	n.submit(storage.Op{Kind: storage.OpRevokeDevice, User: bob.user, Device: bob.device, Target: laptop.device, RID: 3, Conn: bep.ref})
	bep.take(t, protocol.KindOK)
	notice(aep, "alice", bob.device)
	notice(dep, "dave", bob.device)
	// carol is no member any more: her next notice is of a change after
	// she shares a group with bob again.
	n.createGroup(t, carol, cep, "three", bob.user)
	bob2 := newDevice("tablet", 3)
	notice(cep, "carol", bob.device, bob2.device)
}

// TestKeysPreKeysPerRequester: one user takes at most PreKeysPerRequester
// one-time prekeys of one device a day; its further fetches get the bundle
// without one, while another user still gets them, and so does the first
// one the next day ([S-17-4]).
func TestKeysPreKeysPerRequester(t *testing.T) {
	n := newNode(t, 2, func(c *storage.Config) { c.PreKeysPerRequester = 3 })
	bob, mallory, alice := n.register(t, "+15550007031"), n.register(t, "+15550007032"), n.register(t, "+15550007033")
	bep := n.login(t, bob, 0)
	if code := n.publish(t, bob, bep, testKeys(4, 1, 20)); code != 0 {
		t.Fatal(code)
	}
	ep := newEndpoint(t)
	fetch := func(from account) *pb.KeyBundle {
		t.Helper()
		n.submit(storage.Op{Kind: storage.OpKeysFetch, User: bob.user, From: from.user, RID: 8, Conn: ep.ref})
		b := ep.take(t, protocol.KindKeyBundles).(*pb.KeyBundles).Bundles
		if len(b) != 1 || b[0].SignedPrekey == nil {
			t.Fatalf("bundles %v, want bob's one with its signed prekey", b)
		}
		return b[0]
	}
	var took []uint32
	for i := range 5 {
		b := fetch(mallory)
		if (b.Prekey != nil) != (i < 3) {
			t.Fatalf("mallory's fetch %d: prekey %v, want one in the first 3 only", i+1, b.Prekey)
		}
		if b.Prekey != nil {
			took = append(took, b.Prekey.Id)
		}
	}
	if b := fetch(alice); b.Prekey == nil || b.Prekey.Id != 4 {
		t.Fatalf("alice's fetch: prekey %v, want id 4 (mallory took %v)", b.Prekey, took)
	}
	n.clock.Advance(24 * time.Hour)
	if b := fetch(mallory); b.Prekey == nil || b.Prekey.Id != 5 {
		t.Fatalf("mallory's fetch the next day: prekey %v, want id 5", b.Prekey)
	}
}
