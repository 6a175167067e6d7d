package main

import (
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

// typingSeen decides when to tell the user that someone is typing: once
// per spell of typing, a spell ending with STOPPED, a message from them,
// or typingShow without a STARTED. Its methods are safe for concurrent
// use.
type typingSeen struct {
	now func() time.Time

	mu   sync.Mutex           // guards last
	last map[uint64]time.Time // user → last STARTED, while in a spell
}

func newTypingSeen() *typingSeen {
	return &typingSeen{now: time.Now, last: make(map[uint64]time.Time)}
}

// started records a STARTED from user and reports whether to show it.
func (s *typingSeen) started(user uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	last, ok := s.last[user]
	s.last[user] = now
	return !ok || now.Sub(last) > typingShow
}

// stopped ends user's spell.
func (s *typingSeen) stopped(user uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.last, user)
}
