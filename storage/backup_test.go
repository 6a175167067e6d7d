package storage_test

import (
	"testing"

	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/storage"
)

// TestPauseHoldsCycles: a send submitted while the shard is paused is in
// neither the checkpoint taken meanwhile nor answered before the resume;
// after it, it is answered and stored. The checkpoint opens as a shard
// whose Inspect shows the account as it was.
func TestPauseHoldsCycles(t *testing.T) {
	n := newNode(t, 1, nil)
	alice := n.register(t, "+15550000001")
	ep := n.login(t, alice, 0)
	n.send(t, alice, ep, alice.user, 1, "before the pause")
	s := n.shards[0]
	before, err := s.Inspect(alice.user, "")
	if err != nil || before.Head != 1 || len(before.Devices) != 1 {
		t.Fatalf("Inspect before: %+v, %v", before, err)
	}

	resume := s.Pause()
	n.submit(storage.Op{Kind: storage.OpSend, From: alice.user, FromDevice: alice.device, User: alice.user, CMID: 2, Body: []byte("while paused"), EP: ep})
	if err := s.Checkpoint("copy"); err != nil {
		resume()
		t.Fatal(err)
	}
	resume()
	ep.take(t, protocol.KindSent)
	if now, _ := s.Inspect(alice.user, ""); now.Head != 2 {
		t.Errorf("live head %d after the resume, want 2", now.Head)
	}

	c, err := storage.Open(storage.Config{ID: 0, Dir: "copy", FS: n.fs, Forwarder: n.router, Codes: n.codes, Now: n.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := c.Inspect(0, "+15550000001")
	if err != nil || got.User != alice.user || got.Head != 1 || got.Devices[0].Queued != got.Head-got.Devices[0].Cursor {
		t.Errorf("the checkpoint's account: %+v, %v; want user %d with head 1", got, err, alice.user)
	}
	if _, err := c.Inspect(0, "+15550000002"); err == nil {
		t.Error("Inspect of an unknown phone succeeded")
	}
}
