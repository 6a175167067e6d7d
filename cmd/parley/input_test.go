package main

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/parley-im/parley/protocol/pb"
)

// TestLineEditor: lines from a pipe split at "\n"; on a raw terminal the
// editor handles backspace, Ctrl-U, Ctrl-W, escape sequences, characters
// split across reads, and Ctrl-D on an empty line.
func TestLineEditor(t *testing.T) {
	ed := &lineEditor{}
	var got []string
	for _, chunk := range []string{"hel", "lo\r\nwor", "ld\n", "\xc3", "\xa9\n"} {
		lines, eof := ed.feed([]byte(chunk))
		if eof {
			t.Fatal("eof from a pipe")
		}
		got = append(got, lines...)
	}
	if want := []string{"hello", "world", "é"}; !slices.Equal(got, want) {
		t.Errorf("pipe lines %q, want %q", got, want)
	}

	ed = &lineEditor{raw: true}
	got = nil
	for _, chunk := range []string{
		"helo\x7fl", "o\r", // backspace
		"junk\x15ok\r",              // Ctrl-U
		"one two\x17three\r",        // Ctrl-W
		"a\x1b[Db\x1bOAc\r",         // arrow keys ignored
		"caf\xc3", "\xa9\x01\x7f\r", // split UTF-8; a control key ignored; backspace removes é
		"x\x04\x7f", // Ctrl-D with text: ignored
	} {
		lines, eof := ed.feed([]byte(chunk))
		if eof {
			t.Fatalf("eof at %q", chunk)
		}
		got = append(got, lines...)
	}
	if want := []string{"hello", "ok", "one three", "abc", "caf"}; !slices.Equal(got, want) {
		t.Errorf("raw lines %q, want %q", got, want)
	}
	if _, eof := ed.feed([]byte{0x04}); !eof {
		t.Error("Ctrl-D on an empty line did not end the input")
	}
}

// TestTypingNotifier: STARTED when a line starts and again after
// typingRefresh of typing, STOPPED when it is sent or cleared, nothing
// else ([S-15-8]).
func TestTypingNotifier(t *testing.T) {
	var mu sync.Mutex
	var sent []pb.TypingState
	n := newTypingNotifier(func(s pb.TypingState) { mu.Lock(); sent = append(sent, s); mu.Unlock() })
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	n.now = func() time.Time { return now }
	for _, step := range []struct {
		after time.Duration
		line  string
	}{
		{0, "h"}, {time.Second, "he"}, {time.Second, "hel"}, // one STARTED
		{typingRefresh, "hell"}, // still typing: STARTED again
		{time.Second, ""},       // sent: STOPPED
		{time.Second, ""},       // nothing more
		{time.Second, "x"},      // a new line: STARTED
	} {
		now = now.Add(step.after)
		n.edited(step.line)
	}
	n.close() // leaving while typing: STOPPED
	n.edited("y")
	started, stopped := pb.TypingState_TYPING_STARTED, pb.TypingState_TYPING_STOPPED
	if want := []pb.TypingState{started, started, stopped, started, stopped}; !slices.Equal(sent, want) {
		t.Errorf("sent %v, want %v", sent, want)
	}

	// The other side: a spell ends with STOPPED, or typingShow after the
	// last STARTED (the timer is fired by hand).
	var expired []uint64
	s := newTypingSeen(func(u uint64) { expired = append(expired, u) })
	var fire []func() // the armed timers, in order
	s.after = func(d time.Duration, f func()) func() bool {
		if d != typingShow {
			t.Errorf("timer of %v, want %v", d, typingShow)
		}
		i := len(fire)
		fire = append(fire, f)
		return func() bool { fire[i] = func() {}; return true }
	}
	if !s.started(5) || s.started(5) {
		t.Error("a spell of typing is shown once")
	}
	fire[0]() // stopped by the second STARTED: nothing
	if len(expired) != 0 || !slices.Equal(s.typists(), []uint64{5}) {
		t.Errorf("a refreshed spell expired: %v, typists %v", expired, s.typists())
	}
	fire[1]()
	if !slices.Equal(expired, []uint64{5}) || len(s.typists()) != 0 {
		t.Errorf("typingShow after the last STARTED: expired %v, typists %v", expired, s.typists())
	}
	if !s.started(5) {
		t.Error("typing after a silence of typingShow is shown again")
	}
	if !s.stopped(5) || s.stopped(5) {
		t.Error("STOPPED ends the spell once")
	}
	if !s.started(5) {
		t.Error("typing after STOPPED is shown again")
	}
	s.close()
	for _, f := range fire {
		f()
	}
	if len(expired) != 1 {
		t.Errorf("expired after close: %v", expired)
	}
}
