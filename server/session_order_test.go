package server

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/internal/sendorder"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
	"github.com/parley-im/parley/storage"
)

// orderRouter records the SENDs handed to shards and refuses those whose
// cmid is in refuse, once each (a full shard queue, an unreachable node).
type orderRouter struct {
	refuse map[uint64]bool
	sends  []uint64 // cmids submitted, in order
}

func (r *orderRouter) Submit(op storage.Op) error {
	if r.refuse[op.CMID] {
		delete(r.refuse, op.CMID)
		return errors.New("busy")
	}
	r.sends = append(r.sends, op.CMID)
	return nil
}

func (r *orderRouter) ShardOf(uint64) uint16 { return 0 }

func (r *orderRouter) ShardOfPhone(string) uint16 { return 0 }

// orderConn returns an authenticated connection of user 1 on a server
// that is never started, with r as its router.
func orderConn(t *testing.T, r Router, change func(*Config)) *conn {
	t.Helper()
	cfg := Config{Addr: "127.0.0.1:0", Plaintext: true, Router: r, Conns: NewRegistry(0, 1)}
	if change != nil {
		change(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := newConn(s, nil)
	c.state, c.user, c.device = stateAuthenticated, 1, 1
	c.ref = storage.ConnRef{ID: 1}
	return c
}

// sendAll has c read one SEND per cmid, to user to (group 0) or group,
// pipelined, and returns the errors it answered by cmid.
func sendAll(t *testing.T, c *conn, to, group uint64, cmids ...uint64) map[uint64]*pb.Error {
	t.Helper()
	var in []byte
	for _, cmid := range cmids {
		in = codec.AppendSend(in, codec.Send{To: to, Group: group, CMID: cmid, Body: []byte("m")})
	}
	var w buffer
	if n, v := c.handleFrames(in, &w); n != len(in) || v.close {
		t.Fatalf("read %d of %d bytes, verdict %+v", n, len(in), v)
	}
	errs := map[uint64]*pb.Error{}
	for b := w.b; len(b) > 0; {
		f, n, _, err := codec.Parse(b, protocol.MaxFrameBody)
		if err != nil || n == 0 || f.Kind != protocol.KindError {
			t.Fatalf("answer %v (%d bytes, %v), want ERROR frames only", f.Kind, n, err)
		}
		var e pb.Error
		if err := codec.ParseProto(f.Body, &e); err != nil {
			t.Fatal(err)
		}
		errs[e.Cmid] = &e
		b = b[n:]
	}
	return errs
}

// TestGatewayKeepsOrderAcrossRefusals: the gateway refuses A (its shard's
// queue is full), and B and C, read right behind it, to the same user,
// are refused with A's code and retry_after_ms, so they cannot be stored
// before A's retry; another conversation goes on. The client's resend of
// A, B, C reaches the shard in that order ([S-8-13]).
func TestGatewayKeepsOrderAcrossRefusals(t *testing.T) {
	r := &orderRouter{refuse: map[uint64]bool{1: true}}
	c := orderConn(t, r, nil)
	errs := sendAll(t, c, 7, 0, 1, 2, 3)
	for _, cmid := range []uint64{1, 2, 3} {
		if e := errs[cmid]; e == nil || e.Code != protocol.CodeOverloaded || e.RetryAfterMs != retryAfterBusyMS {
			t.Fatalf("cmid %d answered %v, want OVERLOADED with retry_after_ms %d", cmid, e, retryAfterBusyMS)
		}
	}
	if got := sendAll(t, c, 0, 9, 4); len(got) != 0 {
		t.Fatalf("a SEND to another conversation was refused: %v", got)
	}
	if got := sendAll(t, c, 7, 0, 1, 2, 3); len(got) != 0 {
		t.Fatalf("the resends were refused: %v", got)
	}
	if want := []uint64{4, 1, 2, 3}; !slices.Equal(r.sends, want) {
		t.Fatalf("shard got cmids %v, want %v", r.sends, want)
	}
	if n := c.srv.stats.HeldSends.Load(); n != 2 {
		t.Errorf("HeldSends %d, want 2", n)
	}
	if n := c.held.Len(); n != 0 {
		t.Errorf("the connection keeps %d held conversations after the retry", n)
	}
}

// TestRateLimitKeepsOrder: A is refused RATE_LIMITED; B, to the same
// group, is refused with A's wait even once a token is back, and does
// not spend it: A's retry does ([S-8-13], [S-8-23]).
func TestRateLimitKeepsOrder(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	r := &orderRouter{}
	c := orderConn(t, r, func(cfg *Config) {
		cfg.GroupSends = Budget{PerSecond: 1, Burst: 1}
		cfg.Now = func() time.Time { return now }
	})
	errs := sendAll(t, c, 0, 5, 1, 2, 3)
	if len(errs) != 2 || errs[2] == nil || errs[3] == nil {
		t.Fatalf("answers %v, want cmids 2 and 3 refused", errs)
	}
	first := errs[2].RetryAfterMs
	if e := errs[3]; e.Code != protocol.CodeRateLimited || e.RetryAfterMs != first {
		t.Fatalf("cmid 3 answered %v, want RATE_LIMITED with cmid 2's retry_after_ms %d", e, first)
	}
	now = now.Add(time.Duration(first) * time.Millisecond)
	if e := sendAll(t, c, 0, 5, 3)[3]; e == nil || e.Code != protocol.CodeRateLimited {
		t.Fatalf("cmid 3 before cmid 2's retry: %v, want RATE_LIMITED", e)
	}
	if got := sendAll(t, c, 0, 5, 2); len(got) != 0 {
		t.Fatalf("cmid 2's retry refused: %v", got)
	}
	if want := []uint64{1, 2}; !slices.Equal(r.sends, want) {
		t.Fatalf("shard got cmids %v, want %v", r.sends, want)
	}
}

// TestGatewayBarrierExpires: a client that never retries the refused
// SEND gets its conversation back sendorder.TTL after the refusal
// ([S-8-13]): before then a later SEND is held back, after it goes
// through, and the barrier is gone.
func TestGatewayBarrierExpires(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	r := &orderRouter{refuse: map[uint64]bool{1: true}}
	c := orderConn(t, r, func(cfg *Config) { cfg.Now = func() time.Time { return now } })
	if e := sendAll(t, c, 7, 0, 1)[1]; e == nil || e.Code != protocol.CodeOverloaded {
		t.Fatalf("cmid 1 answered %v, want OVERLOADED", e)
	}
	now = now.Add(sendorder.TTL - time.Millisecond)
	if e := sendAll(t, c, 7, 0, 2)[2]; e == nil || e.Code != protocol.CodeOverloaded {
		t.Fatalf("cmid 2 just before the barrier's TTL answered %v, want OVERLOADED", e)
	}
	now = now.Add(time.Millisecond)
	if got := sendAll(t, c, 7, 0, 3); len(got) != 0 {
		t.Fatalf("cmid 3 at the barrier's TTL was refused: %v", got)
	}
	if want := []uint64{3}; !slices.Equal(r.sends, want) {
		t.Fatalf("shard got cmids %v, want %v", r.sends, want)
	}
	if n := c.held.Len(); n != 0 {
		t.Errorf("the connection keeps %d held conversations after the TTL", n)
	}
}

// TestHeldConversationsBounded: a connection that holds back
// maxHeldConversations conversations is closed with GOAWAY OVERLOADED at
// the next one.
func TestHeldConversationsBounded(t *testing.T) {
	r := &orderRouter{refuse: map[uint64]bool{}}
	c := orderConn(t, r, nil)
	for i := range uint64(maxHeldConversations + 1) {
		r.refuse[i+1] = true
	}
	var in []byte
	for i := range uint64(maxHeldConversations + 1) {
		in = codec.AppendSend(in, codec.Send{To: 100 + i, CMID: i + 1, Body: []byte("m")})
	}
	var w buffer
	_, v := c.handleFrames(in, &w)
	if !v.close || v.code != protocol.CodeOverloaded {
		t.Fatalf("verdict %+v, want a close with OVERLOADED", v)
	}
	if n := c.held.Len(); n != maxHeldConversations {
		t.Fatalf("%d conversations held, want %d", n, maxHeldConversations)
	}
}

// TestHeldBackAllocatesNothing: with no conversation held back, the
// barrier costs a SEND no allocation.
func TestHeldBackAllocatesNothing(t *testing.T) {
	c := orderConn(t, &orderRouter{}, nil)
	var w buffer
	conv := sendorder.ConversationOf(7, 0)
	if a := testing.AllocsPerRun(100, func() { c.heldBack(&w, conv, 1) }); a != 0 {
		t.Errorf("heldBack allocates %v times", a)
	}
}

// TestHeldBackAllocatesNothingWhenHeld: with conversations held back, the
// barrier costs no allocation either: not to a SEND to another
// conversation, nor to a later SEND of a held conversation refused behind
// its barrier (its Error appended to a buffer with room), nor to the
// retry of the refused cmid, which lowers the barrier (raised again each
// run; another held conversation keeps the map).
func TestHeldBackAllocatesNothingWhenHeld(t *testing.T) {
	c := orderConn(t, &orderRouter{}, nil)
	w := buffer{b: make([]byte, 0, 256)}
	held, other, kept := sendorder.ConversationOf(7, 0), sendorder.ConversationOf(8, 0), sendorder.ConversationOf(0, 9)
	c.holdBack(&w, kept, 1, protocol.CodeOverloaded, 0, 100)
	c.holdBack(&w, held, 5, protocol.CodeRateLimited, LimitSends, 100)
	for _, tc := range []struct {
		name string
		send func()
	}{
		{"a SEND to another conversation", func() {
			if c.heldBack(&w, other, 9) {
				t.Fatal("a SEND to another conversation was held back")
			}
		}},
		{"a later SEND held back", func() {
			w.b = w.b[:0]
			if !c.heldBack(&w, held, 6) {
				t.Fatal("a later SEND of the held conversation went through")
			}
		}},
		{"the retry of the refused cmid", func() {
			if c.heldBack(&w, held, 5) {
				t.Fatal("the retry was held back")
			}
			c.holdBack(&w, held, 5, protocol.CodeRateLimited, LimitSends, 100)
		}},
	} {
		if a := testing.AllocsPerRun(100, tc.send); a != 0 {
			t.Errorf("%s: heldBack allocates %v times", tc.name, a)
		}
	}
}
