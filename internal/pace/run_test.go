package pace

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/parley-im/parley/internal/clock"
)

// step is what the test sender does at its next Send.
type step struct {
	room  int           // writes it may make; 0: held back
	held  chan struct{} // with room 0: ready when the hold ends
	block time.Duration // its write blocks this long (the clock moves)
	more  bool
}

// sent is what one Send did.
type sent struct {
	writes []Write
	late   [][2]int64 // Late's calls during it
}

// testSender does at each Send the next step the test queued and reports
// what it took.
type testSender struct {
	clk   *clock.Manual
	steps chan step
	sends chan sent
	late  [][2]int64 // only Run's goroutine touches it
}

func (ts *testSender) Send(due *Due) (<-chan struct{}, bool) {
	st := <-ts.steps
	if st.room == 0 {
		ts.sends <- sent{}
		return st.held, true
	}
	ws := slices.Clone(due.Take(st.room))
	ts.clk.Advance(st.block)
	ts.sends <- sent{writes: ws, late: ts.late}
	ts.late = nil
	return nil, st.more
}

func (ts *testSender) Late(scheduled, actual int64) {
	ts.late = append(ts.late, [2]int64{scheduled, actual})
}

// TestRun walks one sender paced every 10 ms, its first write due at
// 5 ms, through the charging rule: a write on time counts from itself; a
// hold (no room, then room for part of the backlog) makes the writes due
// meanwhile count from their schedule until the sender catches up; a
// write that goes out late on the sender's own account counts from
// itself and is reported late; a write that blocks past the next one's
// time (backpressure) makes the next ones count from their schedule; and
// the sender stops when it has no more.
func TestRun(t *testing.T) {
	t0 := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	ms := func(n int) int64 { return t0.Add(time.Duration(n) * time.Millisecond).UnixNano() }
	clk := clock.NewManual(t0)
	ts := &testSender{clk: clk, steps: make(chan step, 1), sends: make(chan sent, 1)}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		Run(ctx, clk, New(t0.Add(5*time.Millisecond), 10*time.Millisecond), ts)
	}()
	timer := func(what string, want time.Duration) {
		t.Helper()
		if p, ok := clk.WaitPending(10*time.Second, func(p []time.Duration) bool { return len(p) > 0 }); !ok || len(p) != 1 || p[0] != want {
			t.Fatalf("%s: timers %v, want one of %v", what, p, want)
		}
	}
	next := func(what string, st step, want []Write, late [][2]int64) {
		t.Helper()
		ts.steps <- st
		var got sent
		select {
		case got = <-ts.sends:
		case <-ctx.Done():
			t.Fatalf("%s: timed out waiting for the Send", what)
		}
		if !slices.Equal(got.writes, want) || !slices.Equal(got.late, late) {
			t.Fatalf("%s: took %+v (late %v), want %+v (late %v)", what, got.writes, got.late, want, late)
		}
	}

	timer("before the first write", 5*time.Millisecond)
	clk.Advance(5 * time.Millisecond)
	next("the first write, on time", step{room: 10, more: true}, []Write{{From: ms(5), Scheduled: ms(5), At: ms(5)}}, nil)

	timer("after it", 10*time.Millisecond)
	held := make(chan struct{})
	clk.Advance(10 * time.Millisecond)
	next("at 15 ms, held back", step{held: held}, nil, nil)
	clk.Advance(25 * time.Millisecond) // 40 ms: 15, 25 and 35 are due
	close(held)
	next("room for 2 of the 3 due", step{room: 2, more: true},
		[]Write{{From: ms(15), Scheduled: ms(15), Held: true, At: ms(40)}, {From: ms(25), Scheduled: ms(25), Held: true, At: ms(40)}}, nil)
	next("the third, still behind", step{room: 10, more: true}, []Write{{From: ms(35), Scheduled: ms(35), Held: true, At: ms(40)}}, nil)

	timer("caught up", 5*time.Millisecond)
	clk.Advance(7 * time.Millisecond) // 47 ms: the write at 45 goes 2 ms late on its own
	next("a write late on the sender's account", step{room: 10, block: 20 * time.Millisecond, more: true},
		[]Write{{From: ms(47), Scheduled: ms(45), At: ms(47)}}, [][2]int64{{ms(45), ms(47)}})
	// The write blocked until 67 ms: 55 and 65 are due, the server's doing.
	next("after a write that blocked", step{room: 10, more: false},
		[]Write{{From: ms(55), Scheduled: ms(55), Held: true, At: ms(67)}, {From: ms(65), Scheduled: ms(65), Held: true, At: ms(67)}}, nil)
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("Run went on after the sender had no more")
	}
}

// countSender takes one write per Send until it has n, in order.
type countSender struct {
	n      int
	writes []Write
}

func (c *countSender) Send(due *Due) (<-chan struct{}, bool) {
	c.writes = append(c.writes, due.Take(1)...)
	return nil, len(c.writes) < c.n
}

func (c *countSender) Late(scheduled, actual int64) {}

// TestRunOnTheSystemClock paces on clock.System, whose waits reuse one
// timer (clock.TimerClock): every write is taken, in schedule order, and
// none before its time; and a wait allocates nothing (no timer and
// goroutine per wait, as AfterFunc would make).
func TestRunOnTheSystemClock(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	cs := &countSender{n: 5}
	Run(ctx, clock.System{}, New(start.Add(time.Millisecond), time.Millisecond), cs)
	if ctx.Err() != nil || len(cs.writes) != 5 {
		t.Fatalf("took %d writes (context %v), want 5", len(cs.writes), ctx.Err())
	}
	for i, w := range cs.writes {
		if want := start.Add(time.Duration(i+1) * time.Millisecond).UnixNano(); w.Scheduled != want || w.At < want {
			t.Fatalf("write %d: scheduled %d at %d, want scheduled %d and not before", i, w.Scheduled, w.At, want)
		}
	}
	if raceEnabled {
		return // the race detector's own allocations are counted too
	}
	allocs := func(n int) float64 {
		return testing.AllocsPerRun(2, func() {
			cs := &countSender{n: n, writes: make([]Write, 0, n)}
			Run(ctx, clock.System{}, New(time.Now().Add(2*time.Millisecond), 2*time.Millisecond), cs)
		})
	}
	if few, many := allocs(4), allocs(40); many > few+4 {
		t.Fatalf("36 more waits allocated %.0f times more, want none", many-few)
	}
}
