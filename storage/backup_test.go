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
	n.submit(storage.Op{Kind: storage.OpSend, From: alice.user, FromDevice: alice.device, User: alice.user, CMID: 2, Body: []byte("while paused"), Conn: ep.ref})
	if err := s.Checkpoint("copy"); err != nil {
		resume()
		t.Fatal(err)
	}
	resume()
	ep.take(t, protocol.KindSent)
	if now, _ := s.Inspect(alice.user, ""); now.Head != 2 {
		t.Errorf("live head %d after the resume, want 2", now.Head)
	}

	c, err := storage.Open(storage.Config{ID: 0, Dir: "copy", FS: n.fs, Forwarder: n.router, Conns: testConns, Codes: n.codes, Now: n.clock.Now})
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

// TestBacklogAcrossRestart: the backlog the actor keeps (appended less
// deleted) matches what a restarted shard counts in its database, and
// falls by what is acknowledged.
func TestBacklogAcrossRestart(t *testing.T) {
	n := newNode(t, 1, nil)
	alice, bob := n.register(t, "+15550000001"), n.register(t, "+15550000002")
	ep := n.login(t, alice, 0)
	for cmid := uint64(1); cmid <= 3; cmid++ {
		n.send(t, alice, ep, bob.user, cmid, "queued")
	}
	held := n.shards[0].Flow().Backlog
	if held < 3 {
		t.Fatalf("backlog %d after 3 messages to an offline user", held)
	}
	n.restart()
	if got := n.shards[0].Flow().Backlog; got != held {
		t.Errorf("backlog %d after a restart, %d before", got, held)
	}
	bep := n.login(t, bob, 0)
	msgs := bep.messages(t, 3)
	bep.take(t, protocol.KindSynced)
	n.ack(bob, bep, msgs[2].Seq)
	n.nothingMore(t, bob, bep)
	// Bob's 3 are deleted; his ack appends one delivered receipt for
	// alice, who has not acknowledged it.
	if got := n.shards[0].Flow().Backlog; got != held-3+1 {
		t.Errorf("backlog %d once bob acknowledged his 3, want %d", got, held-3+1)
	}
}
