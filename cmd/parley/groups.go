package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/parley-im/parley/client"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// cmdGroup runs "parley group SUBCOMMAND …".
func cmdGroup(ctx context.Context, args []string, e env) error {
	if len(args) == 0 {
		return usagef("group needs a subcommand: create, add, remove, promote, demote, leave or info")
	}
	sub := args[0]
	var o options
	fs := o.flags("group "+sub, e)
	pos, err := parse(fs, args[1:])
	if err != nil {
		return err
	}
	switch sub {
	case "create":
		if len(pos) < 1 || strings.TrimSpace(pos[0]) == "" {
			return usagef("group create needs a name: parley group create NAME +NUMBER...")
		}
		if len(pos[0]) > protocol.MaxGroupName {
			return usagef("group create: the name is longer than %d bytes", protocol.MaxGroupName)
		}
	case "add", "remove", "promote", "demote":
		if len(pos) < 2 {
			return usagef("group %s needs a group and members: parley group %s GROUP +NUMBER...", sub, sub)
		}
	case "leave", "info":
		if len(pos) != 1 {
			return usagef("group %s needs one group: parley group %s GROUP", sub, sub)
		}
	default:
		return usagef("unknown group subcommand %q: create, add, remove, promote, demote, leave or info", sub)
	}
	for _, a := range pos[1:] { // members: check the syntax before connecting
		if _, ok := parseUser(a); !ok {
			if _, err := normalisePhone(a); err != nil {
				return err
			}
		}
	}

	con := newConsole(e, o.plain)
	k, err := connect(ctx, &o, e, con, connectOptions{})
	if err != nil {
		return err
	}
	defer k.close()
	cctx, cancel := k.call()
	defer cancel()

	if sub == "create" {
		members, err := k.resolveUsers(cctx, pos[1:])
		if err != nil {
			return err
		}
		g, err := k.c.CreateGroup(cctx, pos[0], nil, members)
		if err != nil {
			return k.reason(err)
		}
		k.rememberGroup(g.ID, g.Name)
		con.printf("Created %s (group %d) with %d members.", k.groupName(g.ID), g.ID, len(g.Members))
		k.printRefused(g)
		return nil
	}
	group, name, err := k.resolveGroup(pos[0])
	if err != nil {
		return err
	}
	var members []uint64
	if len(pos) > 1 {
		if members, err = k.resolveUsers(cctx, pos[1:]); err != nil {
			return err
		}
	}
	switch sub {
	case "add":
		g, err := k.c.AddGroupMembers(cctx, group, members)
		if err != nil {
			return k.reason(err)
		}
		k.rememberGroup(g.ID, g.Name)
		con.printf("%s now has %d members.", k.groupName(g.ID), len(g.Members))
		k.printRefused(g)
	case "remove":
		err = k.c.RemoveGroupMembers(cctx, group, members)
		if err == nil {
			con.printf("Removed %s from %s.", k.people(members), name)
		}
	case "promote":
		err = k.c.PromoteGroupMembers(cctx, group, members)
		if err == nil {
			con.printf("%s: %s now admin.", name, k.people(members))
		}
	case "demote":
		err = k.c.DemoteGroupMembers(cctx, group, members)
		if err == nil {
			con.printf("%s: %s no longer admin.", name, k.people(members))
		}
	case "leave":
		err = k.c.LeaveGroup(cctx, group)
		if err == nil {
			k.forgetGroup(group)
			con.printf("You left %s.", name)
		}
	case "info":
		g, err := k.c.Group(cctx, group)
		if err != nil {
			return k.reason(err)
		}
		k.rememberGroup(g.ID, g.Name)
		k.printGroup(g)
	}
	if err != nil {
		return k.reason(err)
	}
	return nil
}

// cmdGroups lists the user's groups.
func cmdGroups(ctx context.Context, args []string, e env) error {
	var o options
	fs := o.flags("groups", e)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("groups: unexpected argument %q", pos[0])
	}
	con := newConsole(e, o.plain)
	k, err := connect(ctx, &o, e, con, connectOptions{})
	if err != nil {
		return err
	}
	defer k.close()
	cctx, cancel := k.call()
	defer cancel()
	ids, err := k.c.Groups(cctx)
	if err != nil {
		return k.reason(err)
	}
	if len(ids) == 0 {
		con.statusf("You are in no group; parley group create NAME +NUMBER... makes one.")
		return nil
	}
	// Ask for every group at once: the requests share the connection.
	infos := make([]client.GroupInfo, len(ids))
	errs := make(chan error, len(ids))
	for i, id := range ids {
		go func() {
			var err error
			infos[i], err = k.c.Group(cctx, id)
			errs <- err
		}()
	}
	var firstErr error
	for range ids {
		if err := <-errs; err != nil && firstErr == nil {
			firstErr = err
		}
	}
	if firstErr != nil {
		return k.reason(firstErr)
	}
	for _, g := range infos {
		k.rememberGroup(g.ID, g.Name)
		role := ""
		if m, _ := g.Member(k.c.User()); m.Role == pb.GroupRole_ROLE_ADMIN {
			role = ", admin"
		}
		con.printf("%d\t%s\t%d members%s", g.ID, k.groupName(g.ID), len(g.Members), role)
	}
	return nil
}

// printGroup shows a group's members and roles.
func (k *conn) printGroup(g client.GroupInfo) {
	k.con.printf("%s (group %d), %d members:", k.groupName(g.ID), g.ID, len(g.Members))
	for _, m := range g.Members {
		role := "member"
		if m.Role == pb.GroupRole_ROLE_ADMIN {
			role = "admin"
		}
		you := ""
		if m.User == k.c.User() {
			you = " (you)"
		}
		k.con.printf("  %s\t%s%s", k.names.of(m.User), role, you)
	}
}

// printRefused lists the users a create or add could not take.
func (k *conn) printRefused(g client.GroupInfo) {
	for _, r := range g.Refused {
		why := "refused (" + codeName(r.Code) + ")"
		switch r.Code {
		case protocol.CodeNotFound:
			why = "not registered"
		case protocol.CodeTooManyGroups:
			why = fmt.Sprintf("already in %d groups", protocol.MaxGroupsPerUser)
		case protocol.CodeGroupFull:
			why = fmt.Sprintf("the group is full (%d members)", protocol.MaxGroupMembers)
		case protocol.CodeOverloaded:
			why = "the server was busy: try adding again"
		}
		k.con.statusf("could not add %s: %s", k.names.of(r.User), why)
	}
}

// codeName returns an error code's name.
func codeName(c protocol.Code) string {
	if info, ok := protocol.LookupCode(c); ok {
		return info.Name
	}
	return c.String()
}
