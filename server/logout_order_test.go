package server_test

import (
	"fmt"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/internal/node"
	"github.com/parley-im/parley/internal/nodetest"
	"github.com/parley-im/parley/internal/wiretest"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// TestLogoutLowersBarriersOnEveryShard: a SEND refused with a retriable
// code raises its order barrier on the shard that refused it, the
// recipient's ([S-8-13]); when its connection closes, the logout lowers
// that barrier there too, not only on the sender's shard. alice (shard 0)
// and bob (shard 1) have two devices each, and every device holds a
// conversation back on the other user's shard; closing one device's
// connection of each lowers exactly its barrier, and the other devices
// stay held back until they resend, then deliver in order.
func TestLogoutLowersBarriersOnEveryShard(t *testing.T) {
	var fenced atomic.Bool
	n := nodetest.Start(t, func(c *node.Config) { c.Storage.Fence = func() bool { return !fenced.Load() } })
	type party struct {
		user wiretest.User
		dev  [2]*wiretest.Client
	}
	var users [2]party
	for u := range users {
		p := &users[u]
		p.user = n.RegisterOn(t, u)
		p.dev[0], _ = n.Login(t, p.user, 0)
		p.dev[1], _ = n.Login(t, n.Link(t, p.dev[0], "companion"), 0)
	}
	shards := n.Shards()
	barriers := func() string { return fmt.Sprint(shards[0].OrderBarriers(), shards[1].OrderBarriers()) }
	other := []protocol.Kind{protocol.KindMessage, protocol.KindReceipt, protocol.KindSynced}
	refused := func(c *wiretest.Client, to, cmid uint64) {
		t.Helper()
		c.Write(codec.AppendSend(nil, codec.Send{To: to, CMID: cmid, Body: []byte(fmt.Sprint(cmid))}))
		var e pb.Error
		c.ExpectProto(protocol.KindError, &e, other...)
		if e.Code != protocol.CodeShardUnavailable || e.Cmid != cmid {
			t.Fatalf("SEND %d answered %v for cmid %d, want SHARD_UNAVAILABLE", cmid, e.Code, e.Cmid)
		}
	}

	fenced.Store(true)
	for u, p := range users {
		for _, c := range p.dev {
			refused(c, users[1-u].user.ID, 1)
		}
	}
	fenced.Store(false)
	if got := barriers(); got != "2 2" {
		t.Fatalf("barriers on shards 0 and 1: %s, want 2 2", got)
	}

	users[0].dev[0].Conn.Close() // alice's barrier on bob's shard
	users[1].dev[1].Conn.Close() // bob's on alice's
	waitUntil(t, "the closed connections' barriers to go", func() bool { return barriers() == "1 1" })

	// The other devices are still held back until they resend; then the
	// peer's device still connected gets their messages in order.
	for u, held := range []int{1, 0} {
		c, to := users[u].dev[held], users[1-u].user.ID
		refused(c, to, 2)
		c.SendText(to, 1, "1")
		c.SendText(to, 2, "2")
		r := users[1-u].dev[1-held]
		var got []string
		for len(got) < 2 {
			m, err := codec.ParseMessage(r.Expect(protocol.KindMessage, protocol.KindReceipt, protocol.KindSynced).Body)
			if err != nil {
				t.Fatal(err)
			}
			r.Ack(m.Seq)
			if m.From == users[u].user.ID { // not a copy of its own user's sends ([S-8-17])
				got = append(got, string(m.Body))
			}
		}
		if want := []string{"1", "2"}; !slices.Equal(got, want) {
			t.Fatalf("user %d got %q from user %d, want %q", 1-u, got, u, want)
		}
	}
	if got := barriers(); got != "0 0" {
		t.Fatalf("barriers on shards 0 and 1 after the retries: %s, want 0 0", got)
	}
}
