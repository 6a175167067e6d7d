package router

import (
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/parley-im/parley/storage"
)

func newRouter(t *testing.T, count int) *Router {
	t.Helper()
	r, err := New(count)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

type nopCodes struct{}

func (nopCodes) SendCode(_, _ string, done func(error)) { done(nil) }

func openShards(t *testing.T, r *Router, n int) []*storage.Shard {
	t.Helper()
	fs := vfs.NewMem()
	var shards []*storage.Shard
	for i := range n {
		s, err := storage.Open(storage.Config{ID: uint16(i), Dir: string(rune('a' + i)), FS: fs, Forwarder: r, Conns: r, Codes: nopCodes{}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		shards = append(shards, s)
	}
	return shards
}

// TestSlotsContiguous: slots are assigned to shards in equal contiguous
// ranges, so a slot range moves as a unit.
func TestSlotsContiguous(t *testing.T) {
	r := newRouter(t, 3)
	if err := r.Attach(openShards(t, r, 3)); err != nil {
		t.Fatal(err)
	}
	prev, counts := uint16(0), map[uint16]int{}
	for slot := range storage.NumSlots {
		id := r.slots[slot]
		if id < prev {
			t.Fatalf("slot %d on shard %d after shard %d", slot, id, prev)
		}
		prev = id
		counts[id]++
	}
	for id, n := range counts {
		if n < storage.NumSlots/3-1 || n > storage.NumSlots/3+1 {
			t.Fatalf("shard %d owns %d slots", id, n)
		}
	}
}

// TestRouting: ops go to the shard of what they name.
func TestRouting(t *testing.T) {
	r := newRouter(t, 4)
	if err := r.Attach(openShards(t, r, 4)); err != nil {
		t.Fatal(err)
	}
	user := uint64(7)<<12 | 3000 // slot 3000
	group := uint64(9)<<12 | 100 // slot 100
	code := storage.NewLinkCode([10]byte{0xff, 0xff})
	slot, _ := storage.LinkCodeSlot(code)
	tests := []struct {
		op   storage.Op
		want uint16
	}{
		{storage.Op{Kind: storage.OpSend, User: user}, r.slots[3000]},
		{storage.Op{Kind: storage.OpSend, Group: group}, r.slots[100]},
		{storage.Op{Kind: storage.OpGroupUpdate, User: user, Group: group}, r.slots[100]},
		{storage.Op{Kind: storage.OpRequestCode, Phone: "+15551234567"}, r.ShardOfPhone("+15551234567")},
		{storage.Op{Kind: storage.OpLinkApprove, Code: code, User: user}, r.slots[slot]},
		// A 1:1 typing goes to the sender's shard first, for its blocks.
		{storage.Op{Kind: storage.OpTyping, User: user, From: uint64(5)<<12 | 2000}, r.slots[2000]},
	}
	for _, tt := range tests {
		if got := r.slots[SlotOf(&tt.op)]; got != tt.want {
			t.Errorf("%v op routed to shard %d, want %d", tt.op.Kind, got, tt.want)
		}
	}
	if slot != 4095 {
		t.Errorf("link code %s has slot %d, want 4095 (its first 12 bits)", code, slot)
	}
}

func TestAttachRefusesMisnumberedShards(t *testing.T) {
	if _, err := New(0); err == nil {
		t.Fatal("New accepted no shards")
	}
	r := newRouter(t, 2)
	shards := openShards(t, r, 2)
	if err := r.Attach([]*storage.Shard{shards[1], shards[0]}); err == nil {
		t.Fatal("Attach accepted shards out of order")
	}
	if err := r.Attach(nil); err == nil {
		t.Fatal("Attach accepted no shards")
	}
}
