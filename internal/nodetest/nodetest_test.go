package nodetest

import (
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"testing"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/internal/node"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

func TestMain(m *testing.M) { VerifyMain(m) }

// TestStartFreePorts: every listener of a test node is on a free loopback
// port, never a default one, so tests run beside a parleyd on the defaults.
func TestStartFreePorts(t *testing.T) {
	n := Start(t, func(c *node.Config) { c.AdminAddr = "127.0.0.1:0" })
	for what, a := range map[string]net.Addr{"client": n.Addr(), "media": n.MediaAddr(), "admin": n.AdminAddr()} {
		_, port, err := net.SplitHostPort(a.String())
		if err != nil || port == "5222" || port == "5443" || port == "9222" || port == "0" {
			t.Errorf("%s listens on %v", what, a)
		}
	}
}

// TestPhoneOn: a phone from PhoneOn registers an account on that shard.
func TestPhoneOn(t *testing.T) {
	n := Start(t, func(c *node.Config) { c.Shards = 3 })
	seen := map[string]bool{}
	for shard := range 3 {
		u := n.RegisterOn(t, shard)
		if seen[u.Phone] {
			t.Fatalf("phone %s handed out twice", u.Phone)
		}
		seen[u.Phone] = true
	}
}

// TestRecorderAcrossShards: traffic between users on different shards, a
// linked companion and a group spanning the shards settles with every
// SENT message where it belongs.
func TestRecorderAcrossShards(t *testing.T) {
	n := Start(t, func(c *node.Config) { c.Shards = 3 })
	alice, bob, carol := n.RegisterOn(t, 0), n.RegisterOn(t, 1), n.RegisterOn(t, 2)
	primary, _ := n.Login(t, alice, 0)
	laptop := n.Link(t, primary, "laptop")
	primary.Conn.Close()

	rec := NewRecorder(t, n)
	a, al := rec.Connected(alice), rec.Connected(laptop)
	b, c := rec.Connected(bob), rec.Connected(carol)
	for _, d := range []*Device{a, al, b, c} {
		d.WaitSynced()
	}
	send := func(d *Device, to uint64, text string) {
		t.Helper()
		cmid, ok := d.Send(to, []byte(text))
		if !ok {
			t.Fatalf("%s: send failed", d)
		}
		if _, err := d.WaitSent(cmid); err != nil {
			t.Fatal(err)
		}
	}
	send(a, bob.ID, "to bob on shard 1")
	send(al, carol.ID, "to carol on shard 2, from the laptop")
	send(b, alice.ID, "to alice's two devices")
	send(c, carol.ID, "a note to self")

	f, err := c.Request(protocol.KindGroupCreate, &pb.GroupCreate{Name: "three shards", Members: []uint64{alice.ID, bob.ID}})
	var info pb.GroupInfo
	if err != nil || f.Kind != protocol.KindGroupInfo || codec.ParseProto(f.Body, &info) != nil {
		t.Fatalf("group create: %v %v", f.Kind, err)
	}
	for i := range 3 {
		cmid, _ := a.SendGroup(info.Group, fmt.Appendf(nil, "group %d", i))
		if _, err := a.WaitSent(cmid); err != nil {
			t.Fatal(err)
		}
	}
	rec.Settle()
	for _, d := range []*Device{b, c} {
		d.WaitFor("three group messages", func(got []Entry) bool {
			k := 0
			for _, e := range got {
				if e.Group == info.Group && e.Kind == protocol.KindMessage {
					k++
				}
			}
			return k == 3
		})
	}
	if got := len(al.Entries()); got < 6 {
		t.Errorf("the laptop got %d entries, want the copies and bob's message and the group", got)
	}
}

// TestWaitAnswer: WaitAnswer reports a SEND's retriable refusal (the
// shard fenced), then the SENT of its resend, and the end of the device's
// connection, whether the device dropped it or the node closed it.
func TestWaitAnswer(t *testing.T) {
	var fenced atomic.Bool
	n := Start(t, func(c *node.Config) { c.Storage.Fence = func() bool { return !fenced.Load() } })
	alice, bob := n.RegisterOn(t, 0), n.RegisterOn(t, 1)
	rec := NewRecorder(t, n)
	a := rec.Connected(alice)
	a.WaitSynced()
	rec.Connected(bob).WaitSynced()

	fenced.Store(true)
	cmid, _ := a.Send(bob.ID, []byte("held"))
	if id, code, err := a.WaitAnswer(cmid, Timeout); err != nil || id != 0 || code != protocol.CodeShardUnavailable {
		t.Fatalf("fenced: id %d, code %v, %v; want SHARD_UNAVAILABLE", id, code, err)
	}
	fenced.Store(false)
	a.Resend(cmid)
	if id, code, err := a.WaitAnswer(cmid, Timeout); err != nil || id == 0 || code != 0 {
		t.Fatalf("resent: id %d, code %v, %v; want a SENT", id, code, err)
	}

	fenced.Store(true)
	cmid, _ = a.Send(bob.ID, []byte("refused, then not resent"))
	if _, code, err := a.WaitAnswer(cmid, Timeout); err != nil || code != protocol.CodeShardUnavailable {
		t.Fatalf("fenced again: code %v, %v", code, err)
	}
	fenced.Store(false)
	a.Disconnect()
	if a.Connected() || a.Resend(cmid) {
		t.Fatal("a resend written after Disconnect")
	}
	if _, _, err := a.WaitAnswer(cmid, Timeout); !errors.Is(err, ErrConnectionEnded) {
		t.Fatalf("after Disconnect: %v, want ErrConnectionEnded", err)
	}

	a.Connect()
	a.WaitSynced()
	a.Resend(cmid)
	if _, err := a.WaitSent(cmid); err != nil {
		t.Fatal(err)
	}
	if !a.Connected() {
		t.Fatal("not connected after Connect")
	}

	// A SEND bob's shard cannot answer yet, and the node closes alice's
	// connection: the reader's end wakes WaitAnswer.
	resume := n.Shards()[1].Pause()
	cmid, _ = a.Send(bob.ID, []byte("unanswered on its connection"))
	n.Server().CloseUsers(func(user uint64, _ bool) bool { return user == alice.ID }, protocol.CodeShuttingDown)
	_, _, err := a.WaitAnswer(cmid, Timeout)
	resume()
	if !errors.Is(err, ErrConnectionEnded) || a.Connected() {
		t.Fatalf("the node closed the connection: %v (connected %v), want ErrConnectionEnded", err, a.Connected())
	}
	a.Connect()
	a.WaitSynced()
	a.Resend(cmid)
	if _, err := a.WaitSent(cmid); err != nil {
		t.Fatal(err)
	}
	rec.Settle()
}
