package client

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// TestSubscribeAgainAfterReconnect checks [S-15-2]: subscriptions end
// with the connection, so the client subscribes to its last set again on
// every new connection, pipelined behind Login; PRESENCE frames become
// Presence events.
func TestSubscribeAgainAfterReconnect(t *testing.T) {
	srv := newFakeServer(t, false)
	c, fc := connected(t, srv, nil)
	ctx := context.Background()

	res := background(func() (struct{}, error) { return struct{}{}, c.Subscribe(ctx, []uint64{5, 6}) })
	var ps pb.PresenceSubscribe
	fc.expectProto(protocol.KindPresenceSubscribe, &ps)
	if !slices.Equal(ps.Users, []uint64{5, 6}) {
		t.Fatalf("PRESENCE_SUBSCRIBE %v", &ps)
	}
	fc.writeProto(protocol.KindPresence, &pb.Presence{User: 5, Online: true})
	fc.writeProto(protocol.KindOK, &pb.Ok{Rid: ps.Rid})
	fc.writeProto(protocol.KindPresence, &pb.Presence{User: 6, LastSeenMs: 1796321873402})
	if _, err := wait(t, res); err != nil {
		t.Fatal(err)
	}
	if p := waitFor[Presence](c); p.User != 5 || !p.Online || !p.LastSeen.IsZero() {
		t.Errorf("presence %+v", p)
	}
	if p := waitFor[Presence](c); p.User != 6 || p.Online || !p.LastSeen.Equal(time.UnixMilli(1796321873402)) {
		t.Errorf("presence %+v", p)
	}

	for round, want := range [][]uint64{{5, 6}, {7}} {
		if round == 1 {
			res := background(func() (struct{}, error) { return struct{}{}, c.Subscribe(ctx, []uint64{7}) })
			fc.expectProto(protocol.KindPresenceSubscribe, &ps)
			fc.writeProto(protocol.KindOK, &pb.Ok{Rid: ps.Rid})
			if _, err := wait(t, res); err != nil {
				t.Fatal(err)
			}
		}
		_ = fc.c.Close()
		fc = srv.accept(t)
		fc.expect(protocol.KindLogin)
		fc.expectProto(protocol.KindPresenceSubscribe, &ps)
		if !slices.Equal(ps.Users, want) {
			t.Fatalf("after reconnect %d: subscribed %v, want %v", round, ps.Users, want)
		}
		fc.writeProto(protocol.KindLoginOK, &pb.LoginOk{HeartbeatS: 30, Window: 16})
		fc.writeProto(protocol.KindOK, &pb.Ok{Rid: ps.Rid})
		waitFor[Connected](c)
	}

	// An empty set is sent once, and not again after a reconnect.
	res = background(func() (struct{}, error) { return struct{}{}, c.Subscribe(ctx, nil) })
	fc.expectProto(protocol.KindPresenceSubscribe, &ps)
	fc.writeProto(protocol.KindOK, &pb.Ok{Rid: ps.Rid})
	if _, err := wait(t, res); err != nil {
		t.Fatal(err)
	}
	_ = fc.c.Close()
	fc = srv.accept(t)
	fc.expect(protocol.KindLogin)
	fc.writeProto(protocol.KindLoginOK, &pb.LoginOk{HeartbeatS: 30, Window: 16})
	fc.writeProto(protocol.KindSynced, &pb.Synced{})
	waitFor[Synced](c)
	if err := c.Subscribe(ctx, make([]uint64, protocol.MaxPresenceSubscriptions+1)); !errors.Is(err, ErrInvalid) {
		t.Errorf("too many: %v", err)
	}
}

