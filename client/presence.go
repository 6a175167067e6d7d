package client

import (
	"context"
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// Presence and typing (spec.md section 15).

// The client's typing bucket: the server lets 2 TYPING per second through
// with bursts of 5 and drops the rest silently ([S-15-8]); the client
// keeps one token in reserve for frames that reach the server closer
// together than they were written.
const (
	typingRate    = 2 // tokens per second
	typingBurst   = 4
	maxTypingHeld = 8 // chats with an indicator held back at once
)

// Subscribe makes users (at most protocol.MaxPresenceSubscriptions) the
// ones whose presence this client watches, replacing the previous set,
// and waits for the server's OK. The server also stores the list as the
// account's contacts, which VISIBILITY_CONTACTS lets see this user's
// presence ([S-15-2], [S-15-5]). A Presence event follows for each user
// that exists, then one per change. Subscriptions end with the
// connection; the client subscribes to the last set again after every
// reconnect, so Presence events follow each Connected. An empty list
// unsubscribes from everyone.
//
// If ctx ends first, Subscribe returns its error but the subscription
// still goes out.
func (c *Client) Subscribe(ctx context.Context, users []uint64) error {
	if len(users) > protocol.MaxPresenceSubscriptions {
		return fmt.Errorf("%w: subscription to %d users, at most %d", ErrInvalid, len(users), protocol.MaxPresenceSubscriptions)
	}
	set := slices.Clone(users)
	if set == nil {
		set = []uint64{}
	}
	r := c.subscribeRequest(set)
	r.state, r.reply = requestQueued, make(chan requestResult, 1)
	c.mu.Lock()
	if c.stopErr != nil {
		err := c.stopErr
		c.mu.Unlock()
		return err
	}
	c.subscribed = set
	c.requests = append(c.requests, r)
	if s := c.sess; s != nil {
		c.kickLocked(s)
	}
	c.mu.Unlock()
	m, err := c.await(ctx, r)
	if err != nil {
		return err
	}
	if _, ok := m.(*pb.Ok); !ok {
		return fmt.Errorf("%w: PRESENCE_SUBSCRIBE answered with %T", ErrProtocol, m)
	}
	return nil
}

// subscribeRequest returns a PRESENCE_SUBSCRIBE request for users that
// survives its caller.
func (c *Client) subscribeRequest(users []uint64) *request {
	return &request{kind: protocol.KindPresenceSubscribe, detach: true, body: func(rid uint32) proto.Message {
		return &pb.PresenceSubscribe{Rid: rid, Users: users}
	}}
}

// SetPrivacy sets who may see this user's presence: VISIBILITY_EVERYONE,
// VISIBILITY_CONTACTS (the users of the account's last subscription) or
// VISIBILITY_NOBODY ([S-15-5]). The setting belongs to the account.
func (c *Client) SetPrivacy(ctx context.Context, v pb.Visibility) error {
	if _, known := pb.Visibility_name[int32(v)]; !known {
		return fmt.Errorf("%w: visibility %d", ErrInvalid, v)
	}
	_, err := doAs[*pb.Ok](ctx, c, &request{kind: protocol.KindSetPrivacy, body: func(rid uint32) proto.Message {
		return &pb.SetPrivacy{Rid: rid, Presence: v}
	}})
	return err
}

// Typing tells user to that this user is typing (TYPING_STARTED) or has
// stopped (TYPING_STOPPED). It is fire and forget ([S-7-7]): nothing
// answers it, nothing stores it, and it is dropped when the client is not
// connected or the user has no device online. An application sends
// TYPING_STARTED when the user starts typing and again every few seconds
// while typing goes on, and TYPING_STOPPED when the user stops or sends
// ([S-15-8]).
//
// The server drops TYPING beyond 2 a second (bursts of 5) without a
// word; the client stays under that by holding an indicator back until
// the rate allows it, keeping only the latest for each chat, so a STOPPED
// is not lost behind a burst of STARTED. Typing never blocks; its error
// is ErrInvalid or the client's stop reason.
func (c *Client) Typing(to uint64, state pb.TypingState) error {
	if to == 0 {
		return fmt.Errorf("%w: typing to user 0", ErrInvalid)
	}
	return c.typing(&pb.Typing{To: to, State: state})
}

// GroupTyping is Typing in a group: the indicator goes to the members
// online, if this user is a member.
func (c *Client) GroupTyping(group uint64, state pb.TypingState) error {
	if group == 0 {
		return fmt.Errorf("%w: typing in group 0", ErrInvalid)
	}
	return c.typing(&pb.Typing{Group: group, State: state})
}

func (c *Client) typing(m *pb.Typing) error {
	if _, known := pb.TypingState_name[int32(m.State)]; !known {
		return fmt.Errorf("%w: typing state %d", ErrInvalid, m.State)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopErr != nil {
		return c.stopErr
	}
	s := c.sess
	if s == nil || s.closed || !s.loggedIn || s.goAway != nil {
		return nil // not connected: an indicator is not worth keeping
	}
	for i, h := range s.typingHeld {
		if h.To == m.To && h.Group == m.Group {
			s.typingHeld[i] = m // the latest state of a chat wins
			return nil
		}
	}
	now := c.cfg.Clock.Now()
	s.refillTypingLocked(now)
	switch {
	case len(s.typingHeld) == 0 && s.typingTokens >= 1:
		s.typingTokens--
		s.typingOut = append(s.typingOut, m)
		c.kickLocked(s)
	case len(s.typingHeld) < maxTypingHeld:
		s.typingHeld = append(s.typingHeld, m)
		c.armTypingLocked(s)
	default:
		c.log.Debug("client: typing indicator dropped", "to", m.To, "group", m.Group)
	}
	return nil
}

// refillTypingLocked adds the tokens earned since the last refill.
func (s *session) refillTypingLocked(now time.Time) {
	if d := now.Sub(s.typingAt); d > 0 {
		s.typingTokens = min(typingBurst, s.typingTokens+d.Seconds()*typingRate)
	}
	s.typingAt = now
}

// armTypingLocked arms the timer that releases held indicators when the
// bucket has a token again.
func (c *Client) armTypingLocked(s *session) {
	if s.typingTimer != nil || s.closed {
		return
	}
	wait := time.Duration((1 - s.typingTokens) / typingRate * float64(time.Second))
	s.typingTimer = c.cfg.Clock.AfterFunc(max(wait, time.Millisecond), func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		s.typingTimer = nil
		if s.closed {
			return
		}
		s.refillTypingLocked(c.cfg.Clock.Now())
		for len(s.typingHeld) > 0 && s.typingTokens >= 1 {
			s.typingTokens--
			s.typingOut = append(s.typingOut, s.typingHeld[0])
			s.typingHeld = s.typingHeld[1:]
		}
		if len(s.typingOut) > 0 {
			c.kickLocked(s)
		}
		if len(s.typingHeld) > 0 {
			c.armTypingLocked(s)
		}
	})
}
