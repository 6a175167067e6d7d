package clustertest_test

import (
	"fmt"
	"testing"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/internal/clustertest"
	"github.com/parley-im/parley/internal/nodetest"
	"github.com/parley-im/parley/internal/wiretest"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// other returns a node that is not home, the k-th after it (k ≥ 1).
func other(c *clustertest.Cluster, home uint32, k int) uint32 {
	return (home-1+uint32(k))%uint32(c.Size()) + 1
}

// user is an account with two devices, neither connected to its home
// node.
type user struct {
	id   uint64
	home uint32
	devs [2]*nodetest.Device
}

// users registers one account homed on each node, links a second device
// to each, and adds both devices to rec, connected through the next two
// nodes after the home.
func users(t *testing.T, c *clustertest.Cluster, rec *nodetest.Recorder) []*user {
	t.Helper()
	var out []*user
	for home := uint32(1); home <= uint32(c.Size()); home++ {
		primary := c.Register(t, home, other(c, home, 1))
		via := c.Node(other(c, home, 2))
		pc := wiretest.Dial(t, via.Addr().String(), via.Fingerprint())
		pc.Login(primary, 0)
		companion := wiretest.Link(t, c.Node(other(c, home, 1)).Addr().String(), c.Node(other(c, home, 1)).Fingerprint(), pc, "companion")
		pc.Conn.Close()
		u := &user{id: primary.ID, home: home}
		for i, cred := range []wiretest.User{primary, companion} {
			d := rec.Device(cred)
			d.Via(c.Node(other(c, home, i+1)))
			d.Connect()
			u.devs[i] = d
		}
		out = append(out, u)
	}
	for _, u := range out {
		for _, d := range u.devs {
			d.WaitSynced()
		}
	}
	return out
}

// send sends body from d to user to (or group, with to 0) and waits for
// its SENT.
func send(t *testing.T, d *nodetest.Device, to, group uint64, body string) uint64 {
	t.Helper()
	var cmid uint64
	var ok bool
	if group != 0 {
		cmid, ok = d.SendGroup(group, []byte(body))
	} else {
		cmid, ok = d.Send(to, []byte(body))
	}
	if !ok {
		t.Fatalf("%v: send %q failed", d, body)
	}
	id, err := d.WaitSent(cmid)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestAnyNodeServesAnyUser: three nodes, one user homed on each, every
// device connected to a node that is not its home. 1:1 messages both
// ways, a group with members on the three nodes, delivered and read
// receipts, the copies of a sender's own messages on its other device,
// and presence all cross the node links; every SENT message reaches
// every device it should, once and in order.
func TestAnyNodeServesAnyUser(t *testing.T) {
	c := clustertest.Start(t, 3, nil)
	rec := nodetest.NewRecorder(t, c.Node(1))
	us := users(t, c, rec)

	// 1:1, every ordered pair, from both devices.
	var last uint64
	for _, from := range us {
		for _, to := range us {
			if from == to {
				continue
			}
			for i, d := range from.devs {
				last = send(t, d, to.id, 0, fmt.Sprintf("%d→%d #%d", from.id, to.id, i))
			}
		}
	}

	// A group created by the first user with the other two.
	f, err := us[0].devs[0].Request(protocol.KindGroupCreate, &pb.GroupCreate{Name: "three nodes", Members: []uint64{us[1].id, us[2].id}})
	if err != nil {
		t.Fatal(err)
	}
	var info pb.GroupInfo
	if f.Kind != protocol.KindGroupInfo || codec.ParseProto(f.Body, &info) != nil || len(info.Members) != 3 {
		t.Fatalf("group create answered %v %+v", f.Kind, &info)
	}
	for _, u := range us {
		send(t, u.devs[1], 0, info.Group, fmt.Sprintf("group from %d", u.id))
	}

	// Read receipt: the last 1:1 message (from the last user to the
	// second) read by the second user reaches the sender's devices.
	from, reader := us[2], us[1]
	f, err = reader.devs[0].Request(protocol.KindRead, &pb.Read{Peer: from.id, UpTo: last})
	if err != nil || f.Kind != protocol.KindOK {
		t.Fatalf("read: %v %v", f.Kind, err)
	}
	for _, d := range from.devs {
		d.WaitFor("the read receipt", func(got []nodetest.Entry) bool {
			for _, e := range got {
				if e.Kind == protocol.KindReceipt && e.From == reader.id && e.ID == last && e.Body == pb.ReceiptType_RECEIPT_READ.String() {
					return true
				}
			}
			return false
		})
	}
	// Delivered receipts: the devices acknowledged everything; each sender
	// hears of it from each recipient.
	for _, u := range us {
		for _, d := range u.devs {
			d.WaitFor("delivered receipts from the other two", func(got []nodetest.Entry) bool {
				peers := map[uint64]bool{}
				for _, e := range got {
					if e.Kind == protocol.KindReceipt && e.Body == pb.ReceiptType_RECEIPT_DELIVERED.String() {
						peers[e.From] = true
					}
				}
				return len(peers) == 2
			})
		}
	}
	rec.Settle()

	// Presence across nodes: the first user, watching the second through
	// a third node, sees the second go offline and online.
	for _, d := range us[1].devs {
		d.Disconnect()
	}
	watcher := us[0].devs[0]
	watcher.Disconnect()
	wn := c.Node(other(c, us[0].home, 2))
	wc := wiretest.Dial(t, wn.Addr().String(), wn.Fingerprint())
	defer wc.Conn.Close()
	wc.Login(watcher.User, watcher.Cursor())
	wc.Send(protocol.KindPresenceSubscribe, &pb.PresenceSubscribe{Rid: wc.NextRID(), Users: []uint64{us[1].id}})
	wc.ExpectOffline(us[1].id, true)
	us[1].devs[0].Connect()
	for {
		f := wc.Expect(protocol.KindPresence, protocol.KindMessage, protocol.KindReceipt, protocol.KindReceipts, protocol.KindSynced, protocol.KindGroupEvent)
		if f.Kind != protocol.KindPresence {
			continue // an entry of the traffic before: not presence
		}
		var p pb.Presence
		if err := codec.ParseProto(f.Body, &p); err != nil {
			t.Fatal(err)
		}
		if p.User == us[1].id && p.Online {
			break
		}
	}
}