// TestSetPrivacy writes SET_PRIVACY and refuses values it does not know.
func TestSetPrivacy(t *testing.T) {
	srv := newFakeServer(t, false)
	c, fc := connected(t, srv, nil)
	res := background(func() (struct{}, error) {
		return struct{}{}, c.SetPrivacy(context.Background(), pb.Visibility_VISIBILITY_CONTACTS)
	})
	var sp pb.SetPrivacy
	fc.expectProto(protocol.KindSetPrivacy, &sp)
	if sp.Presence != pb.Visibility_VISIBILITY_CONTACTS {
		t.Fatalf("SET_PRIVACY %v", &sp)
	}
	fc.writeProto(protocol.KindOK, &pb.Ok{Rid: sp.Rid})
	if _, err := wait(t, res); err != nil {
		t.Fatal(err)
	}
	if err := c.SetPrivacy(context.Background(), 7); !errors.Is(err, ErrInvalid) {
		t.Errorf("unknown visibility: %v", err)
	}
}

// TestTypingStaysWithinRate drives the client's typing bucket with a
// manual clock: a burst goes out at once, the excess is held and only the
// latest state of each chat follows when the rate allows ([S-15-8]);
// IS_TYPING becomes an event, and an unknown state is ignored.
func TestTypingStaysWithinRate(t *testing.T) {
	srv := newFakeServer(t, false)
	clock := newManualClock()
	cfg := testConfig(srv)
	cfg.Clock = clock
	c := startClient(t, cfg, nil)
	fc := srv.accept(t)
	fc.login(16, 30, 0)
	waitFor[Connected](c)

	for range 10 {
		if err := c.Typing(5, pb.TypingState_TYPING_STARTED); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.GroupTyping(9, pb.TypingState_TYPING_STARTED); err != nil {
		t.Fatal(err)
	}
	if err := c.Typing(5, pb.TypingState_TYPING_STOPPED); err != nil {
		t.Fatal(err)
	}
	var ty pb.Typing
	for range typingBurst {
		fc.expectProto(protocol.KindTyping, &ty)
		if ty.To != 5 || ty.State != pb.TypingState_TYPING_STARTED {
			t.Fatalf("TYPING %v", &ty)
		}
	}
	// Two held: to 5 (now STOPPED) and group 9, one token each.
	for _, want := range []*pb.Typing{{To: 5, State: pb.TypingState_TYPING_STOPPED}, {Group: 9}} {
		clock.Advance(time.Second / typingRate)
		fc.expectProto(protocol.KindTyping, &ty)
		if ty.To != want.To || ty.Group != want.Group || ty.State != want.State {
			t.Fatalf("TYPING %v, want %v", &ty, want)
		}
	}
	if err := c.Typing(0, 0); !errors.Is(err, ErrInvalid) {
		t.Errorf("typing to 0: %v", err)
	}

	fc.writeProto(protocol.KindIsTyping, &pb.IsTyping{From: 5, State: 7})
	fc.writeProto(protocol.KindIsTyping, &pb.IsTyping{From: 5, Group: 9, State: pb.TypingState_TYPING_STOPPED})
	if ev := c.next().(IsTyping); ev.From != 5 || ev.Group != 9 || ev.State != pb.TypingState_TYPING_STOPPED {
		t.Errorf("IsTyping %+v", ev)
	}
}

// TestTypingDroppedWhileDisconnected: an indicator is not kept for a
// later connection.
func TestTypingDroppedWhileDisconnected(t *testing.T) {
	srv := newFakeServer(t, false)
	c := startClient(t, testConfig(srv), nil)
	fc := srv.accept(t)
	fc.expect(protocol.KindLogin)
	if err := c.Typing(5, pb.TypingState_TYPING_STARTED); err != nil {
		t.Fatal(err)
	}
	fc.writeProto(protocol.KindLoginOK, &pb.LoginOk{HeartbeatS: 30, Window: 16})
	waitFor[Connected](c)
	res := background(func() ([]uint64, error) { return c.Groups(context.Background()) })
	if f := fc.next(); f.Kind != protocol.KindGroupList {
		t.Fatalf("%v before the first request: typing from before the login was kept", f.Kind)
	}
	_ = res
}
