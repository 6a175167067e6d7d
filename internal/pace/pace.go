// Package pace schedules one sender's writes at a fixed rate for the load
// generators (loadtest, cmd/parley-peers) and says from when each write's
// latency counts.
//
// A write the server held back (the sender had no connection, or its
// in-flight window was full) is charged from its scheduled time: the
// server caused the wait, and leaving it out would be coordinated
// omission. A write that goes out after its time without being held back
// went late on the sender's own account — a timer under a millisecond
// fires about a millisecond late on an idle Go process, whose poller
// sleeps in whole milliseconds — and is charged from the write itself;
// that lateness is reported apart, never hidden.
//
// Run is the loop both generators run per sender: wait until a write is
// due, let the sender take what its window allows, and keep the charging
// rule above.
//
// Threading: a Schedule belongs to the one goroutine that sends, which
// runs Run with it.
package pace

import "time"

// Schedule is one sender's plan: a write every interval, or flat out.
type Schedule struct {
	next     time.Time     // the scheduled time of the next write
	interval time.Duration // 0: flat out, nothing scheduled
	held     bool          // the server held the sender back since its last write
}

// New returns a schedule of one write every interval (0: flat out) whose
// first write is due at first.
func New(first time.Time, interval time.Duration) *Schedule {
	return &Schedule{next: first, interval: interval}
}

// Wait returns how long from now until the next write is due; 0 when it
// is due or the schedule is flat out.
func (s *Schedule) Wait(now time.Time) time.Duration {
	if s.interval <= 0 || !s.next.After(now) {
		return 0
	}
	return s.next.Sub(now)
}

// Due returns how many writes are due at now, at most limit (flat out:
// limit).
func (s *Schedule) Due(now time.Time, limit int) int {
	if s.interval <= 0 {
		return limit
	}
	if s.next.After(now) {
		return 0
	}
	return min(limit, int(now.Sub(s.next)/s.interval)+1)
}

// Hold records that the server held the sender back: it had no
// connection, or its in-flight window was full. The writes due until the
// next Written are charged from their scheduled times.
func (s *Schedule) Hold() { s.held = true }

// Write is one write taken from a schedule.
type Write struct {
	// From is when the write's latency counts from (unix nanos): its
	// scheduled time if the server held the sender back, else the write.
	From int64
	// Scheduled is the write's scheduled time (unix nanos); 0 flat out.
	Scheduled int64
	// Held says the server held the sender back before this write.
	Held bool
	// At is when the write goes out (unix nanos): Take's now.
	At int64
}

// Late returns how late the write went out on the sender's own account
// at now: 0 when it was held back, flat out or on time.
func (w Write) Late(now int64) int64 {
	if w.Held || w.Scheduled == 0 {
		return 0
	}
	return max(0, now-w.Scheduled)
}

// Take takes the next write, going out at now (unix nanos).
func (s *Schedule) Take(now int64) Write {
	if s.interval <= 0 {
		return Write{From: now, At: now}
	}
	w := Write{From: now, Scheduled: s.next.UnixNano(), Held: s.held, At: now}
	s.next = s.next.Add(s.interval)
	if w.Held {
		w.From = w.Scheduled
	}
	return w
}

// Written marks the writes taken since the last call as written at now.
// The sender is no longer held back once it has caught up with its
// schedule: while writes that came due during a hold are still due (a
// window that gave back only part of its room), they stay charged from
// their scheduled times.
func (s *Schedule) Written(now time.Time) {
	if s.interval <= 0 || s.next.After(now) {
		s.held = false
	}
}
