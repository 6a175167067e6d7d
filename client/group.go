package client

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// Groups (spec.md section 16). Every method waits for the server's answer
// across reconnects, like MarkRead. The idempotent ones (AddGroupMembers,
// PromoteGroupMembers, DemoteGroupMembers, RenameGroup, SetGroupAvatar,
// Group, Groups) are written again after a reconnect; CreateGroup,
// RemoveGroupMembers and LeaveGroup are not, and fail with ErrNoAnswer
// when the connection is lost while they are unanswered. Refusals are
// *ServerErrors: NOT_MEMBER, NOT_ADMIN, GROUP_FULL, TOO_MANY_GROUPS,
// INVALID_ARGUMENT ([S-7-13], [S-7-14]).

// GroupInfo is a group's state as the server describes it (GROUP_INFO).
type GroupInfo struct {
	// ID is the group's id.
	ID uint64
	// Name is 1 to protocol.MaxGroupName bytes.
	Name string
	// Avatar is an opaque reference (a media id, say); nil when unset.
	Avatar []byte
	// Members are in the order they joined.
	Members []GroupMember
	// GSeq is the gseq of the group's last event or message.
	GSeq uint64
	// Refused lists, for CreateGroup and AddGroupMembers, the users that
	// were not added and why (NOT_FOUND, TOO_MANY_GROUPS, GROUP_FULL,
	// OVERLOADED); it is empty otherwise.
	Refused []GroupRefusal
	// Timer is the group's disappearing-message timer, 0 when off
	// ([S-18-8]).
	Timer time.Duration
}

// GroupMember is one member of a group.
type GroupMember struct {
	// User is the member's user id.
	User uint64
	// Role is ROLE_MEMBER or ROLE_ADMIN.
	Role pb.GroupRole
	// SinceGSeq is the gseq of the event that added the member.
	SinceGSeq uint64
}

// GroupRefusal is a user a group could not take, and why.
type GroupRefusal struct {
	// User is the user who was not added.
	User uint64
	// Code says why: NOT_FOUND, TOO_MANY_GROUPS, GROUP_FULL or OVERLOADED.
	Code protocol.Code
}

// Member returns user's membership, and false if user is not a member.
func (g *GroupInfo) Member(user uint64) (GroupMember, bool) {
	i := slices.IndexFunc(g.Members, func(m GroupMember) bool { return m.User == user })
	if i < 0 {
		return GroupMember{}, false
	}
	return g.Members[i], true
}

// Apply brings g up to date with event ev of the same group, as spec
// [S-16-5] describes: a client that fetched g applies the events that
// follow it, in order. It reports whether ev changed g: an event of
// another group, one already included (ev.GSeq ≤ g.GSeq) or one with an
// Op this version does not know changes nothing (the application may
// fetch the group again for the latter).
func (g *GroupInfo) Apply(ev GroupEvent) bool {
	if ev.Group != g.ID || ev.GSeq <= g.GSeq {
		return false
	}
	setRole := func(role pb.GroupRole) {
		for i := range g.Members {
			if slices.Contains(ev.Members, g.Members[i].User) {
				g.Members[i].Role = role
			}
		}
	}
	switch ev.Op {
	case pb.GroupOp_GROUP_OP_CREATE:
		g.Name, g.Avatar = ev.Name, bytes.Clone(ev.Avatar)
		g.Members = g.Members[:0]
		for _, u := range ev.Members {
			g.Members = append(g.Members, GroupMember{User: u, Role: pb.GroupRole_ROLE_ADMIN, SinceGSeq: ev.GSeq})
		}
	case pb.GroupOp_GROUP_OP_ADD:
		for _, u := range ev.Members {
			if _, ok := g.Member(u); !ok {
				g.Members = append(g.Members, GroupMember{User: u, Role: pb.GroupRole_ROLE_MEMBER, SinceGSeq: ev.GSeq})
			}
		}
	case pb.GroupOp_GROUP_OP_REMOVE, pb.GroupOp_GROUP_OP_LEAVE:
		g.Members = slices.DeleteFunc(g.Members, func(m GroupMember) bool { return slices.Contains(ev.Members, m.User) })
	case pb.GroupOp_GROUP_OP_PROMOTE:
		setRole(pb.GroupRole_ROLE_ADMIN)
	case pb.GroupOp_GROUP_OP_DEMOTE:
		setRole(pb.GroupRole_ROLE_MEMBER)
	case pb.GroupOp_GROUP_OP_RENAME:
		g.Name = ev.Name
	case pb.GroupOp_GROUP_OP_SET_AVATAR:
		g.Avatar = bytes.Clone(ev.Avatar)
	default:
		return false
	}
	g.GSeq = ev.GSeq
	return true
}

