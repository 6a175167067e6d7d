package pace

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/parley-im/parley/internal/clock"
)

// Sender is one sender as Run paces it: a load generator's connection.
type Sender interface {
	// Send makes the writes due. Unless the server holds the sender back
	// (it has no connection, or its in-flight window is full), it calls
	// due.Take once with how many writes it may make now, 1 or more, and
	// writes those Take returns, in order. Held back, it takes nothing and
	// returns a channel that is ready when the hold may have ended (a
	// connection up, an answer that freed room). It reports whether the
	// sender goes on (false: a count reached, or the connection failed
	// for good).
	Send(due *Due) (held <-chan struct{}, more bool)
	// Late records that a write scheduled at scheduled went out at
	// actual (unix nanos), late on the sender's own account
	// (Write.Late).
	Late(scheduled, actual int64)
}

// Due is the writes due at one moment, for Sender.Send to take.
type Due struct {
	s      *Schedule
	snd    Sender
	now    time.Time
	writes []Write // reused
}

// Take takes the writes due, at most limit, going out now, and tells the
// sender's Late of those late on its own account. The slice is valid
// until the next Send.
func (d *Due) Take(limit int) []Write {
	d.writes = d.writes[:0]
	actual := d.now.UnixNano()
	for range d.s.Due(d.now, limit) {
		w := d.s.Take(actual)
		if w.Late(actual) > 0 {
			d.snd.Late(w.Scheduled, actual)
		}
		d.writes = append(d.writes, w)
	}
	return d.writes
}

// Run paces snd by s on clk until ctx ends or snd has no more to send:
// it waits until a write is due, lets snd take what is due and its
// window allows, and charges the writes as the package doc says: a hold
// (snd held back, or its write blocked past the next write's time, the
// server's backpressure) makes the writes due meanwhile count from their
// scheduled times.
func Run(ctx context.Context, clk clock.Clock, s *Schedule, snd Sender) {
	due := &Due{s: s, snd: snd}
	sl := clock.NewSleeper(clk) // one timer for every wait on the system clock
	defer sl.Stop()
	for ctx.Err() == nil {
		now := clk.Now()
		if wait := s.Wait(now); wait > 0 {
			_ = sl.Sleep(ctx, wait) // ctx's end ends the loop
			continue
		}
		due.now = now
		held, more := snd.Send(due)
		if held != nil {
			s.Hold()
			select {
			case <-held:
			case <-ctx.Done():
			}
			continue
		}
		if !more {
			return
		}
		s.Written(now)
		if s.Wait(clk.Now()) == 0 {
			s.Hold() // the write blocked past the next one's time: the server's backpressure
		}
	}
}

// Until is Run on the system clock until end (or ctx's end) at interval
// (0: flat out), the first write at a random moment within the first
// interval, so that many senders started together spread over it: how
// the load generators run each sender.
func Until(ctx context.Context, end time.Time, interval time.Duration, snd Sender) {
	ctx, cancel := context.WithDeadline(ctx, end)
	defer cancel()
	first := time.Now()
	if interval > 0 {
		first = first.Add(rand.N(interval))
	}
	Run(ctx, clock.System{}, New(first, interval), snd)
}
