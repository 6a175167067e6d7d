package router

import (
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
	"github.com/parley-im/parley/storage"
)

// calls records the node frames a router sends.
type calls struct {
	mu     sync.Mutex
	frames []*pb.NodeFrame
	to     []uint32
}

func (c *calls) send(to uint32, b []byte) error {
	var f pb.NodeFrame
	if err := proto.Unmarshal(b, &f); err != nil {
		return err
	}
	c.mu.Lock()
	c.frames, c.to = append(c.frames, &f), append(c.to, to)
	c.mu.Unlock()
	return nil
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
// does not serve its shard, or that has not attached its shards yet, is
// answered OVERLOADED on its connection on the sending node, so its
// client retries instead of waiting on a live connection for an answer
// that never comes (the chaos run's "never answered"); a request gets its
// rid answered, a Login is turned away, an ack is only dropped.
func TestDeliverRefusesWhatNoShardTakes(t *testing.T) {
	r := newRouter(t, 2)
	var c calls
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

	// Before the shards are attached.
	if err := r.Deliver(1, opFrame(t, send)); err == nil {
		t.Fatal("Deliver before Attach reported no error")
	}
	expectError("a SEND before the shards are attached", 0, 9)

	// A shard this node does not serve.
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