// groupInfo converts a GROUP_INFO body.
func groupInfo(m *pb.GroupInfo) GroupInfo {
	g := GroupInfo{ID: m.Group, Name: m.Name, Avatar: m.Avatar, GSeq: m.Gseq, Timer: time.Duration(m.TimerS) * time.Second}
	g.Members = make([]GroupMember, len(m.Members))
	for i, mm := range m.Members {
		g.Members[i] = GroupMember{User: mm.User, Role: mm.Role, SinceGSeq: mm.SinceGseq}
	}
	for _, r := range m.Refused {
		g.Refused = append(g.Refused, GroupRefusal{User: r.User, Code: r.Code})
	}
	return g
}

// checkGroupName reports a name the server would refuse.
func checkGroupName(name string) error {
	if name == "" || len(name) > protocol.MaxGroupName || !utf8.ValidString(name) {
		return fmt.Errorf("%w: group name must be 1 to %d bytes of UTF-8", ErrInvalid, protocol.MaxGroupName)
	}
	return nil
}

func checkAvatar(avatar []byte) error {
	if len(avatar) > protocol.MaxAvatar {
		return fmt.Errorf("%w: group avatar of %d bytes exceeds %d", ErrInvalid, len(avatar), protocol.MaxAvatar)
	}
	return nil
}

// CreateGroup creates a group named name with this user as its admin and
// adds members ([S-16-2]); avatar may be nil. The answer lists in Refused
// the users that could not be added. It is not repeated after a lost
// connection (ErrNoAnswer): a repeat would create a second group.
func (c *Client) CreateGroup(ctx context.Context, name string, avatar []byte, members []uint64) (GroupInfo, error) {
	if err := checkGroupName(name); err != nil {
		return GroupInfo{}, err
	}
	if err := checkAvatar(avatar); err != nil {
		return GroupInfo{}, err
	}
	if len(members) >= protocol.MaxGroupMembers {
		return GroupInfo{}, fmt.Errorf("%w: %d members, at most %d besides the creator", ErrInvalid, len(members), protocol.MaxGroupMembers-1)
	}
	avatar, members = bytes.Clone(avatar), slices.Clone(members)
	m, err := doAs[*pb.GroupInfo](ctx, c, &request{kind: protocol.KindGroupCreate, once: true, body: func(rid uint32) proto.Message {
		return &pb.GroupCreate{Rid: rid, Name: name, Avatar: avatar, Members: members}
	}})
	if err != nil {
		return GroupInfo{}, err
	}
	return groupInfo(m), nil
}

// groupUpdate builds a GROUP_UPDATE request.
func groupUpdate(group uint64, op pb.GroupOp, users []uint64, name string, avatar []byte) *request {
	users, avatar = slices.Clone(users), bytes.Clone(avatar)
	return &request{kind: protocol.KindGroupUpdate, body: func(rid uint32) proto.Message {
		return &pb.GroupUpdate{Rid: rid, Group: group, Op: op, Members: users, Name: name, Avatar: avatar}
	}}
}

func checkMembers(group uint64, users []uint64) error {
	if group == 0 {
		return fmt.Errorf("%w: group 0", ErrInvalid)
	}
	if len(users) == 0 || len(users) > protocol.MaxGroupMembers {
		return fmt.Errorf("%w: %d users, want 1 to %d", ErrInvalid, len(users), protocol.MaxGroupMembers)
	}
	return nil
}

// AddGroupMembers adds users to group (admins only) and returns the
// group's state, whose Refused lists the users not added ([S-16-3]).
// Users already members are ignored.
func (c *Client) AddGroupMembers(ctx context.Context, group uint64, users []uint64) (GroupInfo, error) {
	if err := checkMembers(group, users); err != nil {
		return GroupInfo{}, err
	}
	m, err := doAs[*pb.GroupInfo](ctx, c, groupUpdate(group, pb.GroupOp_GROUP_OP_ADD, users, "", nil))
	if err != nil {
		return GroupInfo{}, err
	}
	return groupInfo(m), nil
}

