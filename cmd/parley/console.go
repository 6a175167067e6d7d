package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/parley-im/parley/client"
	"github.com/parley-im/parley/protocol/pb"
)

// console writes lines to the terminal from several goroutines, one line
// at a time.
type console struct {
	mu    sync.Mutex // guards writes to out and err, and the fields below
	out   io.Writer
	err   io.Writer
	plain bool             // words instead of check marks
	now   func() time.Time // for formatting times

	// When the command edits the input line itself (a terminal in raw
	// mode), the line being typed stays at the bottom of the terminal:
	// every output line first clears it and then draws it again.
	edit   bool
	prompt string
	typed  string
	note   string // shown before the prompt, such as who is typing
}

func newConsole(e env, plain bool) *console {
	now := e.now
	if now == nil {
		now = time.Now
	}
	return &console{out: e.stdout, err: e.stderr, plain: plain, now: now}
}

// printf writes one line to standard output.
func (c *console) printf(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.clearLocked()
	fmt.Fprintf(c.out, format+"\n", args...)
	c.drawLocked()
}

// promptf writes a prompt, without a line break, to standard error.
func (c *console) promptf(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fmt.Fprintf(c.err, format, args...)
}

// statusf writes one line about the connection to standard error.
func (c *console) statusf(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.clearLocked()
	fmt.Fprintf(c.err, format+"\n", args...)
	c.drawLocked()
}

// startEditing keeps the line being typed, after prompt, at the bottom of
// the terminal (standard error) until stopEditing.
func (c *console) startEditing(prompt string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.edit, c.prompt, c.typed = true, prompt, ""
	c.drawLocked()
}

// stopEditing removes the line being typed from the terminal.
func (c *console) stopEditing() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.clearLocked()
	c.edit = false
}

// setNote shows note, in brackets, before the line being typed, or
// removes it when note is "". It reports false when the line being
// typed is not shown (the command does not edit it), so the caller can
// print the news as lines instead.
func (c *console) setNote(note string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.edit {
		return false
	}
	if note != c.note {
		c.clearLocked()
		c.note = note
		c.drawLocked()
	}
	return true
}

// editing shows line as the line being typed.
func (c *console) editing(line string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.edit && line != c.typed {
		c.clearLocked()
		c.typed = line
		c.drawLocked()
	}
}

// commit leaves a line the user finished typing on the terminal, as a
// terminal in line mode would.
func (c *console) commit(line string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.edit {
		return
	}
	c.clearLocked()
	fmt.Fprintf(c.err, "%s%s\n", c.prompt, sanitizeLine(line))
	c.typed = ""
	c.drawLocked()
}

// clearLocked erases the line being typed, if shown, leaving the cursor
// at the start of the empty line.
func (c *console) clearLocked() {
	if c.edit {
		io.WriteString(c.err, "\r\x1b[K")
	}
}

// drawLocked draws the prompt and the line being typed.
func (c *console) drawLocked() {
	if c.edit {
		note := ""
		if c.note != "" {
			note = "(" + c.note + ") "
		}
		io.WriteString(c.err, note+c.prompt+sanitizeLine(c.typed))
	}
}

// when formats t for a chat line: the time of day, with the date if it is
// not today.
func (c *console) when(t time.Time) string {
	t = t.Local()
	now := c.now().Local()
	if y, m, d := t.Date(); y == now.Year() && m == now.Month() && d == now.Day() {
		return t.Format("15:04:05")
	}
	return t.Format("Jan _2 15:04")
}

// msgState is what the user knows about a message they sent.
type msgState uint8

const (
	statePending msgState = iota
	stateSent
	stateDelivered
	stateRead
	stateFailed
)

// mark returns the mark of a state: ✓ sent, ✓✓ delivered, ✓✓ read, or the
// bare words in plain mode.
func (c *console) mark(s msgState) string {
	word := [...]string{"pending", "sent", "delivered", "read", "not sent"}[s]
	if c.plain {
		return word
	}
	switch s {
	case stateSent:
		return "✓ " + word
	case stateDelivered, stateRead:
		return "✓✓ " + word
	case stateFailed:
		return "✗ " + word
	}
	return word
}

// body renders a message body for the terminal. Text is shown with control
// and bidirectional-override characters replaced, so a message cannot move
// the cursor or disguise itself; other content is described.
func body(b []byte, typ pb.ContentType) string {
	if typ != pb.ContentType_CONTENT_TEXT {
		name := strings.ToLower(strings.TrimPrefix(typ.String(), "CONTENT_"))
		if _, known := pb.ContentType_name[int32(typ)]; !known {
			name = "content type " + strconv.Itoa(int(typ))
		}
		return fmt.Sprintf("[%s, %s]", name, size(int64(len(b))))
	}
	if !utf8.Valid(b) {
		return fmt.Sprintf("[%s, not text]", size(int64(len(b))))
	}
	return sanitize(string(b))
}

// sanitize replaces characters that would act on the terminal. Line breaks
// are kept, indented under the first line.
func sanitize(s string) string {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.Map(func(r rune) rune {
		switch {
		case r == '\n' || r == '\t':
			return r
		case unicode.IsControl(r), unicode.Is(unicode.Bidi_Control, r):
			return '\uFFFD'
		}
		return r
	}, s)
	return strings.ReplaceAll(s, "\n", "\n    ")
}

// sanitizeLine is sanitize for text on one terminal line: tabs and line
// breaks become spaces.
func sanitizeLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\t' {
			return ' '
		}
		return r
	}, sanitize(s))
}

// preview shortens a text for a status line.
func preview(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if utf8.RuneCountInString(s) > 40 {
		r := []rune(s)
		s = string(r[:39]) + "…"
	}
	return sanitize(s)
}

// size renders a byte count in IEC units, as the rest of Parley does:
// "1 byte", "900 bytes", "293.0 KiB" (300,000 bytes), "1.5 MiB".
func size(n int64) string {
	switch {
	case n == 1:
		return "1 byte"
	case n < 1024:
		return fmt.Sprintf("%d bytes", n)
	}
	v := float64(n) / 1024
	units := []string{"KiB", "MiB", "GiB", "TiB"}
	i := 0
	for ; i < len(units)-1 && v >= 1023.95; i++ { // 1023.95 would print as 1024.0
		v /= 1024
	}
	return fmt.Sprintf("%.1f %s", v, units[i])
}

// names maps user ids to what the user knows them by: the phone numbers
// found by lookups, kept in the profile. It is safe for concurrent use.
type names struct {
	mu sync.Mutex // guards m
	m  map[uint64]string
}

// namesOf reads the contacts cached in the profile.
func namesOf(st *client.FileStore) *names {
	n := &names{m: make(map[uint64]string)}
	for k, v := range st.Attrs() {
		if phone, ok := strings.CutPrefix(k, attrContact); ok {
			if u, ok := parseUser(v); ok {
				n.m[u] = phone
			}
		}
	}
	return n
}

// set records that user u has this phone number.
func (n *names) set(u uint64, phone string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.m[u] = phone
}

// of returns the name of user u.
func (n *names) of(u uint64) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if p, ok := n.m[u]; ok {
		return p
	}
	return "user " + strconv.FormatUint(u, 10)
}
