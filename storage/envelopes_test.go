package storage_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
	"github.com/parley-im/parley/storage"
)

// envelopes returns one envelope per device, each body "prefix/device".
func envelopes(prefix string, devices ...uint32) []*pb.Envelope {
	var l []*pb.Envelope
	for _, d := range devices {
		l = append(l, &pb.Envelope{Device: d, Body: []byte(fmt.Sprintf("%s/%d", prefix, d)), Cipher: pb.Cipher_CIPHER_SIGNAL})
	}
	return l
}

// sendEnvelopes submits an envelope send and returns the answer: *pb.Sent
// or *pb.Error. It leaves the frames that came before the answer on ep:
// the sending device's copy of the message ([S-8-17]) is stored by the
// recipient's shard but pumped by the sender's, so when the two differ it
// may reach ep before SENT, which the recipient's shard emits after it
// forwarded the copy. No rule orders the two: [S-8-12] puts SENT after
// the message is durable, and the sending device recognises its copy by
// from_device whenever it comes ([S-8-17]).
func (n *node) sendEnvelopes(t *testing.T, from account, ep *endpoint, to, cmid uint64, env *storage.Envelopes) any {
	t.Helper()
	n.submit(storage.Op{Kind: storage.OpSend, From: from.user, FromDevice: from.device, User: to, CMID: cmid, Envelopes: env, Conn: ep.ref})
	return ep.takeOnly(t, protocol.KindSent, protocol.KindError)
}

// keyedPair is two users of two devices each, all logged in and with
// keys published: alice (phone and laptop) and bob (phone and tablet).
type keyedPair struct {
	alice, alaptop, bob, btablet account
	aep, lep, bep, tep           *endpoint
}

// pairWithKeys registers alice and bob with the phones given, links a
// companion to each and publishes keys for all four devices.
func (n *node) pairWithKeys(t *testing.T, alicePhone, bobPhone string) keyedPair {
	t.Helper()
	var p keyedPair
	p.alice, p.bob = n.register(t, alicePhone), n.register(t, bobPhone)
	p.aep, p.bep = n.login(t, p.alice, 0), n.login(t, p.bob, 0)
	p.aep.take(t, protocol.KindSynced)
	p.bep.take(t, protocol.KindSynced)
	p.alaptop, p.btablet = n.link(t, p.alice, p.aep, "laptop"), n.link(t, p.bob, p.bep, "tablet")
	p.lep, p.tep = n.login(t, p.alaptop, 0), n.login(t, p.btablet, 0)
	p.lep.take(t, protocol.KindSynced)
	p.tep.take(t, protocol.KindSynced)
	for i, a := range []struct {
		acc account
		ep  *endpoint
	}{{p.alice, p.aep}, {p.alaptop, p.lep}, {p.bob, p.bep}, {p.btablet, p.tep}} {
		if code := n.publish(t, a.acc, a.ep, testKeys(i+1, 1, 20)); code != 0 {
			t.Fatal(code)
		}
	}
	return p
}

