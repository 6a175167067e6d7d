package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/parley-im/parley/client"
	"github.com/parley-im/parley/protocol/pb"
)

// How listen and chat show the inbox.

// conversation is what a chat shows: the messages exchanged with one
// user (peer), or those of one group. The zero conversation is listen's,
// which shows everything as it comes.
type conversation struct{ peer, group uint64 }

// holds reports whether message ev, received by user me, belongs to c.
func (c conversation) holds(ev client.Message, me uint64) bool {
	switch {
	case c.group != 0:
		return ev.Group == c.group
	case c.peer != 0:
		if ev.Group != 0 {
			return false
		}
		if ev.From == me && ev.To != 0 { // a copy of what this user sent from another device
			return ev.To == c.peer
		}
		return ev.From == c.peer
	}
	return true
}

// person names user u at the start of a sentence: "You" for this user,
// else the phone number the profile knows, else "user ID".
func (k *conn) person(u uint64) string {
	if u == k.c.User() {
		return "You"
	}
	return k.names.of(u)
}

// people names users inside a sentence, this user as "you".
func (k *conn) people(users []uint64) string {
	s := make([]string, len(users))
	for i, u := range users {
		if u == k.c.User() {
			s[i] = "you"
		} else {
			s[i] = k.names.of(u)
		}
	}
	return strings.Join(s, ", ")
}

// message renders a message entry: its author, where it went, and the
// body. Shown in a chat (here), a message of another conversation says
// so, so it is never taken for one of the chat's. A file is remembered
// for save-file, whose use is hinted by saveHint (its %d is the
// message's seq). A disappearing message that has expired renders as "".
func (k *conn) message(ev client.Message, here conversation, saveHint string) string {
	if k.gone(ev.Expires) {
		return "" // it disappeared before it arrived ([S-18-10])
	}
	from := k.person(ev.From)
	if ev.To != 0 { // a copy of a message sent from another device
		from += " → " + k.names.of(ev.To)
	}
	if ev.Group != 0 && ev.Group != here.group {
		k.learnGroup(ev.Group)
		from += " in " + k.groupName(ev.Group)
	}
	if !here.holds(ev, k.c.User()) {
		if ev.Group == 0 && ev.To == 0 {
			from += " (private message, not in this chat)"
		} else {
			from += " (not in this chat)"
		}
	}
	if line, ok := k.controlLine(ev, from); ok {
		return line // a reaction or an edit (controls.go)
	}
	text := body(ev.Body, ev.Type)
	switch {
	case ev.DecryptErr != nil:
		return fmt.Sprintf("[%s] %s: [a message this device could not decrypt]", k.con.when(ev.Time), from)
	case !ev.Secure && k.c.Encrypted():
		text += " [not end-to-end encrypted]"
	}
	if ev.Type != pb.ContentType_CONTENT_TEXT {
		if ref, ok := parseFileRef(ev.Body); ok {
			k.rememberFile(ev.Seq, ev.Body)
			text = describeFile(ref, ev.Type) + " " + fmt.Sprintf(saveHint, ev.Seq)
		}
	}
	line := fmt.Sprintf("[%s] %s: %s", k.con.when(ev.Time), from, k.decorate(ev, text))
	if q := k.quote(ev); q != "" {
		line = q + "\n" + line // a reply under its quote
	}
	return line
}

// groupEvent renders a change to a group, and keeps the group's name in
// the profile.
func (k *conn) groupEvent(ev client.GroupEvent) string {
	actor := k.person(ev.Actor)
	if ev.Actor == 0 {
		actor = "Parley"
	}
	who := k.people(ev.Members)
	if ev.Op != pb.GroupOp_GROUP_OP_CREATE && ev.Op != pb.GroupOp_GROUP_OP_RENAME {
		k.learnGroup(ev.Group)
	}
	group := k.groupName(ev.Group)
	var what string
	switch ev.Op {
	case pb.GroupOp_GROUP_OP_CREATE:
		k.rememberGroup(ev.Group, ev.Name)
		what = fmt.Sprintf("%s created %s", actor, k.groupName(ev.Group)) // the members come with the ADD that follows ([S-16-1])
	case pb.GroupOp_GROUP_OP_ADD:
		what = fmt.Sprintf("%s added %s to %s", actor, who, group)
	case pb.GroupOp_GROUP_OP_REMOVE:
		what = fmt.Sprintf("%s removed %s from %s", actor, who, group)
	case pb.GroupOp_GROUP_OP_PROMOTE:
		what = fmt.Sprintf("%s made %s admin of %s", actor, who, group)
	case pb.GroupOp_GROUP_OP_DEMOTE:
		what = fmt.Sprintf("%s made %s a plain member of %s", actor, who, group)
	case pb.GroupOp_GROUP_OP_RENAME:
		k.rememberGroup(ev.Group, ev.Name)
		what = fmt.Sprintf("%s renamed %s to %s", actor, group, k.groupName(ev.Group))
	case pb.GroupOp_GROUP_OP_SET_AVATAR:
		what = fmt.Sprintf("%s changed the picture of %s", actor, group)
	case pb.GroupOp_GROUP_OP_LEAVE:
		what = fmt.Sprintf("%s left %s", k.person(firstOr(ev.Members, ev.Actor)), group)
	default:
		what = fmt.Sprintf("%s changed %s", actor, group)
	}
	return fmt.Sprintf("[%s] %s", k.con.when(ev.Time), what)
}

// firstOr returns the first of users, or def if there is none.
func firstOr(users []uint64, def uint64) uint64 {
	if len(users) > 0 {
		return users[0]
	}
	return def
}

// presence renders a contact's presence.
func (k *conn) presence(p client.Presence) string {
	name := k.names.of(p.User)
	switch {
	case p.Online:
		return name + " is online"
	case !p.LastSeen.IsZero():
		return name + " was last seen " + lastSeen(k.con.now(), p.LastSeen)
	}
	return name + " is offline"
}

// lastSeen says when, relative to now: "at 15:04", "yesterday at 15:04",
// "on Jan 2 at 15:04".
func lastSeen(now, t time.Time) string {
	now, t = now.Local(), t.Local()
	y1, m1, d1 := now.Date()
	y2, m2, d2 := t.Date()
	switch {
	case y1 == y2 && m1 == m2 && d1 == d2:
		return "today at " + t.Format("15:04")
	case now.AddDate(0, 0, -1).Format("2006-01-02") == t.Format("2006-01-02"):
		return "yesterday at " + t.Format("15:04")
	}
	return "on " + t.Format("Jan 2") + " at " + t.Format("15:04")
}

// groupMark renders the receipts of a message to a group of n other
// members: d have received it, r read it. "✓✓ 2/3 delivered, 1/3 read"
// says both counts, so every change of either is a line of its own.
func (c *console) groupMark(d, r, n int) string {
	d = max(d, r) // READ implies delivered
	switch {
	case n == 0 || d == 0:
		return c.mark(stateSent)
	case r == 0:
		return c.counted(stateDelivered, d, n)
	case r == n:
		return c.counted(stateRead, r, n)
	}
	if c.plain {
		return fmt.Sprintf("delivered %d/%d, read %d/%d", d, n, r, n)
	}
	return fmt.Sprintf("✓✓ %d/%d delivered, %d/%d read", d, n, r, n)
}

func (c *console) counted(s msgState, k, n int) string {
	count := strconv.Itoa(k) + "/" + strconv.Itoa(n)
	if c.plain {
		return c.mark(s) + " " + count
	}
	return "✓✓ " + count + " " + c.mark(s)[len("✓✓ "):]
}
