package sendorder

import (
	"testing"
	"time"

	"github.com/parley-im/parley/protocol"
)

// TestHold: a barrier holds back higher cmids of its conversation with
// its code and retry_after_ms, passes lower ones, and goes at its own
// cmid or TTL after it was raised, whichever comes first.
func TestHold(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	now := t0
	clock := func() time.Time { return now }
	var s Set[Conversation]
	a, g := ConversationOf(7, 0), ConversationOf(0, 7)
	if a == g {
		t.Fatal("user 7 and group 7 are one conversation")
	}
	raise := func(k Conversation, cmid uint64) {
		t.Helper()
		if !s.Raise(k, Barrier{CMID: cmid, Code: protocol.CodeOverloaded, RetryMS: 500, At: now.UnixNano()}, 10) {
			t.Fatalf("raising %v at cmid %d refused", k, cmid)
		}
	}
	raise(a, 5)
	if b, held := s.Hold(a, 6, clock); !held || b.CMID != 5 || b.Code != protocol.CodeOverloaded || b.RetryMS != 500 {
		t.Fatalf("cmid 6: %+v held %v, want cmid 5's barrier", b, held)
	}
	for _, c := range []struct {
		k    Conversation
		cmid uint64
	}{{a, 4}, {g, 6}} {
		if _, held := s.Hold(c.k, c.cmid, clock); held {
			t.Fatalf("%v cmid %d held back", c.k, c.cmid)
		}
	}
	if _, held := s.Hold(a, 5, clock); held || s.Len() != 0 || s.m != nil {
		t.Fatalf("the retry: held %v, %d barriers left (map %v), want it through and none", held, s.Len(), s.m)
	}
	if _, held := s.Hold(a, 6, clock); held {
		t.Fatal("cmid 6 held back after the retry")
	}

	raise(a, 8)
	now = t0.Add(TTL - time.Nanosecond)
	if _, held := s.Hold(a, 9, clock); !held {
		t.Fatal("cmid 9 passed before TTL")
	}
	now = t0.Add(TTL)
	if _, held := s.Hold(a, 9, clock); held || s.Len() != 0 {
		t.Fatalf("cmid 9 at TTL: held %v, %d barriers left", held, s.Len())
	}
}

// TestRaiseBounded: a full Set raises no barrier for a new conversation
// unless expired ones make room; it still replaces a held one's.
func TestRaiseBounded(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	var s Set[uint64]
	for k := range uint64(3) {
		if !s.Raise(k, Barrier{CMID: 1, At: t0.Add(time.Duration(k) * time.Minute).UnixNano()}, 3) {
			t.Fatalf("barrier %d refused below the limit", k)
		}
	}
	if s.Raise(3, Barrier{CMID: 1, At: t0.UnixNano()}, 3) {
		t.Fatal("a fourth barrier raised past the limit of 3")
	}
	if !s.Raise(2, Barrier{CMID: 2, At: t0.UnixNano()}, 3) {
		t.Fatal("a full Set refused to replace a held conversation's barrier")
	}
	if !s.Raise(3, Barrier{CMID: 1, At: t0.Add(TTL + 30*time.Second).UnixNano()}, 3) || s.Len() != 2 {
		t.Fatalf("past the TTL of the two raised at t0: %d barriers, want room made and 2", s.Len())
	}
}

// TestDropExpire: Drop lowers the barriers its func names, Expire those
// past TTL; an emptied Set keeps no map.
func TestDropExpire(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	var s Set[uint64]
	for k := range uint64(4) {
		s.Raise(k, Barrier{CMID: 1, At: t0.Add(time.Duration(k) * time.Minute).UnixNano()}, 10)
	}
	s.Drop(func(k uint64) bool { return k%2 == 0 })
	if _, held := s.Hold(1, 2, func() time.Time { return t0 }); s.Len() != 2 || !held {
		t.Fatalf("after dropping the even keys: %d barriers (1 held %v), want 1 and 3", s.Len(), held)
	}
	s.Expire(t0.Add(TTL + time.Minute))
	if s.Len() != 1 {
		t.Fatalf("%d barriers after expiring the one raised at t0+1m, want 1", s.Len())
	}
	s.Expire(t0.Add(TTL + 3*time.Minute))
	if s.Len() != 0 || s.m != nil {
		t.Fatalf("%d barriers (map %v) after expiring all, want none and no map", s.Len(), s.m)
	}
}

// TestHoldAllocatesNothing: Hold costs no allocation, with or without a
// barrier up.
func TestHoldAllocatesNothing(t *testing.T) {
	var s Set[Conversation]
	now := func() time.Time { return time.Unix(1_000_000, 0) }
	k := ConversationOf(7, 0)
	if a := testing.AllocsPerRun(100, func() { s.Hold(k, 2, now) }); a != 0 {
		t.Errorf("Hold on an empty Set allocates %v times", a)
	}
	s.Raise(k, Barrier{CMID: 1, At: now().UnixNano()}, 1)
	if a := testing.AllocsPerRun(100, func() { s.Hold(k, 2, now) }); a != 0 {
		t.Errorf("Hold behind a barrier allocates %v times", a)
	}
}
