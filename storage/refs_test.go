package storage_test

import (
	"testing"

	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
	"github.com/parley-im/parley/storage"
)

// TestRefsStoredAndDeduplicated: a reaction's ref and a forward's count
// reach the recipient as sent ([S-18-11]), and are part of what a
// repeated cmid must match ([S-8-20]).
func TestRefsStoredAndDeduplicated(t *testing.T) {
	n := newNode(t, 1, nil)
	alice, bob := n.register(t, "+15550009001"), n.register(t, "+15550009002")
	aep, bep := n.login(t, alice, 0), n.login(t, bob, 0)
	react := storage.Op{Kind: storage.OpSend, From: alice.user, FromDevice: alice.device, User: bob.user, CMID: 1,
		Body: []byte("+1"), Type: pb.ContentType_CONTENT_REACTION, Ref: 77, Forwarded: 2, Conn: aep.ref}
	id := n.sendOnly(t, aep, react)
	if m := n.nextMessage(t, bob, bep); m.ID != id || m.Type != pb.ContentType_CONTENT_REACTION || m.Ref != 77 || m.Forwarded != 2 {
		t.Fatalf("bob got %+v", m)
	}
	if again := n.sendOnly(t, aep, react); again != id {
		t.Fatalf("retry answered %d, want %d", again, id)
	}
	other := react
	other.Ref = 78
	n.submit(other)
	if e := aep.take(t, protocol.KindError).(*pb.Error); e.Code != protocol.CodeCMIDReused {
		t.Fatalf("the cmid again with another ref: %v, want CMID_REUSED", e.Code)
	}
}
