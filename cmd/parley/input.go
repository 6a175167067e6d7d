package main

import (
	"context"
	"io"
	"os"
	"unicode"
	"unicode/utf8"

	"github.com/parley-im/parley/protocol"
)

// What the user types in chat is read key by key where that is possible,
// so the other side can see that the user is typing ([S-15-8]): on a
// terminal (Linux) the command turns off the terminal's line editing and
// edits the line itself; from a pipe, bytes arrive as they are written.
// Either way the chat gets whole lines, and a callback whenever the line
// being typed changes.

// lineEditor turns the bytes the user types into lines. In raw mode it
// does the editing a terminal does in line mode: backspace, Ctrl-U,
// Ctrl-W, Ctrl-D on an empty line; escape sequences (arrow keys) are
// ignored. Otherwise a line ends at "\n", and "\r" is dropped.
type lineEditor struct {
	raw     bool
	buf     []rune
	size    int    // bytes in buf
	pending []byte // the start of a UTF-8 sequence cut by a read
	esc     int    // 0: none; 1: after ESC; 2: in a CSI sequence
}

// maxLine is the longest line kept: one byte over a message body, so
// the chat can tell the user the line was too long.
const maxLine = protocol.MaxMessageBody + 1

// feed takes bytes the user typed. It returns the lines they complete,
// and eof when the user asked to end the input (Ctrl-D on an empty line,
// raw mode).
func (ed *lineEditor) feed(p []byte) (lines []string, eof bool) {
	b := append(ed.pending, p...)
	ed.pending = nil
	for len(b) > 0 {
		if !utf8.FullRune(b) {
			ed.pending = append([]byte(nil), b...)
			break
		}
		r, n := utf8.DecodeRune(b)
		b = b[n:]
		if line, done, end := ed.key(r); end {
			return lines, true
		} else if done {
			lines = append(lines, line)
		}
	}
	return lines, false
}

// key applies one character.
func (ed *lineEditor) key(r rune) (line string, done, eof bool) {
	if !ed.raw {
		switch r {
		case '\n':
			return ed.take(), true, false
		case '\r':
		default:
			ed.insert(r)
		}
		return "", false, false
	}
	switch ed.esc {
	case 1:
		ed.esc = 0
		if r == '[' || r == 'O' {
			ed.esc = 2
		}
		return "", false, false
	case 2:
		if r >= 0x40 && r <= 0x7e {
			ed.esc = 0
		}
		return "", false, false
	}
	switch {
	case r == '\r' || r == '\n':
		return ed.take(), true, false
	case r == 0x7f || r == 0x08: // backspace
		if len(ed.buf) > 0 {
			ed.size -= utf8.RuneLen(ed.buf[len(ed.buf)-1])
			ed.buf = ed.buf[:len(ed.buf)-1]
		}
	case r == 0x15: // Ctrl-U
		ed.buf, ed.size = ed.buf[:0], 0
	case r == 0x17: // Ctrl-W: the word before the cursor
		for len(ed.buf) > 0 && ed.buf[len(ed.buf)-1] == ' ' {
			ed.buf, ed.size = ed.buf[:len(ed.buf)-1], ed.size-1
		}
		for len(ed.buf) > 0 && ed.buf[len(ed.buf)-1] != ' ' {
			ed.size -= utf8.RuneLen(ed.buf[len(ed.buf)-1])
			ed.buf = ed.buf[:len(ed.buf)-1]
		}
	case r == 0x04: // Ctrl-D
		if len(ed.buf) == 0 {
			return "", false, true
		}
	case r == 0x1b:
		ed.esc = 1
	case r == '\t' || unicode.IsPrint(r):
		ed.insert(r)
	}
	return "", false, false
}

func (ed *lineEditor) insert(r rune) {
	if n := utf8.RuneLen(r); n > 0 && ed.size+n <= maxLine {
		ed.buf = append(ed.buf, r)
		ed.size += n
	}
}

func (ed *lineEditor) take() string {
	s := string(ed.buf)
	ed.buf, ed.size = ed.buf[:0], 0
	return s
}

// line returns the line being typed.
func (ed *lineEditor) line() string { return string(ed.buf) }

// readInput reads the user's input on a goroutine of its own and returns
// the completed lines; the channel is closed at the end of the input.
// onEdit, if not nil, is called on that goroutine with the line being
// typed whenever it changes. On a terminal the terminal is put in raw
// mode and con shows the line being edited below the output; restore
// puts the terminal back. The goroutine ends with the input, or when ctx
// is done and its current read returns.
func readInput(ctx context.Context, e env, con *console, onEdit func(line string)) (lines <-chan string, restore func()) {
	ed := &lineEditor{}
	restore = func() {}
	if in, ok := e.stdin.(*os.File); ok && isTerminal(in.Fd()) {
		if out, ok := e.stderr.(*os.File); ok && isTerminal(out.Fd()) {
			if undo, err := makeRaw(in.Fd()); err == nil {
				ed.raw = true
				con.startEditing("> ")
				restore = func() {
					con.stopEditing()
					undo()
				}
			}
		}
	}
	ch := make(chan string)
	go func() {
		defer close(ch)
		buf := make([]byte, 4096)
		for {
			n, err := e.stdin.Read(buf)
			before := ed.line()
			got, eof := ed.feed(buf[:n])
			after := ed.line()
			if ed.raw {
				for _, l := range got {
					con.commit(l)
				}
				con.editing(after)
			}
			if onEdit != nil && (after != before || len(got) > 0) {
				onEdit(after)
			}
			for _, l := range got {
				select {
				case ch <- l:
				case <-ctx.Done():
					return
				}
			}
			if eof || err != nil {
				if err == io.EOF && !ed.raw && ed.line() != "" {
					select { // the last line, without a line break
					case ch <- ed.take():
					case <-ctx.Done():
					}
				}
				return
			}
		}
	}()
	return ch, restore
}
