package main

import (
	"slices"
	"sync"
	"time"

	"github.com/parley-im/parley/protocol/pb"
)

// Typing indicators as spec [S-15-8] recommends: STARTED when the user
// starts a line and again every typingRefresh while it changes, STOPPED
// when the line is sent or cleared, or left alone for typingIdle. The
// other side shows "typing" for typingShow after the last STARTED.
const (
	typingRefresh = 4 * time.Second
	typingIdle    = 5 * time.Second
	typingShow    = 6 * time.Second
)

// typingNotifier turns edits of the line being typed into typing
// indicators, at most one STARTED per typingRefresh: far below the
// server's rate. Its methods are safe for concurrent use.
type typingNotifier struct {
	send func(pb.TypingState) // fire and forget
	now  func() time.Time

	mu      sync.Mutex // guards the fields below
	typing  bool
	started time.Time   // when the last STARTED went out
	idle    *time.Timer // sends STOPPED after typingIdle without an edit
	closed  bool
}

func newTypingNotifier(send func(pb.TypingState)) *typingNotifier {
	return &typingNotifier{send: send, now: time.Now}
}

// edited reports the line being typed after a change.
func (n *typingNotifier) edited(line string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return
	}
	if line == "" {
		n.stopLocked()
		return
	}
	now := n.now()
	if !n.typing || now.Sub(n.started) >= typingRefresh {
		n.typing, n.started = true, now
		n.send(pb.TypingState_TYPING_STARTED)
	}
	if n.idle == nil {
		n.idle = time.AfterFunc(typingIdle, n.idled)
	} else {
		n.idle.Reset(typingIdle)
	}
}

// idled runs when the user stopped typing without sending.
func (n *typingNotifier) idled() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.closed {
		n.stopLocked()
	}
}

func (n *typingNotifier) stopLocked() {
	if n.idle != nil {
		n.idle.Stop()
		n.idle = nil
	}
	if n.typing {
		n.typing = false
		n.send(pb.TypingState_TYPING_STOPPED)
	}
}

// close sends STOPPED if the user was typing, and nothing after.
func (n *typingNotifier) close() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.stopLocked()
	n.closed = true
}

// typingSeen keeps who is typing in the conversation. A spell of typing
// starts with STARTED and ends with STOPPED, a message from the typist,
// or typingShow without a STARTED (a STOPPED can be lost with the
// connection). Its methods are safe for concurrent use.
type typingSeen struct {
	after   func(time.Duration, func()) (stop func() bool) // time.AfterFunc; tests replace it
	expired func(user uint64)                              // called on a timer goroutine when a spell times out

	mu     sync.Mutex // guards spells and closed
	spells map[uint64]*spell
	closed bool
}

// spell is one user's current spell of typing.
type spell struct {
	gen  int         // counts STARTEDs, so a stale timer does nothing
	stop func() bool // the timeout's timer
}

func newTypingSeen(expired func(user uint64)) *typingSeen {
	return &typingSeen{
		after:   func(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop },
		expired: expired,
		spells:  make(map[uint64]*spell),
	}
}

// started records a STARTED from user and reports whether it begins a
// spell (and is to be shown).
func (s *typingSeen) started(user uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	sp, ok := s.spells[user]
	if ok {
		sp.stop()
	} else {
		sp = &spell{}
		s.spells[user] = sp
	}
	sp.gen++
	gen := sp.gen
	sp.stop = s.after(typingShow, func() { s.expire(user, gen) })
	return !ok
}

// expire ends user's spell if no STARTED came since the timer was set.
func (s *typingSeen) expire(user uint64, gen int) {
	s.mu.Lock()
	sp, ok := s.spells[user]
	if !ok || sp.gen != gen || s.closed {
		s.mu.Unlock()
		return
	}
	delete(s.spells, user)
	s.mu.Unlock()
	s.expired(user)
}

// stopped ends user's spell and reports whether there was one.
func (s *typingSeen) stopped(user uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	sp, ok := s.spells[user]
	if ok {
		sp.stop()
		delete(s.spells, user)
	}
	return ok
}

// typists returns the users in a spell, in order.
func (s *typingSeen) typists() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	users := make([]uint64, 0, len(s.spells))
	for u := range s.spells {
		users = append(users, u)
	}
	slices.Sort(users)
	return users
}

// close stops every timer; nothing is reported after it.
func (s *typingSeen) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for _, sp := range s.spells {
		sp.stop()
	}
	clear(s.spells)
}
