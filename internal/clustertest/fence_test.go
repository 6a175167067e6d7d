package clustertest_test

import (
	"testing"
	"time"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/internal/clustertest"
	"github.com/parley-im/parley/internal/faultproxy"
	"github.com/parley-im/parley/internal/node"
	"github.com/parley-im/parley/internal/nodetest"
	"github.com/parley-im/parley/internal/wiretest"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// answer returns the next SENT, ERROR or GOAWAY on c, skipping entries;
// a closed connection counts as a GOAWAY.
func answer(t *testing.T, c *wiretest.Client) codec.Frame {
	t.Helper()
	for {
		f, err := c.Next(nodetest.Timeout)
		if err != nil {
			return codec.Frame{Kind: protocol.KindGoAway}
		}
		switch f.Kind {
		case protocol.KindSent, protocol.KindError, protocol.KindGoAway:
			return f
		}
	}
}

// TestStaleOwnerCannotCommit: node 3 is cut off from etcd while the
// other nodes and the links are fine. Once its own reckoning of its lease
// lapses (before etcd expires it), its shards commit nothing: a send to a
// user homed there, written to node 3 itself (its router hands it to the
// local shard), is answered SHARD_UNAVAILABLE and stored nowhere. When
// etcd is back, node 3 registers again, its fence reopens, and the
// identical resend is stored and delivered once.
func TestStaleOwnerCannotCommit(t *testing.T) {
	var proxy *faultproxy.Proxy
	c := clustertest.Start(t, 3, func(id uint32, cfg *node.Config) {
		if id != 3 {
			return
		}
		p, err := faultproxy.Listen("127.0.0.1:0", cfg.Cluster.Etcd[0][len("http://"):])
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Heal) // before the nodes stop: a node stops only once etcd answers
		proxy = p
		cfg.Cluster.Etcd = []string{"http://" + p.Addr()}
	})
	c.AfterStop(func() { _ = proxy.Close() })
	rec := nodetest.NewRecorder(t, c.Node(1))
	x := rec.Device(c.Register(t, 3, 1)) // homed on node 3, connected to node 1
	x.Via(c.Node(1))
	x.Connect()
	x.WaitSynced()
	y := c.Register(t, 1, 2) // homed on node 1; writes to node 3
	n3 := c.Node(3)
	yc := wiretest.Dial(t, n3.Addr().String(), n3.Fingerprint())
	yc.Login(y, 0)
	yc.SendText(x.User.ID, 1, "before")

	fenced := func() (ops, commits uint64) {
		for _, s := range c.Node(3).Shards() {
			ops += s.FencedOps()
			commits += s.Stats().Commits
		}
		return ops, commits
	}
	proxy.Partition(faultproxy.Both)
	// Send until node 3's fence closes: each send before that is stored
	// (SENT); the first one after it is refused.
	cmid := uint64(1)
	deadline := time.Now().Add(nodetest.Timeout)
	for {
		if time.Now().After(deadline) {
			t.Fatalf("node 3 still commits %v after it was cut off from etcd", nodetest.Timeout)
		}
		cmid++
		yc.Write(codec.AppendSend(nil, codec.Send{To: x.User.ID, CMID: cmid, Body: []byte("during")}))
		f := answer(t, yc)
		if f.Kind == protocol.KindSent {
			continue
		}
		var e pb.Error
		if err := codec.ParseProto(f.Body, &e); err != nil || e.Code != protocol.CodeShardUnavailable || e.Cmid != cmid {
			t.Fatalf("send while cut off from etcd: %v %+v, want SHARD_UNAVAILABLE for cmid %d", err, &e, cmid)
		}
		break
	}
	ops, commits := fenced()
	if ops == 0 {
		t.Fatal("the refusal was not counted as a fenced op")
	}
	// More sends while cut off: refused, and node 3 commits nothing.
	for k := uint64(1); k <= 2; k++ {
		yc.Write(codec.AppendSend(nil, codec.Send{To: x.User.ID, CMID: cmid + k, Body: []byte("later")}))
		if f := answer(t, yc); f.Kind != protocol.KindError {
			t.Fatalf("send %d while cut off: %v", k, f.Kind)
		}
	}
	if ops2, commits2 := fenced(); ops2 < ops+2 || commits2 != commits {
		t.Fatalf("while cut off: fenced ops %d → %d, commits %d → %d; want at least 2 more refused and no commit", ops, ops2, commits, commits2)
	}
	proxy.Heal()
	// Node 3 registers again; the others saw it leave and closed its
	// connections' sessions, so the client logs in again and resends.
	var id uint64
	for attempt := 0; id == 0; attempt++ {
		if attempt == 50 {
			t.Fatalf("no SENT for the resend after %d attempts", attempt)
		}
		yc.Conn.Close()
		yc = wiretest.Dial(t, n3.Addr().String(), n3.Fingerprint())
		yc.Login(y, 0)
		yc.Write(codec.AppendSend(nil, codec.Send{To: x.User.ID, CMID: cmid, Body: []byte("during")}))
		f := answer(t, yc)
		t.Logf("attempt %d: %v", attempt, f.Kind)
		if f.Kind == protocol.KindSent {
			var s pb.Sent
			if err := codec.ParseProto(f.Body, &s); err != nil || s.Cmid != cmid {
				t.Fatalf("Sent %+v, %v", &s, err)
			}
			id = s.Id
		}
	}
	yc.Conn.Close()
	x.Connect() // closed if its session was on the node that left
	x.WaitFor("the resent message, once", func(got []nodetest.Entry) bool {
		n := 0
		for _, e := range got {
			if e.ID == id {
				n++
			}
		}
		return n == 1
	})
}
