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

	s := newTypingSeen()
	s.now = func() time.Time { return now }
	if !s.started(5) || s.started(5) {
		t.Error("a spell of typing is shown once")
	}
	now = now.Add(typingShow + time.Second)
	if !s.started(5) {
		t.Error("typing after a silence of typingShow is shown again")
	}
	s.stopped(5)
	if !s.started(5) {
		t.Error("typing after STOPPED is shown again")
	}
}