// TestEnvelopes: a message with one envelope per device reaches each
// device with only its own envelope, under one id and one seq per inbox,
// the copy reaches the sender's other device with its envelope, and the
// sending device its copy without a body; a stale device list of either
// user is refused with both lists and nothing is stored; a retry of a
// stored send is answered SENT even after the devices changed; delivered
// receipts work as for any message.
func TestEnvelopes(t *testing.T) {
	for _, shards := range []int{1, 3} {
		t.Run(fmt.Sprintf("%d shards", shards), func(t *testing.T) {
			n := newNode(t, shards, nil)
			p := n.pairWithKeys(t, "+15550008001", "+15550008002")
			alice, bob, alaptop, btablet := p.alice, p.bob, p.alaptop, p.btablet
			aep, bep, lep, tep := p.aep, p.bep, p.lep, p.tep

			env := &storage.Envelopes{To: envelopes("m1", bob.device, btablet.device), Own: envelopes("m1", alaptop.device)}
			sent, ok := n.sendEnvelopes(t, alice, aep, bob.user, 1, env).(*pb.Sent)
			if !ok {
				t.Fatalf("send: %v", sent)
			}
			got := map[string]codec.Message{}
			for name, ep := range map[string]*endpoint{"bob": bep, "tablet": tep, "laptop": lep, "alice": aep} {
				got[name] = ep.take(t, protocol.KindMessage).(codec.Message)
			}
			for name, want := range map[string]string{"bob": "m1/1", "tablet": "m1/2", "laptop": "m1/2", "alice": ""} {
				m := got[name]
				if m.ID != sent.Id || m.From != alice.user || m.FromDevice != alice.device || string(m.Body) != want {
					t.Fatalf("%s got %+v, want id %d body %q", name, m, sent.Id, want)
				}
				if (want != "") != (m.Cipher == pb.Cipher_CIPHER_SIGNAL) {
					t.Fatalf("%s got cipher %v", name, m.Cipher)
				}
			}
			if got["bob"].Seq != got["tablet"].Seq || got["laptop"].Seq != got["alice"].Seq || got["laptop"].To != bob.user {
				t.Fatalf("seqs or copy: %+v", got)
			}
			n.ack(bob, bep, got["bob"].Seq)
			if r := aep.take(t, protocol.KindReceipt).(codec.Receipt); r.Peer != bob.user || r.UpTo != sent.Id || r.Type != pb.ReceiptType_RECEIPT_DELIVERED {
				t.Fatalf("receipt %+v", r)
			}

			// Bob links a third device with keys: alice's list is stale.
			bphone2 := n.link(t, bob, bep, "phone 2")
			p2ep := n.login(t, bphone2, 0)
			if code := n.publish(t, bphone2, p2ep, testKeys(9, 1, 20)); code != 0 {
				t.Fatal(code)
			}
			env = &storage.Envelopes{To: envelopes("m2", bob.device, btablet.device), Own: envelopes("m2", alaptop.device)}
			e, ok := n.sendEnvelopes(t, alice, aep, bob.user, 2, env).(*pb.Error)
			if !ok || e.Code != protocol.CodeDevicesChanged || e.Cmid != 2 || len(e.Devices) != 2 ||
				e.Devices[0].User != bob.user || !slices.Equal(e.Devices[0].Devices, []uint32{bob.device, btablet.device, bphone2.device}) ||
				e.Devices[1].User != alice.user || !slices.Equal(e.Devices[1].Devices, []uint32{alaptop.device}) {
				t.Fatalf("stale recipient list: %v", e)
			}
			// The same cmid with the right lists: nothing was stored.
			env.To = envelopes("m2", bob.device, btablet.device, bphone2.device)
			sent2, ok := n.sendEnvelopes(t, alice, aep, bob.user, 2, env).(*pb.Sent)
			if !ok {
				t.Fatalf("resend: %v", sent2)
			}
			if m := p2ep.take(t, protocol.KindMessage).(codec.Message); m.ID != sent2.Id || string(m.Body) != "m2/3" {
				t.Fatalf("phone 2 got %+v", m)
			}
			// Alice's own list is stale: her laptop is revoked.
			n.submit(storage.Op{Kind: storage.OpRevokeDevice, User: alice.user, Device: alice.device, Target: alaptop.device, RID: 5, Conn: aep.ref})
			aep.take(t, protocol.KindOK)
			env3 := &storage.Envelopes{To: envelopes("m3", bob.device, btablet.device, bphone2.device), Own: envelopes("m3", alaptop.device)}
			e, ok = n.sendEnvelopes(t, alice, aep, bob.user, 3, env3).(*pb.Error)
			if !ok || e.Code != protocol.CodeDevicesChanged || len(e.Devices) != 2 || len(e.Devices[1].Devices) != 0 {
				t.Fatalf("stale own list: %v", e)
			}
			// A retry of the stored send is answered as it was.
			if s, ok := n.sendEnvelopes(t, alice, aep, bob.user, 2, env).(*pb.Sent); !ok || s.Id != sent2.Id {
				t.Fatalf("retry after the change: %v, want id %d", s, sent2.Id)
			}
			// To itself: the sender's other devices are the recipients, and
			// there is no copy.
			self := &storage.Envelopes{To: envelopes("note", bob.device, bphone2.device)}
			if a := n.sendEnvelopes(t, btablet, tep, bob.user, 1, self); fmt.Sprintf("%T", a) != "*pb.Sent" {
				t.Fatalf("send to itself: %v", a)
			}
			env3.Own = nil
			if a := n.sendEnvelopes(t, alice, aep, bob.user, 3, env3); a == nil || fmt.Sprintf("%T", a) != "*pb.Sent" {
				t.Fatalf("send after the revocation: %v", a)
			}
		})
	}
}

