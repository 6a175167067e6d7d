package storage_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
	"github.com/parley-im/parley/storage"
)

// TestFenceRefusesCycles: while a shard's fence is closed it commits
// nothing: a send is answered SHARD_UNAVAILABLE with a delay and stored
// nowhere, a login is turned away with SHUTTING_DOWN; once the fence
// opens the same send is stored. "Stored nowhere" is seen where a stored
// copy would be, not through the retry (a retry of a stored cmid is
// answered SENT with the stored id, and the recipient gets one message
// either way): no shard commits a batch while fenced, and a message
// alice sends on a new connection once the fence opens is the first
// bob gets (a stored refused SEND would be forwarded before it, in the
// order of alice's outbox).
func TestFenceRefusesCycles(t *testing.T) {
	n, closed := newFencedNode(t, 2)
	alice := n.register(t, n.phoneOn(t, 0, 21))
	bob := n.register(t, n.phoneOn(t, 1, 22))
	aep := n.login(t, alice, 0)

	closed.Store(true)
	var commits []uint64 // nothing is in flight: no shard commits from here
	for _, s := range n.shards {
		commits = append(commits, s.Stats().Commits)
	}
	if c, _ := n.sendResult(t, alice, aep, storage.Op{User: bob.user, CMID: 1, Body: []byte("fenced")}); c != protocol.CodeShardUnavailable {
		t.Fatalf("send while fenced: %v, want SHARD_UNAVAILABLE", c)
	}
	ep := newEndpoint(t)
	n.submit(storage.Op{Kind: storage.OpLogin, User: bob.user, Device: bob.device, Credential: bob.cred, Conn: ep.ref})
	ep.wait(t, "the fenced login's close", func(e *endpoint) bool { return e.isClosed })
	if ep.closed != protocol.CodeShuttingDown || ep.session != nil {
		t.Fatalf("login while fenced: closed %v, session %+v", ep.closed, ep.session)
	}
	var refused uint64
	for _, s := range n.shards {
		refused += s.FencedOps()
	}
	if refused != 2 {
		t.Fatalf("%d ops counted fenced, want 2", refused)
	}
	for i, s := range n.shards {
		if got := s.Stats().Commits; got != commits[i] {
			t.Fatalf("shard %d committed %d batches while fenced", i, got-commits[i])
		}
	}

	closed.Store(false)
	// Alice reconnects; the new connection has no barrier, so its fresh
	// cmid is stored at once, before she resends the refused one.
	aep = n.login(t, alice, 0)
	marker := n.send(t, alice, aep, bob.user, 2, "after the fence")
	c, id := n.sendResult(t, alice, aep, storage.Op{User: bob.user, CMID: 1, Body: []byte("fenced")})
	if c != 0 {
		t.Fatalf("send after the fence opened: %v", c)
	}
	bep := n.login(t, bob, 0)
	if msgs := n.drain(t, bob, bep); len(msgs) != 2 || msgs[0].ID != marker || msgs[1].ID != id {
		t.Fatalf("bob got %+v, want %d then %d: only the sends stored after the fence opened", msgs, marker, id)
	}
}

// TestFenceAnswersRequests: a request refused by a closed fence gets
// SHARD_UNAVAILABLE with its rid, and the SDK retries that code.
func TestFenceAnswersRequests(t *testing.T) {
	n, closed := newFencedNode(t, 1)
	alice := n.register(t, n.phoneOn(t, 0, 23))
	aep := n.login(t, alice, 0)
	closed.Store(true)
	n.submit(storage.Op{Kind: storage.OpGroupList, User: alice.user, RID: 7, Conn: aep.ref})
	e := aep.take(t, protocol.KindError).(*pb.Error)
	if e.Code != protocol.CodeShardUnavailable || e.Rid != 7 || e.RetryAfterMs == 0 {
		t.Fatalf("group list while fenced: %+v", e)
	}
}

// TestEpochRecorded: a shard records the placement epoch it was opened
// under and refuses to open under an older one.
func TestEpochRecorded(t *testing.T) {
	fs := vfs.NewMem()
	open := func(epoch uint64) error {
		s, err := storage.Open(storage.Config{ID: 0, Dir: "s", FS: fs, Forwarder: nopForwarder{}, Conns: testConns, Codes: &codeBox{}, Epoch: epoch})
		if err != nil {
			return err
		}
		if s.Epoch() != epoch {
			t.Errorf("Epoch() = %d, want %d", s.Epoch(), epoch)
		}
		return s.Close()
	}
	for i, step := range []struct {
		epoch uint64
		stale bool
	}{{5, false}, {5, false}, {0, false}, {3, true}, {7, false}, {5, true}} {
		err := open(step.epoch)
		if step.stale != errors.Is(err, storage.ErrStaleEpoch) || (!step.stale && err != nil) {
			t.Fatalf("step %d: open under epoch %d: %v (stale expected: %v)", i, step.epoch, err, step.stale)
		}
	}
}

type nopForwarder struct{}

func (nopForwarder) ShardOf(uint64) uint16 { return 0 }
func (nopForwarder) Forward(op storage.Op) { panic(fmt.Sprintf("forward %v", op.Kind)) }
