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

// self is the name this user's own messages are shown under.
const self = "me"

// message renders a message entry: its author, where it went when that
// is not where the chat is (here: the group the chat is in, or 0), and
// the body. A file is remembered for save-file, whose use is hinted by
// saveHint (its %d is the message's seq).
func (k *conn) message(ev client.Message, here uint64, saveHint string) string {
	from := k.names.of(ev.From)
	if ev.From == k.c.User() {
		from = self
	}
	switch {
	case ev.To != 0: // a copy of a message sent from another device
		from = self + " → " + k.names.of(ev.To)
	case ev.Group != 0 && ev.Group != here:
		k.learnGroup(ev.Group)
		from += " in " + k.groupName(ev.Group)
	}
	text := body(ev.Body, ev.Type)
	if ev.Type != pb.ContentType_CONTENT_TEXT {
		if ref, ok := parseFileRef(ev.Body); ok {
			k.rememberFile(ev.Seq, ev.Body)
			text = describeFile(ref, ev.Type) + " " + fmt.Sprintf(saveHint, ev.Seq)
		}
	}
	return fmt.Sprintf("[%s] %s: %s", k.con.when(ev.Time), from, text)
}

// groupEvent renders a change to a group, and keeps the group's name in
// the profile.
func (k *conn) groupEvent(ev client.GroupEvent) string {
	actor := k.names.of(ev.Actor)
	switch ev.Actor {
	case 0:
		actor = "Parley"
	case k.c.User():
		actor = self
	}
	who := k.memberList(ev.Members)
	if ev.Op != pb.GroupOp_GROUP_OP_CREATE && ev.Op != pb.GroupOp_GROUP_OP_RENAME {
		k.learnGroup(ev.Group)
	}
	group := k.groupName(ev.Group)
	var what string
	switch ev.Op {
	case pb.GroupOp_GROUP_OP_CREATE:
		k.rememberGroup(ev.Group, ev.Name)
		what = fmt.Sprintf("%s created the group %q", actor, sanitize(ev.Name))
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
		what = fmt.Sprintf("%s renamed %s to %q", actor, group, sanitize(ev.Name))
	case pb.GroupOp_GROUP_OP_SET_AVATAR:
		what = fmt.Sprintf("%s changed the picture of %s", actor, group)
	case pb.GroupOp_GROUP_OP_LEAVE:
		what = fmt.Sprintf("%s left %s", who, group)
	default:
		what = fmt.Sprintf("%s changed %s", actor, group)
	}
	return fmt.Sprintf("[%s] %s", k.con.when(ev.Time), what)
}

// memberList names users, this user as "me".
func (k *conn) memberList(users []uint64) string {
	s := make([]string, len(users))
	for i, u := range users {
		if u == k.c.User() {
			s[i] = self
		} else {
			s[i] = k.names.of(u)
		}
	}
	return strings.Join(s, ", ")
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
// members: d have received it, r read it.
func (c *console) groupMark(d, r, n int) string {
	switch {
	case n == 0 || d == 0 && r == 0:
		return c.mark(stateSent)
	case r > 0:
		return c.counted(stateRead, r, n)
	}
	return c.counted(stateDelivered, d, n)
}

func (c *console) counted(s msgState, k, n int) string {
	count := strconv.Itoa(k) + "/" + strconv.Itoa(n)
	if c.plain {
		return c.mark(s) + " " + count
	}
	return "✓✓ " + count + " " + c.mark(s)[len("✓✓ "):]
}
