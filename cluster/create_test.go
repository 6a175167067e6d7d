package cluster

import (
	"errors"
	"slices"
	"sync"
	"testing"
)

func TestCreateOnce(t *testing.T) {
	e := testEtcd(t)
	cli := testClient(t, e)
	ctx := testCtx(t)

	// Racing creators with different counts: exactly one count wins, and
	// every other creator hears ErrShardCount.
	counts := []int{3, 5, 7, 9, 11, 13}
	errs := make([]error, len(counts))
	var wg sync.WaitGroup
	for i, n := range counts {
		wg.Go(func() { errs[i] = Create(ctx, cli, "", n) })
	}
	wg.Wait()
	won := -1
	for i, err := range errs {
		switch {
		case err == nil:
			if won >= 0 {
				t.Fatalf("counts %d and %d both created", counts[won], counts[i])
			}
			won = i
		case !errors.Is(err, ErrShardCount):
			t.Fatalf("create %d: %v", counts[i], err)
		}
	}
	if won < 0 {
		t.Fatal("no creator won")
	}
	want := counts[won]
	if err := Create(ctx, cli, "", want); err != nil {
		t.Fatalf("create again with the same count: %v", err)
	}
	w := testWatcher(t, cli)
	st := waitState(t, w, "created", (*State).Created)
	if st.Shards != want || !slices.Equal(st.Slots, SlotMap(want)) || st.Epoch != 0 {
		t.Fatalf("state: %d shards, epoch %d, slots equal %v", st.Shards, st.Epoch, slices.Equal(st.Slots, SlotMap(want)))
	}
	if len(st.Placement) != want {
		t.Fatalf("placement of %d shards, want %d", len(st.Placement), want)
	}
	if err := Create(ctx, cli, "", 0); err == nil {
		t.Fatal("0 shards accepted")
	}
	if err := Create(ctx, cli, "", MaxShards+1); err == nil {
		t.Fatal("too many shards accepted")
	}
	// Another prefix is another cluster.
	if err := Create(ctx, cli, "/other/", want+1); err != nil {
		t.Fatalf("another prefix: %v", err)
	}
}

func TestSlotMap(t *testing.T) {
	for _, n := range []int{1, 3, 16, 1000, MaxShards} {
		m := SlotMap(n)
		seen := make([]int, n)
		for s, sh := range m {
			if s > 0 && sh < m[s-1] {
				t.Fatalf("%d shards: slot %d on shard %d after %d", n, s, sh, m[s-1])
			}
			seen[sh]++
		}
		for sh, c := range seen {
			if c < NumSlots/n || c > NumSlots/n+1 {
				t.Fatalf("%d shards: shard %d owns %d slots", n, sh, c)
			}
		}
		back, err := decodeSlots(encodeSlots(m), n)
		if err != nil || !slices.Equal(back, m) {
			t.Fatalf("%d shards: round trip: %v", n, err)
		}
	}
	if _, err := decodeSlots(encodeSlots(SlotMap(4)), 3); err == nil {
		t.Fatal("slot map naming shard 3 of 3 accepted")
	}
}
