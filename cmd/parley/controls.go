package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/parley-im/parley/client"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// The conversation controls (spec.md section 18) in the terminal: a reply
// is shown under a quote of the message it answers, an edit with the
// content it replaces and an "edited" mark, a reaction as a line under
// (after) its message with every reaction it has, a forward with
// "forwarded", a disappearing message with when it goes; deletions,
// blocks and timer changes as lines of their own. The terminal prints and
// never redraws, so the state of a message is shown again when it changes.

// maxRemembered bounds the messages kept for quotes, edits and reactions.
const maxRemembered = 1000

// remembered is what the terminal keeps of a message it showed.
type remembered struct {
	from      uint64
	text      string
	edited    bool
	expires   time.Time         // when a disappearing message goes; zero: never
	reactions map[uint64]string // user → emoji
}

// history is the messages shown lately, by id. Safe for concurrent use.
type history struct {
	mu      sync.Mutex
	byID    map[uint64]*remembered // guarded by mu
	order   []uint64               // guarded by mu: ids, oldest first
	revoked map[uint64]bool        // guarded by mu: deletions shown
}

// get returns message id, or nil.
func (h *history) get(id uint64) *remembered {
	h.mu.Lock()
	defer h.mu.Unlock()
	if r := h.byID[id]; r != nil {
		cp := *r
		cp.reactions = make(map[uint64]string, len(r.reactions))
		for u, e := range r.reactions {
			cp.reactions[u] = e
		}
		return &cp
	}
	return nil
}

// update applies fn to message id, remembering it first if new.
func (h *history) update(id, from uint64, fn func(r *remembered)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.byID == nil {
		h.byID, h.revoked = map[uint64]*remembered{}, map[uint64]bool{}
	}
	r := h.byID[id]
	if r == nil {
		r = &remembered{from: from, reactions: map[uint64]string{}}
		h.byID[id] = r
		h.order = append(h.order, id)
		if len(h.order) > maxRemembered {
			delete(h.byID, h.order[0])
			h.order = h.order[1:]
		}
	}
	fn(r)
}

// firstRevoke reports whether the deletion of id is news ([S-18-4]: the
// same id can come twice).
func (h *history) firstRevoke(id uint64) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.revoked == nil {
		h.byID, h.revoked = map[uint64]*remembered{}, map[uint64]bool{}
	}
	if h.revoked[id] {
		return false
	}
	h.revoked[id] = true
	if len(h.revoked) > maxRemembered {
		clear(h.revoked)
		h.revoked[id] = true
	}
	return true
}

// rememberSent keeps message id, text from user from, that this device sent
// and showed itself.
func (k *conn) rememberSent(id, from uint64, text string) {
	k.hist.update(id, from, func(r *remembered) {
		if !r.edited {
			r.from, r.text = from, text
		}
	})
}

// controlLine renders a reaction or an edit, which are not shown as
// messages of their own ([S-18-11]); ok is false for other messages.
// from names the sender as message does.
func (k *conn) controlLine(ev client.Message, from string) (line string, ok bool) {
	when := k.con.when(ev.Time)
	switch ev.Type {
	case pb.ContentType_CONTENT_REACTION:
		k.hist.update(ev.Ref, 0, func(r *remembered) {
			if len(ev.Body) == 0 {
				delete(r.reactions, ev.From)
			} else {
				r.reactions[ev.From] = sanitizeLine(string(ev.Body))
			}
		})
		target := k.hist.get(ev.Ref)
		what := "reacted " + sanitizeLine(string(ev.Body))
		if len(ev.Body) == 0 {
			what = "withdrew a reaction"
		}
		return fmt.Sprintf("[%s] %s %s to %s\n    ↳ %s", when, from, what, k.quoted(target), k.reactions(target)), true
	case pb.ContentType_CONTENT_EDIT:
		old := k.hist.get(ev.Ref)
		if old != nil && old.from != 0 && old.from != ev.From {
			return "", true // an edit of another's message is ignored ([S-18-11])
		}
		text := body(ev.Body, pb.ContentType_CONTENT_TEXT)
		k.hist.update(ev.Ref, ev.From, func(r *remembered) { r.text, r.edited = text, true })
		return fmt.Sprintf("[%s] %s: %s (edited; was %s)", when, from, text, k.quoted(old)), true
	}
	return "", false
}

// gone reports whether a disappearing message that expires at expires
// has: a client must not show it, even when it arrives late ([S-18-10]).
func (k *conn) gone(expires time.Time) bool {
	return !expires.IsZero() && !k.con.now().Before(expires)
}

// decorate adds to the text of message ev what the controls say of it:
// forwarded, when it disappears; and remembers it for quotes, edits and
// reactions.
func (k *conn) decorate(ev client.Message, text string) string {
	k.hist.update(ev.ID, ev.From, func(r *remembered) {
		if !r.edited {
			r.text = text
		}
		r.expires = ev.Expires
	})
	switch {
	case ev.Forwarded >= 5:
		text = "(forwarded many times) " + text
	case ev.Forwarded > 0:
		text = "(forwarded) " + text
	}
	if !ev.Expires.IsZero() {
		text += fmt.Sprintf(" (disappears %s)", k.con.when(ev.Expires))
	}
	return text
}

