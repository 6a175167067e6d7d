package codec

import (
	"bytes"
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// sentID builds a message id from milliseconds and bits 21–0.
func sentID(ms, low uint64) uint64 { return ms<<protocol.MessageIDTimeShift | low }

// TestSentStateRoundTrip encodes a connection's SENTs against one state
// and decodes them against another ([S-7-16]): answers in order, out of
// order, from another shard, a retry of an old message, and the first
// SENT, which is full.
func TestSentStateRoundTrip(t *testing.T) {
	const now = 300_000_000_000 // ms since the epoch, in 2034
	steps := []struct {
		name       string
		cmid, id   uint64
		frameBytes int // what the frame should take
	}{
		{"first, full", 1, sentID(now, 4096), 14},
		{"next cmid, 1 s later", 2, sentID(now+1000, 4096), 5},
		{"next cmid, same ms, counter + 1", 3, sentID(now+1000, 4097), 4},
		{"next cmid, 5 ms later, counter back", 4, sentID(now+1005, 4096), 6},
		{"out of order (cmid 6 before 5)", 6, sentID(now+1006, 4096), 6},
		{"out of order (cmid 5)", 5, sentID(now+1006, 4097), 6},
		{"another shard", 7, sentID(now+1010, 0), 9},
		{"a retry of a day-old message", 8, sentID(now-86_400_000, 0), 7},
		{"far away: full is shorter", 1 << 40, sentID(1, 3), 14},
		{"back", 1<<40 + 1, sentID(now+2000, 0), 11},
	}
	var enc, dec SentState
	var frames []byte
	for _, s := range steps {
		f := enc.AppendSent(nil, s.cmid, s.id)
		if len(f) != s.frameBytes {
			t.Errorf("%s: frame % x is %d bytes, want %d", s.name, f, len(f), s.frameBytes)
		}
		if len(f) > len(AppendSent(nil, s.cmid, s.id)) {
			t.Errorf("%s: compact form longer than the full one", s.name)
		}
		fr, _, _, err := Parse(f, protocol.MaxFrameBody)
		if err != nil || fr.Kind != protocol.KindSent {
			t.Fatalf("%s: %v %v", s.name, fr.Kind, err)
		}
		// The generated code reads the same fields.
		var m pb.Sent
		if err := proto.Unmarshal(fr.Body, &m); err != nil {
			t.Fatalf("%s: proto: %v", s.name, err)
		}
		cmid, id, err := dec.ParseSent(fr.Body)
		if err != nil || cmid != s.cmid || id != s.id {
			t.Errorf("%s: decoded (%d, %d, %v), want (%d, %d)", s.name, cmid, id, err, s.cmid, s.id)
		}
		frames = append(frames, f...)
	}
	if enc != dec {
		t.Errorf("states differ: encoder %+v, decoder %+v", enc, dec)
	}

	// The server's path: full SENTs from the shards among other frames,
	// rewritten in place, decode to the same values.
	var full []byte
	for i, s := range steps {
		full = AppendSent(full, s.cmid, s.id)
		if i%3 == 0 {
			full = AppendAck(full, uint64(i)) // anything else passes through
		}
	}
	var st SentState
	n, count := st.CompactSents(full, nil)
	if want := uint64(len(steps) + (len(steps)+2)/3); count != want {
		t.Errorf("CompactSents counted %d frames, want %d", count, want)
	}
	var got SentState
	for i, rest := 0, full[:n]; len(rest) > 0; {
		f, r, err := NextFrame(rest, protocol.MaxFrameBody)
		if err != nil {
			t.Fatal(err)
		}
		rest = r
		if f.Kind != protocol.KindSent {
			continue
		}
		cmid, id, err := got.ParseSent(f.Body)
		if err != nil || cmid != steps[i].cmid || id != steps[i].id {
			t.Errorf("rewritten step %d: (%d, %d, %v), want (%d, %d)", i, cmid, id, err, steps[i].cmid, steps[i].id)
		}
		i++
	}
	if !bytes.Equal(stripAcks(t, full[:n]), frames) {
		t.Errorf("CompactSents wrote\n% x\nAppendSent\n% x", stripAcks(t, full[:n]), frames)
	}
}

// stripAcks returns the frames of b other than ACKs.
func stripAcks(t *testing.T, b []byte) []byte {
	var out []byte
	for len(b) > 0 {
		f, r, err := NextFrame(b, protocol.MaxFrameBody)
		if err != nil {
			t.Fatal(err)
		}
		if f.Kind != protocol.KindAck {
			out = append(out, b[:len(b)-len(r)]...)
		}
		b = r
	}
	return out
}

// TestSentStateRefusals: a compact SENT needs a previous one, and deltas
// that leave the id's fields are refused ([S-7-16]).
func TestSentStateRefusals(t *testing.T) {
	base := SentState{CMID: 5, ID: sentID(1000, 10)}
	cases := []struct {
		name string
		st   SentState
		body []byte
	}{
		{"compact first", SentState{}, []byte{0x20, 0x02}},
		{"empty first", SentState{}, nil},
		{"low bits below 0", base, []byte{0x28, 0x15}},                         // low_delta −11
		{"low bits above 22 bits", base, []byte{0x28, 0xfe, 0xff, 0xff, 0x03}}, // +2^22 − 1
		{"ms below 0", base, []byte{0x20, 0xd1, 0x0f}},                         // ms_delta −1001
		{"cmid 0", base, []byte{0x18, 0x0b}},                                   // cmid_gap −6
		{"truncated", base, []byte{0x20}},
	}
	for _, c := range cases {
		st := c.st
		if _, _, err := st.ParseSent(c.body); err == nil {
			t.Errorf("%s: accepted", c.name)
		} else if c.name != "truncated" && !errors.Is(err, ErrCompactSent) {
			t.Errorf("%s: %v, want ErrCompactSent", c.name, err)
		}
		if c.name != "truncated" && st != c.st {
			t.Errorf("%s: state moved to %+v on a refusal", c.name, st)
		}
	}
}

// TestSentStateAllocs: the server rewrites and the clients decode SENTs
// without allocating.
func TestSentStateAllocs(t *testing.T) {
	var frames []byte
	for i := range uint64(16) {
		frames = AppendSent(frames, i+1, sentID(1e9+i, 4096))
	}
	buf := make([]byte, len(frames))
	allocs := testing.AllocsPerRun(100, func() {
		var st, dec SentState
		copy(buf, frames)
		n, _ := st.CompactSents(buf, nil)
		for rest := buf[:n]; len(rest) > 0; {
			f, r, _ := NextFrame(rest, protocol.MaxFrameBody)
			rest = r
			if _, _, err := dec.ParseSent(f.Body); err != nil {
				panic(err)
			}
		}
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per run, want 0", allocs)
	}
}

func BenchmarkCompactSents(b *testing.B) {
	var frames []byte
	for i := range uint64(16) {
		frames = AppendSent(frames, i+1, sentID(1e9+i, 4096))
		frames = AppendAck(frames, i)
	}
	buf := make([]byte, len(frames))
	b.ReportAllocs()
	for b.Loop() {
		var st SentState
		copy(buf, frames)
		st.CompactSents(buf, nil)
	}
}
