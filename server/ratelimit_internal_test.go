package server

import (
	"math"
	"strings"
	"testing"
	"time"
)

// TestKeyedBudgets: one bucket per key, each with its burst, a wait that
// says when the next token comes, refilled buckets forgotten first when a
// stripe is full, and no allocation per take once a key has its bucket
// (every SEND takes one).
func TestKeyedBudgets(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	k := newKeyedBudgets[uint64](Budget{PerSecond: 2, Burst: 3})
	for i := range 3 {
		if w := k.take(7, 1, now); w != 0 {
			t.Fatalf("take %d of a burst of 3: wait %d ms", i+1, w)
		}
	}
	if w := k.take(7, 1, now); w != 500 {
		t.Fatalf("the fourth take: wait %d ms, want 500 (2 a second)", w)
	}
	if w := k.take(8, 1, now); w != 0 {
		t.Fatalf("another key: wait %d ms", w)
	}
	if w := k.take(7, 1, now.Add(500*time.Millisecond)); w != 0 {
		t.Fatalf("after the wait: %d ms more", w)
	}

	// A full stripe forgets the buckets that refilled, not a drained one.
	s := k.stripeOf(7)
	var keys []uint64 // maxBudgetKeys+1 more keys of that stripe
	for key := uint64(100); len(keys) <= maxBudgetKeys; key++ {
		if k.stripeOf(key) == s {
			keys = append(keys, key)
		}
	}
	for range 3 {
		k.take(keys[0], 1, now) // drained
	}
	for _, key := range keys[1:maxBudgetKeys] {
		k.bucket(key, now) // full
	}
	k.bucket(keys[maxBudgetKeys], now) // one too many: the stripe forgets
	if n := len(s.m); n >= maxBudgetKeys/2 {
		t.Errorf("%d buckets left in the stripe, want fewer than %d", n, maxBudgetKeys/2)
	}
	if w := k.take(keys[0], 1, now); w == 0 {
		t.Fatal("the drained bucket was forgotten (refilled) when its stripe was full")
	}

	if a := testing.AllocsPerRun(100, func() { k.take(7, 1, now) }); a != 0 {
		t.Errorf("take allocates %v times", a)
	}
}

// BenchmarkSendBudget is what the send limit costs each SEND: a take from
// the account's bucket, from every event loop at once.
func BenchmarkSendBudget(b *testing.B) {
	k := newKeyedBudgets[uint64](Budget{PerSecond: 1e12, Burst: 1 << 30})
	now := time.Now()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for user := uint64(0); pb.Next(); user = (user + 1) % 1000 {
			k.take(user, 1, now)
		}
	})
}

// TestRateConfig: every bad rate limit is reported at once.
func TestRateConfig(t *testing.T) {
	c := Config{Addr: ":0", Plaintext: true, Router: nil, Sends: Budget{PerSecond: math.Inf(1)}, LinksPerIP: Budget{Burst: -2}, CodePrefixDigits: 16}
	c.setDefaults()
	err := c.validate()
	for _, want := range []string{"sends: rate +Inf", "links per IP: rate 0.1, burst -2", "code prefix digits 16"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("validate: %v; want it to say %q", err, want)
		}
	}
}