// quote returns the line shown above a reply: the message it answers
// ([S-18-11]); "" for a message that is no reply.
func (k *conn) quote(ev client.Message) string {
	if ev.Ref == 0 {
		return ""
	}
	return "  ┃ " + k.quoted(k.hist.get(ev.Ref))
}

// quoted names a remembered message: who wrote what.
func (k *conn) quoted(r *remembered) string {
	switch {
	case r == nil || r.text == "":
		return "a message not shown here"
	case k.gone(r.expires):
		return "a message that disappeared"
	}
	who := "someone"
	if r.from != 0 {
		who = k.person(r.from)
	}
	return fmt.Sprintf("%s: %q", who, preview(r.text))
}

// reactions lists a message's reactions: "👍 You · ❤ +15551234567".
func (k *conn) reactions(r *remembered) string {
	if r == nil || len(r.reactions) == 0 {
		return "no reactions"
	}
	users := make([]uint64, 0, len(r.reactions))
	for u := range r.reactions {
		users = append(users, u)
	}
	slices.Sort(users)
	parts := make([]string, len(users))
	for i, u := range users {
		parts[i] = r.reactions[u] + " " + k.person(u)
	}
	return strings.Join(parts, " · ")
}

// controlEvent renders the events of the conversation controls that are
// not messages: deletions, blocks and timers; ok is false for others and
// for a deletion already shown.
func (k *conn) controlEvent(ev client.Event) (line string, ok bool) {
	now := k.con.when(k.con.now())
	switch ev := ev.(type) {
	case client.Revoked:
		if !k.hist.firstRevoke(ev.ID) {
			return "", false
		}
		what := "a message"
		if r := k.hist.get(ev.ID); r != nil && r.from == ev.From && !k.gone(r.expires) {
			what = fmt.Sprintf("%q", preview(r.text))
		}
		return fmt.Sprintf("[%s] %s deleted %s%s", now, k.person(ev.From), what, k.where(ev.Group, ev.To)), true
	case client.Blocked:
		if ev.Blocked {
			return fmt.Sprintf("[%s] You blocked %s: their messages will not reach you", now, k.names.of(ev.User)), true
		}
		return fmt.Sprintf("[%s] You unblocked %s", now, k.names.of(ev.User)), true
	case client.TimerChanged:
		where := k.where(ev.Group, ev.Peer)
		if ev.Group == 0 && ev.Peer == ev.From && ev.From != k.c.User() {
			where = " with you" // the setter's conversation with this user
		}
		if ev.TTL == 0 {
			return fmt.Sprintf("[%s] %s turned off disappearing messages%s", k.con.when(ev.Time), k.person(ev.From), where), true
		}
		return fmt.Sprintf("[%s] %s set messages%s to disappear after %s", k.con.when(ev.Time), k.person(ev.From), where, timerText(ev.TTL)), true
	}
	return "", false
}

// where names a conversation inside a sentence: " in #group", " with
// +1555…", or "".
func (k *conn) where(group, peer uint64) string {
	switch {
	case group != 0:
		k.learnGroup(group)
		return " in " + k.groupName(group)
	case peer != 0 && peer != k.c.User():
		return " with " + k.names.of(peer)
	}
	return ""
}

// controlHelp is what /help adds in a chat.
const controlHelp = `  /react EMOJI      react to the last message you got here (/react alone withdraws it)
  /reply TEXT       reply to it, quoting it
  /forward +NUMBER  forward it to another user (or #GROUP)
  /edit TEXT        change the last message you sent here
  /delete           delete the last message you sent here, for everyone (within 48 hours)
  /timer DURATION   make new messages here disappear after DURATION (1h, 24h, 168h); /timer off
  /block, /unblock  block or unblock the other user of this chat
  /report [REASON]  report the other user and the last messages you got from them to the server's operator`

// lastIn is the last message a chat got from someone else.
type lastIn struct {
	id, from uint64
	typ      pb.ContentType
	body     []byte
	forwards uint32
	expires  time.Time // zero: never
}

