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
// shard's node lost them; it hands each Login to logins.
type holdRouter struct{ logins chan storage.Op }

func (r *holdRouter) Submit(op storage.Op) error {
	if op.Kind == storage.OpLogin {
		r.logins <- op
	}
	return nil
}

func (r *holdRouter) ShardOf(uint64) uint16 { return 0 }

func (r *holdRouter) ShardOfPhone(string) uint16 { return 0 }

// TestCloseUsersClosesLoginsInFlight: a connection whose Login its
// user's shard has not answered waits for that answer, so CloseUsers
// (a cluster node's reaction to the loss of that shard's node, which may
// have taken the Login with it) closes it at once with the code given,
// instead of leaving the client waiting until the login timeout ([S-6-9]).
func TestCloseUsersClosesLoginsInFlight(t *testing.T) {
	r := &holdRouter{logins: make(chan storage.Op, 1)}
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
	nc, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	login, err := codec.AppendProto(nil, protocol.KindLogin, &pb.Login{Version: protocol.Version, User: 5, Device: 1, Credential: make([]byte, protocol.CredentialLen)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Write(login); err != nil {
		t.Fatal(err)
	}
	select {
	case <-r.logins:
	case <-time.After(30 * time.Second):
		t.Fatal("the Login never reached the router")
	}
	var asked []uint64
	n := s.CloseUsers(func(user uint64, waiting bool) bool {
		asked = append(asked, user)
		return user == 5 && waiting
	}, protocol.CodeShuttingDown)
	if n != 1 {
		t.Fatalf("CloseUsers closed %d connections (users asked about: %v), want the one logging in as user 5", n, asked)
	}
	_ = nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	f, err := codec.NewReader(nc, protocol.MaxFrameBody, nil).ReadFrame()
	if err != nil {
		t.Fatalf("no GOAWAY: %v", err)
	}
	var g pb.GoAway
	if f.Kind != protocol.KindGoAway || codec.ParseProto(f.Body, &g) != nil || g.Code != protocol.CodeShuttingDown {
		t.Fatalf("got %v %+v, want GOAWAY SHUTTING_DOWN", f.Kind, &g)
	}
}