// RemoveGroupMembers removes users from group (admins only). NOT_MEMBER
// if one of them is not a member; a user leaves with LeaveGroup instead.
// Not repeated after a lost connection (ErrNoAnswer).
func (c *Client) RemoveGroupMembers(ctx context.Context, group uint64, users []uint64) error {
	if err := checkMembers(group, users); err != nil {
		return err
	}
	r := groupUpdate(group, pb.GroupOp_GROUP_OP_REMOVE, users, "", nil)
	r.once = true
	_, err := doAs[*pb.Ok](ctx, c, r)
	return err
}

// PromoteGroupMembers makes users admins of group (admins only).
func (c *Client) PromoteGroupMembers(ctx context.Context, group uint64, users []uint64) error {
	if err := checkMembers(group, users); err != nil {
		return err
	}
	_, err := doAs[*pb.Ok](ctx, c, groupUpdate(group, pb.GroupOp_GROUP_OP_PROMOTE, users, "", nil))
	return err
}

// DemoteGroupMembers makes admins of group plain members (admins only);
// INVALID_ARGUMENT if that would leave the group without an admin
// ([S-16-4]).
func (c *Client) DemoteGroupMembers(ctx context.Context, group uint64, users []uint64) error {
	if err := checkMembers(group, users); err != nil {
		return err
	}
	_, err := doAs[*pb.Ok](ctx, c, groupUpdate(group, pb.GroupOp_GROUP_OP_DEMOTE, users, "", nil))
	return err
}

// RenameGroup sets group's name (any member).
func (c *Client) RenameGroup(ctx context.Context, group uint64, name string) error {
	if group == 0 {
		return fmt.Errorf("%w: group 0", ErrInvalid)
	}
	if err := checkGroupName(name); err != nil {
		return err
	}
	_, err := doAs[*pb.Ok](ctx, c, groupUpdate(group, pb.GroupOp_GROUP_OP_RENAME, nil, name, nil))
	return err
}

// SetGroupAvatar sets group's avatar reference (any member); nil removes
// it.
func (c *Client) SetGroupAvatar(ctx context.Context, group uint64, avatar []byte) error {
	if group == 0 {
		return fmt.Errorf("%w: group 0", ErrInvalid)
	}
	if err := checkAvatar(avatar); err != nil {
		return err
	}
	_, err := doAs[*pb.Ok](ctx, c, groupUpdate(group, pb.GroupOp_GROUP_OP_SET_AVATAR, nil, "", avatar))
	return err
}

// LeaveGroup takes this user out of group. When the last admin leaves,
// the server promotes the longest-standing member ([S-16-4]). Not
// repeated after a lost connection (ErrNoAnswer).
func (c *Client) LeaveGroup(ctx context.Context, group uint64) error {
	if group == 0 {
		return fmt.Errorf("%w: group 0", ErrInvalid)
	}
	r := groupUpdate(group, pb.GroupOp_GROUP_OP_LEAVE, nil, "", nil)
	r.once = true
	_, err := doAs[*pb.Ok](ctx, c, r)
	return err
}

// Group returns group's state (members only: NOT_MEMBER otherwise, also
// for a group that does not exist).
func (c *Client) Group(ctx context.Context, group uint64) (GroupInfo, error) {
	if group == 0 {
		return GroupInfo{}, fmt.Errorf("%w: group 0", ErrInvalid)
	}
	m, err := doAs[*pb.GroupInfo](ctx, c, &request{kind: protocol.KindGroupGet, body: func(rid uint32) proto.Message {
		return &pb.GroupGet{Rid: rid, Group: group}
	}})
	if err != nil {
		return GroupInfo{}, err
	}
	return groupInfo(m), nil
}

// Groups returns the ids of the groups this user belongs to: those whose
// CREATE or ADD event naming the user has reached its inbox ([S-16-7]).
func (c *Client) Groups(ctx context.Context) ([]uint64, error) {
	m, err := doAs[*pb.GroupListResult](ctx, c, &request{kind: protocol.KindGroupList, body: func(rid uint32) proto.Message {
		return &pb.GroupList{Rid: rid}
	}})
	if err != nil {
		return nil, err
	}
	return m.Groups, nil
}
