package storage_test

import (
	"testing"
	"time"

	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
	"github.com/parley-im/parley/storage"
)

// endpointOf returns a test endpoint whose ref names a connection of
// another node: node, its boot generation gen.
func endpointOf(t *testing.T, node, gen uint32) *endpoint {
	t.Helper()
	e := newEndpoint(t)
	testConns.m.Delete(e.ref)
	e.ref.Node, e.ref.Gen = node, gen
	testConns.m.Store(e.ref, e)
	t.Cleanup(func() { testConns.m.Delete(e.ref) })
	return e
}

// TestConnGone: OpConnGone for node 2 up to generation 1 ends the
// sessions of that node's generation-1 connections (their watchers see
// the user go offline) and closes them with SHUTTING_DOWN; a connection
// of the node's next generation keeps its session.
func TestConnGone(t *testing.T) {
	n := newNode(t, 1, nil)
	alice, bob, carol := n.register(t, "+15550009001"), n.register(t, "+15550009002"), n.register(t, "+15550009003")
	bep := n.login(t, bob, 0)
	n.submit(storage.Op{Kind: storage.OpWatch, User: alice.user, From: bob.user, Conn: bep.ref})
	bep.take(t, protocol.KindPresence) // offline

	old := endpointOf(t, 2, 1)
	n.submit(storage.Op{Kind: storage.OpLogin, User: alice.user, Device: alice.device, Credential: alice.cred, Conn: old.ref})
	old.wait(t, "alice's login", func(e *endpoint) bool { return e.session != nil })
	if p := bep.take(t, protocol.KindPresence).(*pb.Presence); !p.Online {
		t.Fatalf("after alice's login bob sees %v, want online", p)
	}
	fresh := endpointOf(t, 2, 2)
	n.submit(storage.Op{Kind: storage.OpLogin, User: carol.user, Device: carol.device, Credential: carol.cred, Conn: fresh.ref})
	fresh.wait(t, "carol's login", func(e *endpoint) bool { return e.session != nil })

	n.clock.Advance(2 * time.Second) // past the presence throttle
	n.submit(storage.Op{Kind: storage.OpConnGone, Conn: storage.ConnRef{Node: 2, Gen: 1}})
	old.wait(t, "the gone connection's close", func(e *endpoint) bool { return e.isClosed })
	if old.closed != protocol.CodeShuttingDown {
		t.Fatalf("gone connection closed with %v, want SHUTTING_DOWN", old.closed)
	}
	if p := bep.take(t, protocol.KindPresence).(*pb.Presence); p.Online {
		t.Fatalf("after the node's connections went, bob sees %v, want alice offline", p)
	}
	id := n.send(t, bob, bep, carol.user, 1, "still there")
	if msgs := fresh.messages(t, 1); msgs[0].ID != id || fresh.isClosed {
		t.Fatalf("carol, on the node's next generation, got %+v (closed %v)", msgs, fresh.isClosed)
	}
}