// runControl runs a chat command of the conversation controls and
// reports whether name is one.
func (ch *chatCommands) runControl(name, rest string) bool {
	con, k, t, u := ch.k.con, ch.k, ch.t, ch.ui
	draft := client.Draft{To: t.user, Group: t.group}
	in, out := u.lastMessages()
	switch name {
	case "/react", "/reply", "/forward":
		if in.id == 0 {
			con.statusf("%s: no message here to answer yet", name)
			return true
		}
		switch name {
		case "/react":
			draft.Type, draft.Ref, draft.Body = pb.ContentType_CONTENT_REACTION, in.id, []byte(rest)
		case "/reply":
			if rest == "" {
				con.statusf("usage: /reply TEXT")
				return true
			}
			draft.Ref, draft.Body = in.id, []byte(rest)
		case "/forward":
			to, err := ch.forwardTarget(rest)
			if err != nil {
				con.statusf("usage: /forward +NUMBER or /forward #GROUP (%s)", describe(err))
				return true
			}
			draft = client.Draft{To: to.user, Group: to.group, Type: in.typ, Body: in.body, Forwarded: in.forwards + 1}
		}
	case "/edit", "/delete":
		if out == 0 {
			con.statusf("%s: you have sent nothing here yet", name)
			return true
		}
		if name == "/delete" {
			ch.background(func(ctx context.Context) {
				var err error
				if t.group != 0 {
					err = k.c.RevokeGroup(ctx, t.group, out)
				} else {
					err = k.c.Revoke(ctx, t.user, out)
				}
				if err != nil {
					con.statusf("could not delete it: %s", describe(err))
				} else {
					what := "your last message here"
					if r := k.hist.get(out); r != nil && r.text != "" {
						what = fmt.Sprintf("%q", preview(r.text))
					}
					con.statusf("deleted %s for everyone", what)
				}
			})
			return true
		}
		if rest == "" {
			con.statusf("usage: /edit TEXT")
			return true
		}
		draft.Type, draft.Ref, draft.Body = pb.ContentType_CONTENT_EDIT, out, []byte(rest)
	case "/timer":
		ttl, err := parseTimer(rest)
		if err != nil {
			con.statusf("usage: /timer DURATION (like 1h or 24h, at most %s) or /timer off", timerText(protocol.MaxTimer*time.Second))
			return true
		}
		ch.background(func(ctx context.Context) {
			if t.group != 0 {
				err = k.c.SetGroupTimer(ctx, t.group, ttl)
			} else {
				err = k.c.SetTimer(ctx, t.user, ttl)
			}
			switch {
			case err != nil:
				con.statusf("could not set the timer: %s", describe(err))
			case ttl == 0:
				con.statusf("disappearing messages are off here; messages sent before keep their timer")
			default:
				con.statusf("new messages here disappear %s after they are sent", timerText(ttl))
			}
		})
		return true
	case "/block", "/unblock":
		if t.user == 0 {
			con.statusf("%s works in a chat with one user", name)
			return true
		}
		ch.background(func(ctx context.Context) {
			var err error
			if name == "/block" {
				err = k.c.Block(ctx, t.user)
			} else {
				err = k.c.Unblock(ctx, t.user)
			}
			if err != nil {
				con.statusf("could not %s %s: %s", name[1:], t.name, describe(err))
			} else {
				con.statusf("%sed %s", name[1:], t.name)
			}
		})
		return true
	case "/report":
		msgs := u.reportable(in.from)
		if len(msgs) == 0 {
			con.statusf("/report: nothing from the other user here to report yet")
			return true
		}
		r := client.Report{User: msgs[0].from, Group: t.group, Reason: rest}
		for _, m := range msgs {
			r.Messages = append(r.Messages, client.ReportedMessage{ID: m.id, Type: m.typ, Body: m.body})
		}
		ch.background(func(ctx context.Context) {
			if err := k.c.Report(ctx, r); err != nil {
				con.statusf("could not report: %s", describe(err))
			} else {
				con.statusf("reported %s to the server's operator, with %d message(s)", k.names.of(r.User), len(r.Messages))
			}
		})
		return true
	default:
		return false
	}
	control := draft.Type == pb.ContentType_CONTENT_REACTION || draft.Type == pb.ContentType_CONTENT_EDIT || name == "/forward"
	m := u.addMessage(fmt.Sprintf("[%s] %s", strings.TrimPrefix(name, "/"), rest), control)
	if _, err := k.c.SendDraftAsync(draft, u.onSent(m)); err != nil {
		u.onSent(m)(client.Sent{}, err)
	}
	return true
}

// forwardTarget resolves /forward's argument.
func (ch *chatCommands) forwardTarget(arg string) (target, error) {
	if arg == "" {
		return target{}, fmt.Errorf("no recipient")
	}
	if g, ok := strings.CutPrefix(arg, "#"); ok {
		return ch.k.target("", g)
	}
	return ch.k.target(arg, "")
}

// timerText renders a disappearing-message timer: "1h", "90m", "7 days".
func timerText(d time.Duration) string {
	const day = 24 * time.Hour
	switch {
	case d == day:
		return "1 day"
	case d > day && d%day == 0:
		return strconv.FormatInt(int64(d/day), 10) + " days"
	}
	s := d.String() // "1h0m0s", "1h30m0s", "10m0s", "45s"
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// parseTimer reads /timer's argument: a duration, or "off".
func parseTimer(arg string) (time.Duration, error) {
	if arg == "off" {
		return 0, nil
	}
	d, err := time.ParseDuration(arg)
	if err != nil || d < time.Second || d > protocol.MaxTimer*time.Second {
		return 0, fmt.Errorf("bad timer %q", arg)
	}
	return d, nil
}
