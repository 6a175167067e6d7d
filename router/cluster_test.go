package router

import (
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
	"github.com/parley-im/parley/storage"
)

// calls records the node frames a router sends.
type calls struct {
	mu      sync.Mutex
	frames  []*pb.NodeFrame
	to      []uint32
	arrived chan struct{} // capacity 1: a frame was sent
}

func newCalls() *calls { return &calls{arrived: make(chan struct{}, 1)} }

func (c *calls) send(to uint32, b []byte) error {
	var f pb.NodeFrame
	if err := proto.Unmarshal(b, &f); err != nil {
		return err
	}
	c.mu.Lock()
	c.frames, c.to = append(c.frames, &f), append(c.to, to)
	c.mu.Unlock()
	select {
	case c.arrived <- struct{}{}:
	default:
	}
	return nil
}

// waitFor waits until n frames were sent, failing after a deadline.
func (c *calls) waitFor(t *testing.T, n int) {
	t.Helper()
	deadline := time.NewTimer(20 * time.Second)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		got := len(c.frames)
		c.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-c.arrived:
		case <-deadline.C:
			t.Fatalf("%d frames sent, want %d", got, n)
		}
	}
}

// take returns the frames sent so far and forgets them.
func (c *calls) take() ([]*pb.NodeFrame, []uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f, to := c.frames, c.to
	c.frames, c.to = nil, nil
	return f, to
}

// opFrame returns op as node 1 would send it over the link.
func opFrame(t *testing.T, op storage.Op) []byte {
	t.Helper()
	b, err := proto.Marshal(&pb.NodeFrame{Body: &pb.NodeFrame_Op{Op: storage.EncodeOp(&op)}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// userOn returns a user whose shard is id.
func userOn(r *Router, id uint16) uint64 {
	u := uint64(1000)
	for r.ShardOf(u) != id {
		u++
	}
	return u
}

// TestDeliverRefusesWhatNoShardTakes: a SEND that reaches a node that
// does not serve its shard is answered OVERLOADED on its connection on
// the sending node, so its client retries instead of waiting on a live
// connection for an answer that never comes (the chaos run's "never
// answered"); a request gets its rid answered, a Login is turned away, an
// ack is only dropped.
func TestDeliverRefusesWhatNoShardTakes(t *testing.T) {
	r := newRouter(t, 2)
	c := newCalls()
	r.AttachCluster(2, c.send)
	conn := storage.ConnRef{Node: 1, Gen: 3, ID: 7}
	elsewhere := userOn(r, 1)
	send := storage.Op{Kind: storage.OpSend, From: 5, FromDevice: 1, User: elsewhere, CMID: 9, Body: []byte("hi"), Conn: conn}

	expectError := func(what string, rid uint32, cmid uint64) {
		t.Helper()
		frames, to := c.take()
		if len(frames) != 1 || to[0] != 1 {
			t.Fatalf("%s: %d frames sent (to %v), want one call to node 1", what, len(frames), to)
		}
		call := frames[0].GetCall()
		if call == nil || call.GetMethod() != pb.Method_METHOD_REPLY || storage.CallRef(call) != conn {
			t.Fatalf("%s: sent %v, want a Reply to %+v", what, frames[0], conn)
		}
		f, _, _, err := codec.Parse(call.GetFrames(), protocol.MaxFrameBody)
		var e pb.Error
		if err == nil {
			err = codec.ParseProto(f.Body, &e)
		}
		if err != nil || f.Kind != protocol.KindError || e.Code != protocol.CodeOverloaded || e.Rid != rid || e.Cmid != cmid || e.RetryAfterMs == 0 {
			t.Fatalf("%s: answered %v %+v (%v), want OVERLOADED for rid %d cmid %d with a delay", what, f.Kind, &e, err, rid, cmid)
		}
	}

	shards := openShards(t, r, 2)
	if err := r.Attach([]*storage.Shard{shards[0], nil}); err != nil {
		t.Fatal(err)
	}
	if err := r.Deliver(1, opFrame(t, send)); err == nil {
		t.Fatal("Deliver of an op for a shard not served here reported no error")
	}
	expectError("a SEND for a shard not served here", 0, 9)
	_ = r.Deliver(1, opFrame(t, storage.Op{Kind: storage.OpDevices, User: elsewhere, RID: 4, Conn: conn}))
	expectError("a request for a shard not served here", 4, 0)
	_ = r.Deliver(1, opFrame(t, storage.Op{Kind: storage.OpLogin, User: elsewhere, Device: 1, Credential: make([]byte, protocol.CredentialLen), Conn: conn}))
	if frames, _ := c.take(); len(frames) != 1 || frames[0].GetCall().GetMethod() != pb.Method_METHOD_FAIL || frames[0].GetCall().GetCode() != protocol.CodeShuttingDown {
		t.Fatalf("a Login for a shard not served here: sent %v, want Fail(SHUTTING_DOWN)", frames)
	}
	_ = r.Deliver(1, opFrame(t, storage.Op{Kind: storage.OpAck, User: elsewhere, Device: 1, Seq: 3, Conn: conn}))
	if frames, _ := c.take(); len(frames) != 0 {
		t.Fatalf("an ack for a shard not served here: sent %v, want nothing", frames)
	}
}

// TestDeliverHoldsEarlyOps: ops that reach a node before it attached its
// shards (it restarted, and its peers resend at once) are neither dropped
// nor refused: they reach the shards in their order once attached.
func TestDeliverHoldsEarlyOps(t *testing.T) {
	r := newRouter(t, 2)
	c := newCalls()
	r.AttachCluster(2, c.send)
	conn := storage.ConnRef{Node: 1, Gen: 3, ID: 7}
	here := userOn(r, 0)
	for rid := uint32(1); rid <= 3; rid++ {
		if err := r.Deliver(1, opFrame(t, storage.Op{Kind: storage.OpDevices, User: here, RID: rid, Conn: conn})); err != nil {
			t.Fatalf("Deliver before Attach: %v", err)
		}
	}
	if frames, _ := c.take(); len(frames) != 0 {
		t.Fatalf("answers before Attach: %v", frames)
	}
	shards := openShards(t, r, 2)
	if err := r.Attach([]*storage.Shard{shards[0], nil}); err != nil {
		t.Fatal(err)
	}
	shards[0].Start()
	c.waitFor(t, 3)
	frames, _ := c.take()
	var rids []uint32
	for _, f := range frames {
		b, _, _, err := codec.Parse(f.GetCall().GetFrames(), protocol.MaxFrameBody)
		if err != nil {
			t.Fatal(err)
		}
		var m pb.Error // no such user: each is answered with an ERROR
		if b.Kind != protocol.KindError {
			t.Fatalf("answered %v, want ERROR", b.Kind)
		}
		if err := proto.Unmarshal(b.Body, &m); err != nil {
			t.Fatal(err)
		}
		rids = append(rids, m.Rid)
	}
	if want := []uint32{1, 2, 3}; !slices.Equal(rids, want) {
		t.Fatalf("answered rids %v, want %v", rids, want)
	}
}
