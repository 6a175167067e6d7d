package analytics

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"testing"
)

// TestAppendJSONMatchesEncodingJSON: AppendJSON writes what json.Marshal
// writes for the same event, for every field zero or not, extreme values
// and strings that need escaping.
func TestAppendJSONMatchesEncodingJSON(t *testing.T) {
	types := []string{TypeMessageAccepted, "", `a"b\c`, "<tag>&", "a<b", "a>b", "tab\there", "é", "\u2028", "bad\xffutf8"}
	check := func(e Event) {
		t.Helper()
		want, err := json.Marshal(&e)
		if err != nil {
			t.Fatal(err)
		}
		if got := e.AppendJSON(nil); string(got) != string(want) {
			t.Fatalf("AppendJSON(%+v) = %s, want %s", e, got, want)
		}
	}
	for _, typ := range types {
		check(Event{Type: typ})
	}
	check(Event{Type: TypeLogin, TimeMS: math.MinInt64, Shard: math.MinInt, User: math.MaxUint64, Device: math.MaxUint32,
		Peer: math.MaxUint64, Group: 1, ID: math.MaxUint64, Size: math.MinInt64, Count: math.MaxInt})
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func(v uint64) uint64 { // zero half the time, so every field is left out sometimes
		if rng.IntN(2) == 0 {
			return 0
		}
		return v
	}
	for range 2000 {
		check(Event{
			Type:   types[rng.IntN(len(types))],
			TimeMS: int64(pick(rng.Uint64())),
			Shard:  int(int16(pick(rng.Uint64()))),
			User:   pick(rng.Uint64()),
			Device: uint32(pick(rng.Uint64())),
			Peer:   pick(rng.Uint64()),
			Group:  pick(rng.Uint64()),
			ID:     pick(rng.Uint64()),
			Size:   int64(pick(rng.Uint64())),
			Count:  int(int32(pick(rng.Uint64()))),
		})
	}
}

// TestAppendJSONAllocatesNothing: encoding an event into a buffer with
// room allocates nothing.
func TestAppendJSONAllocatesNothing(t *testing.T) {
	e := Event{Type: TypeMessageAccepted, TimeMS: 1764900000000, Shard: 1, User: 1 << 40, Device: 3, Peer: 1 << 41, ID: 1 << 60, Size: 20, Count: 1}
	buf := make([]byte, 0, 512)
	if n := testing.AllocsPerRun(100, func() { buf = e.AppendJSON(buf[:0]) }); n != 0 {
		t.Fatalf("AppendJSON allocated %v times", n)
	}
}
