package client

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// testPublicKey returns a well-formed public key derived from n.
func testPublicKey(n int) []byte {
	k := make([]byte, protocol.KeyLen)
	k[0] = 0x05
	for i := 1; i < len(k); i++ {
		k[i] = byte(n*7 + i)
	}
	return k
}

// TestE2EKeyDirectory: through a real node, a device publishes its keys;
// a contact hears of them (KEYS_CHANGED); clients of four users fetch
// the device's bundle concurrently, and no one-time prekey is handed out
// twice, while every one is handed out; the device hears that it runs low.
func TestE2EKeyDirectory(t *testing.T) {
	n := startE2ENode(t)
	bob := n.start(t, n.register(t, "+447700900701"))
	alice := n.start(t, n.register(t, "+447700900702"))
	ctx := context.Background()
	if err := bob.Subscribe(ctx, []uint64{alice.User()}); err != nil {
		t.Fatal(err)
	}
	const prekeys = 60
	keys := &pb.KeysPublish{
		IdentityKey: testPublicKey(1), RegistrationId: 77,
		SignedPrekey: &pb.SignedPreKey{Id: 1, Key: testPublicKey(2), Signature: make([]byte, protocol.SignatureLen)},
	}
	for id := range prekeys {
		keys.Prekeys = append(keys.Prekeys, &pb.PreKey{Id: uint32(id + 1), Key: testPublicKey(100 + id)})
	}
	if err := bob.PublishKeys(ctx, keys); err != nil {
		t.Fatal(err)
	}
	kc := next(t, alice, func(KeysChanged) bool { return true })
	if kc.User != bob.User() || !slices.Equal(kc.Devices, []uint32{bob.Device()}) {
		t.Fatalf("alice got %+v", kc)
	}

	var fetchers []*testClient
	for i := range 4 {
		fetchers = append(fetchers, n.start(t, n.register(t, fmt.Sprintf("+44770090071%d", i))))
	}
	var (
		mu  sync.Mutex
		got []uint32
		wg  sync.WaitGroup
	)
	for _, f := range fetchers {
		for range 20 { // 80 fetches for 60 prekeys
			wg.Add(1)
			go func() {
				defer wg.Done()
				b, err := f.FetchKeys(ctx, bob.User())
				if err != nil || len(b) != 1 || string(b[0].IdentityKey) != string(keys.IdentityKey) {
					t.Errorf("fetch: %v %v", b, err)
					return
				}
				if b[0].Prekey != nil {
					mu.Lock()
					got = append(got, b[0].Prekey.Id)
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	slices.Sort(got)
	distinct := len(slices.Compact(slices.Clone(got)))
	if len(got) != prekeys || distinct != prekeys {
		t.Fatalf("%d prekeys handed out, %d distinct; want each of %d once", len(got), distinct, prekeys)
	}
	low := next(t, bob, func(PreKeysLow) bool { return true })
	if low.Device != bob.Device() || low.Count != protocol.PreKeysLow {
		t.Fatalf("bob got %+v", low)
	}
}
