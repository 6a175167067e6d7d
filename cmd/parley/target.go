package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/parley-im/parley/client"
	"github.com/parley-im/parley/protocol/pb"
)

// attrGroup keys a group's name in the profile: + group id.
const attrGroup = "group:"

// target is where a message goes: a user or a group.
type target struct {
	user, group uint64
	name        string // as the user knows it
}

// send sends body to t and waits for SENT.
func (t target) send(ctx context.Context, c *client.Client, body []byte, typ pb.ContentType) (client.Sent, error) {
	if t.group != 0 {
		return c.SendGroup(ctx, t.group, body, typ)
	}
	return c.Send(ctx, t.user, body, typ)
}

// sendAsync queues body for t; done gets the outcome.
func (t target) sendAsync(c *client.Client, body []byte, typ pb.ContentType, done func(client.Sent, error)) (uint64, error) {
	if t.group != 0 {
		return c.SendGroupAsync(t.group, body, typ, done)
	}
	return c.SendAsync(t.user, body, typ, done)
}

// typing tells t that this user is typing or has stopped.
func (t target) typing(c *client.Client, state pb.TypingState) {
	if t.group != 0 {
		_ = c.GroupTyping(t.group, state)
	} else {
		_ = c.Typing(t.user, state)
	}
}

// target resolves --to or --group (exactly one is set).
func (k *conn) target(to, group string) (target, error) {
	if group != "" {
		g, name, err := k.resolveGroup(group)
		return target{group: g, name: name}, err
	}
	rctx, cancel := k.call()
	defer cancel()
	u, name, err := k.resolve(rctx, to)
	return target{user: u, name: name}, err
}

// resolveGroup turns a group id or a name the profile knows into a group
// id and the name to show.
func (k *conn) resolveGroup(s string) (uint64, string, error) {
	if g, ok := parseUser(s); ok {
		return g, k.groupName(g), nil
	}
	var ids []uint64
	for key, name := range k.store.Attrs() {
		if id, ok := strings.CutPrefix(key, attrGroup); ok && name == s {
			if g, ok := parseUser(id); ok {
				ids = append(ids, g)
			}
		}
	}
	switch len(ids) {
	case 0:
		return 0, "", usagef("no group named %q in this profile: use its id (parley groups lists them)", s)
	case 1:
		return ids[0], "#" + sanitizeLine(s), nil
	}
	slices.Sort(ids)
	return 0, "", usagef("several groups are named %q (%s): use the id", s, joinUint(ids))
}

// groupName returns how group g is shown: "#" and its name as the
// profile knows it, so a group never reads like a person, or "group ID".
func (k *conn) groupName(g uint64) string {
	if name := k.store.Attr(attrGroup + strconv.FormatUint(g, 10)); name != "" {
		return "#" + sanitizeLine(name)
	}
	return "group " + strconv.FormatUint(g, 10)
}

// learnGroup asks the server for the name of a group the profile does
// not know yet (one this user was added to), so it can be shown.
func (k *conn) learnGroup(g uint64) {
	if k.store.Attr(attrGroup+strconv.FormatUint(g, 10)) != "" {
		return
	}
	k.mu.Lock()
	asked := k.asked[g]
	if k.asked == nil {
		k.asked = make(map[uint64]bool)
	}
	k.asked[g] = true
	k.mu.Unlock()
	if asked {
		return // once per command, whatever the answer
	}
	ctx, cancel := context.WithTimeout(k.ctx, learnGroupTimeout)
	defer cancel()
	if info, err := k.c.Group(ctx, g); err == nil {
		k.rememberGroup(g, info.Name)
	}
}

// learnGroupTimeout bounds learnGroup, which holds up the display.
const learnGroupTimeout = 5 * time.Second

// rememberGroup keeps a group's name in the profile.
func (k *conn) rememberGroup(g uint64, name string) {
	if name == "" || k.store.Attr(attrGroup+strconv.FormatUint(g, 10)) == name {
		return
	}
	if err := k.store.SetAttr(attrGroup+strconv.FormatUint(g, 10), name); err != nil {
		k.con.statusf("could not save the name of group %d: %v", g, err)
	}
}

// forgetGroup drops a group the user left.
func (k *conn) forgetGroup(g uint64) {
	_ = k.store.SetAttr(attrGroup+strconv.FormatUint(g, 10), "")
}

// resolveUsers turns user ids and phone numbers into user ids, looking up
// the numbers the profile does not know in one request.
func (k *conn) resolveUsers(ctx context.Context, args []string) ([]uint64, error) {
	users := make([]uint64, len(args))
	var unknown []string
	phones := make([]string, len(args))
	for i, a := range args {
		if u, ok := parseUser(a); ok {
			users[i] = u
			continue
		}
		p, err := normalisePhone(a)
		if err != nil {
			return nil, err
		}
		phones[i] = p
		if u, ok := parseUser(k.store.Attr(attrContact + p)); ok {
			users[i] = u
		} else if !slices.Contains(unknown, p) {
			unknown = append(unknown, p)
		}
	}
	if len(unknown) > 0 {
		contacts, err := k.c.Lookup(ctx, unknown)
		if err != nil {
			return nil, fmt.Errorf("looking up %s: %w", strings.Join(unknown, ", "), k.reason(err))
		}
		k.remember(contacts)
		found := make(map[string]uint64, len(contacts))
		for _, ct := range contacts {
			found[ct.Phone] = ct.User
		}
		for i, p := range phones {
			if users[i] != 0 {
				continue
			}
			if users[i] = found[p]; users[i] == 0 {
				return nil, fmt.Errorf("%s is not registered on this server", p)
			}
		}
	}
	return users, nil
}

func joinUint(ids []uint64) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = strconv.FormatUint(id, 10)
	}
	return strings.Join(s, ", ")
}
