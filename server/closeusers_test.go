package server

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
	"github.com/parley-im/parley/storage"
)

// holdRouter takes every op and answers none, as a node whose link to a
// shard's node lost them; it hands each Login to logins. A user's shard is
// its id modulo 2.
type holdRouter struct{ logins chan storage.Op }

func (r *holdRouter) Submit(op storage.Op) error {
	if op.Kind == storage.OpLogin {
		r.logins <- op
	}
	return nil
}

func (r *holdRouter) ShardOf(u uint64) uint16 { return uint16(u % 2) }

func (r *holdRouter) ShardOfPhone(string) uint16 { return 0 }

// TestCloseUsersClosesLoginsInFlight: a connection whose Login its
// user's shard has not answered waits for that answer, so CloseUsers
// (a cluster node's reaction to the loss of that shard's node, which may
// have taken the Login with it) closes it at once with the code given,
// instead of leaving the client waiting until the login timeout ([S-6-9]).
// Two Logins are in flight, users 5 (shard 1) and 6 (shard 0), beside a
// connection that sent nothing: closing shard 1's users closes user 5's
// connection only, each in flight counted under its own user, and the
// silent connection is no one's.
func TestCloseUsersClosesLoginsInFlight(t *testing.T) {
	r := &holdRouter{logins: make(chan storage.Op, 2)}
	s, err := New(Config{Addr: "127.0.0.1:0", Plaintext: true, Router: r, Conns: NewRegistry(0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve() }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		if err := <-served; err != nil {
			t.Error(err)
		}
	}()
	dial := func() net.Conn {
		t.Helper()
		nc, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		return nc
	}
	loggingIn := func(user uint64) net.Conn {
		t.Helper()
		nc := dial()
		login, err := codec.AppendProto(nil, protocol.KindLogin, &pb.Login{Version: protocol.Version, User: user, Device: 1, Credential: make([]byte, protocol.CredentialLen)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := nc.Write(login); err != nil {
			t.Fatal(err)
		}
		select {
		case op := <-r.logins:
			if op.User != user {
				t.Fatalf("the router got a Login of user %d, want %d", op.User, user)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("user %d's Login never reached the router", user)
		}
		return nc
	}
	c5, c6 := loggingIn(5), loggingIn(6)
	dial() // connected, nothing sent
	for deadline := time.Now().Add(30 * time.Second); s.Stats().Accepted.Load() < 3; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the server accepted %d connections, want 3", s.Stats().Accepted.Load())
		}
	}
	first := func(nc net.Conn, what string) codec.Frame {
		t.Helper()
		_ = nc.SetReadDeadline(time.Now().Add(30 * time.Second))
		f, err := codec.NewReader(nc, protocol.MaxFrameBody, nil).ReadFrame()
		if err != nil {
			t.Fatalf("%s: no frame: %v", what, err)
		}
		return f
	}

	asked := map[uint64]bool{}
	n := s.CloseUsers(func(user uint64, waiting bool) bool {
		asked[user] = waiting
		return r.ShardOf(user) == 1 && waiting
	}, protocol.CodeShuttingDown)
	if n != 1 || len(asked) != 2 || !asked[5] || !asked[6] {
		t.Fatalf("CloseUsers closed %d connections, asked about %v (user: waiting), want 1 closed of users 5 and 6, both waiting", n, asked)
	}
	var g pb.GoAway
	if f := first(c5, "user 5"); f.Kind != protocol.KindGoAway || codec.ParseProto(f.Body, &g) != nil || g.Code != protocol.CodeShuttingDown {
		t.Fatalf("user 5, logging in on the lost shard: got %v %+v, want GOAWAY SHUTTING_DOWN", f.Kind, &g)
	}
	// User 6's connection is still open: the first frame it gets is the
	// ERROR of a second call that closes it with another code.
	if n := s.CloseUsers(func(user uint64, _ bool) bool { return user == 6 }, protocol.CodeSlowConsumer); n != 1 {
		t.Fatalf("the second CloseUsers closed %d connections, want user 6's", n)
	}
	var e pb.Error
	if f := first(c6, "user 6"); f.Kind != protocol.KindError || codec.ParseProto(f.Body, &e) != nil || e.Code != protocol.CodeSlowConsumer {
		t.Fatalf("user 6, logging in on a shard still served: got %v %+v, want ERROR SLOW_CONSUMER", f.Kind, &e)
	}
}