// TestDevicesChangedKeepsOrder: S1, an envelope send with a stale list of
// the recipient's devices, is refused DEVICES_CHANGED; S2, the same
// connection's next send to the same user, already on its way with the
// right list, is held back (OVERLOADED, not DEVICES_CHANGED: its
// envelopes are right) until S1 comes again encrypted anew, so both of
// the recipient's devices get S1 before S2 ([S-8-13], [S-17-9]); S3,
// stale as S1 was, is held back likewise rather than refused
// DEVICES_CHANGED. The two users live on two shards and have two devices
// each.
func TestDevicesChangedKeepsOrder(t *testing.T) {
	n := newNode(t, 2, nil)
	p := n.pairWithKeys(t, n.phoneOn(t, 0, 41), n.phoneOn(t, 1, 42))
	alice, bob, alaptop, btablet := p.alice, p.bob, p.alaptop, p.btablet
	aep, bep, tep := p.aep, p.bep, p.tep

	// Alice learned bob's devices before his tablet published keys (S1,
	// S3); S2 was made once she knew the tablet. All go out pipelined.
	sends := map[uint64]*storage.Envelopes{
		1: {To: envelopes("s1", bob.device), Own: envelopes("s1", alaptop.device)},
		2: {To: envelopes("s2", bob.device, btablet.device), Own: envelopes("s2", alaptop.device)},
		3: {To: envelopes("s3", bob.device), Own: envelopes("s3", alaptop.device)},
	}
	for cmid := uint64(1); cmid <= 3; cmid++ {
		n.submit(storage.Op{Kind: storage.OpSend, From: alice.user, FromDevice: alice.device, User: bob.user, CMID: cmid, Envelopes: sends[cmid], Conn: aep.ref})
	}
	first := map[uint64]*pb.Error{} // the refusals, by cmid
	for range 3 {
		switch m := aep.takeOnly(t, protocol.KindSent, protocol.KindError).(type) {
		case *pb.Error:
			first[m.Cmid] = m
		}
	}
	// The client resends its refused sends in cmid order, S1 (and S3,
	// should it learn it was stale) encrypted for the devices listed.
	sends[1].To = envelopes("s1", bob.device, btablet.device)
	sends[3].To = envelopes("s3", bob.device, btablet.device)
	for cmid := uint64(1); cmid <= 3; cmid++ {
		if first[cmid] == nil {
			continue
		}
		if a, ok := n.sendEnvelopes(t, alice, aep, bob.user, cmid, sends[cmid]).(*pb.Sent); !ok {
			t.Fatalf("resend of S%d: %v", cmid, a)
		}
	}
	for _, r := range []struct {
		name   string
		ep     *endpoint
		device uint32
	}{{"bob", bep, bob.device}, {"tablet", tep, btablet.device}} {
		var want []string
		for _, m := range []string{"s1", "s2", "s3"} {
			want = append(want, fmt.Sprintf("%s/%d", m, r.device))
		}
		if got := bodies(r.ep.messages(t, 3)); !slices.Equal(got, want) {
			t.Fatalf("%s got %q, want %q", r.name, got, want)
		}
	}
	if e := first[1]; e == nil || e.Code != protocol.CodeDevicesChanged {
		t.Fatalf("S1 answered %v, want DEVICES_CHANGED", e)
	}
	// S3 is held back before its devices are compared: a DEVICES_CHANGED
	// of it would have moved the barrier past S2.
	for cmid := uint64(2); cmid <= 3; cmid++ {
		if e := first[cmid]; e == nil || e.Code != protocol.CodeOverloaded || e.RetryAfterMs != 200 {
			t.Fatalf("S%d answered %v, want OVERLOADED with retry_after_ms 200 ([S-8-13])", cmid, e)
		}
	}
}
