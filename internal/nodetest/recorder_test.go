package nodetest

import (
	"strings"
	"testing"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/internal/wiretest"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// These tests feed a recorder frames a faulty node could send, with no
// node at all, and check that each fault is named: the harness's own
// proof that the end-to-end tests can fail.

// books is a recorder with no node, for frames made up by a test.
func books(t *testing.T) *Recorder {
	return &Recorder{
		t: t, changed: make(chan struct{}),
		byUser: map[uint64][]*Device{}, sent: map[uint64]*send{}, groups: map[uint64]*groupBook{},
	}
}

// deliver hands d the frames in b as its reader would.
func deliver(t *testing.T, d *Device, b []byte) {
	t.Helper()
	r := d.rec
	r.mu.Lock()
	defer r.mu.Unlock()
	for len(b) > 0 {
		f, n, _, err := codec.Parse(b, protocol.MaxFrameBody)
		if err != nil || n == 0 {
			t.Fatalf("frame: %v", err)
		}
		d.handleLocked(f, d.conns)
		b = b[n:]
	}
}

func message(seq uint64, m codec.Message) []byte {
	return codec.AppendEntry(nil, protocol.KindMessage, seq, codec.AppendMessageEntry(nil, m))
}

func groupEvent(t *testing.T, seq, group, gseq uint64, op pb.GroupOp, members ...uint64) []byte {
	t.Helper()
	b, err := codec.AppendProto(nil, protocol.KindGroupEvent, &pb.GroupEvent{Seq: seq, Id: 1000 + gseq, Group: group, Gseq: gseq, Op: op, Members: members})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// written records a SEND by d as Send does, without a connection.
func written(d *Device, to, group uint64) uint64 {
	r := d.rec
	r.mu.Lock()
	defer r.mu.Unlock()
	d.nextCMID++
	r.clock++
	d.sends[d.nextCMID] = &send{dev: d, cmid: d.nextCMID, to: to, group: group, clock: r.clock}
	return d.nextCMID
}

// verdict returns everything the recorder holds against the traffic.
func verdict(r *Recorder) string {
	r.mu.Lock()
	problems, _ := r.auditLocked(true)
	r.violations = append(r.violations, problems...)
	r.mu.Unlock()
	return r.unreported()
}

func wantVerdict(t *testing.T, r *Recorder, want ...string) {
	t.Helper()
	got := verdict(r)
	if len(want) == 0 && got != "" {
		t.Fatalf("clean traffic judged: %s", got)
	}
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("verdict lacks %q:\n%s", w, got)
		}
	}
}

func TestRecorderCleanTraffic(t *testing.T) {
	r := books(t)
	alice, bob := r.Device(wiretest.User{ID: 1, Device: 1}), r.Device(wiretest.User{ID: 2, Device: 1})
	for i := range uint64(3) {
		cmid := written(alice, 2, 0)
		deliver(t, alice, codec.AppendSent(nil, cmid, 100+i))
		deliver(t, bob, message(i+1, codec.Message{ID: 100 + i, From: 1, FromDevice: 1, Body: []byte("hi")}))
	}
	deliver(t, bob, codec.AppendSynced(nil, 3))
	wantVerdict(t, r)
}

func TestRecorderStreamFaults(t *testing.T) {
	r := books(t)
	d := r.Device(wiretest.User{ID: 2, Device: 1})
	deliver(t, d, codec.AppendEntry(nil, protocol.KindReceipt, 1, codec.AppendReceiptEntry(nil, codec.Receipt{Peer: 1, UpTo: 5})))
	deliver(t, d, codec.AppendEntry(nil, protocol.KindReceipt, 3, codec.AppendReceiptEntry(nil, codec.Receipt{Peer: 1, UpTo: 6})))
	deliver(t, d, codec.AppendEntry(nil, protocol.KindReceipt, 3, codec.AppendReceiptEntry(nil, codec.Receipt{Peer: 1, UpTo: 6})))
	deliver(t, d, codec.AppendSynced(nil, 2))
	deliver(t, d, codec.AppendSent(nil, 9, 900))
	wantVerdict(t, r,
		"seq 3 after 1: a gap",
		"seq 3 after 3: a duplicate or a reorder",
		"Synced at seq 2, the device has up to 3",
		"SENT for cmid 9, which the device never sent",
	)
}

func TestRecorderResumeAtWrongCursor(t *testing.T) {
	r := books(t)
	d := r.Device(wiretest.User{ID: 2, Device: 1})
	d.cursor = 7
	b, _ := codec.AppendProto(nil, protocol.KindLoginOK, &pb.LoginOk{Cursor: 9})
	deliver(t, d, b)
	wantVerdict(t, r, "LoginOk resumes after seq 9, the device has up to 7")
}

// TestRecorderAcknowledgedAgainstArrived: a SENT message that never
// arrives, one that arrives twice, one no SENT acknowledged, and one that
// overtakes an earlier one from the same device are each named.
func TestRecorderAcknowledgedAgainstArrived(t *testing.T) {
	r := books(t)
	alice, bob := r.Device(wiretest.User{ID: 1, Device: 1}), r.Device(wiretest.User{ID: 2, Device: 1})
	for i := range uint64(4) {
		deliver(t, alice, codec.AppendSent(nil, written(alice, 2, 0), 100+i))
	}
	// 100 arrives twice, 101 never, 103 before 102, and 555 unannounced.
	from := func(id uint64) codec.Message { return codec.Message{ID: id, From: 1, FromDevice: 1, Body: []byte("x")} }
	deliver(t, bob, message(1, from(100)))
	deliver(t, bob, message(2, from(100)))
	deliver(t, bob, message(3, from(103)))
	deliver(t, bob, message(4, from(102)))
	deliver(t, bob, message(5, from(555)))
	wantVerdict(t, r,
		"message 100 delivered twice, at seq 1 and 2",
		"2/1 never got message 101 (1/1's cmid 2 to user 2), which was SENT",
		"message 102 (1/1's cmid 3) at seq 4 came after a later one from the same device",
		"message 555 from 1/1 at seq 5: no SENT acknowledged it",
	)
}

// TestRecorderCopies: with a second device, the sender's devices must
// get copies of its 1:1 messages ([S-8-17]).
func TestRecorderCopies(t *testing.T) {
	r := books(t)
	phone, laptop := r.Device(wiretest.User{ID: 1, Device: 1}), r.Device(wiretest.User{ID: 1, Device: 2})
	bob := r.Device(wiretest.User{ID: 2, Device: 1})
	deliver(t, phone, codec.AppendSent(nil, written(phone, 2, 0), 100))
	deliver(t, bob, message(1, codec.Message{ID: 100, From: 1, FromDevice: 1, Body: []byte("x")}))
	deliver(t, phone, message(1, codec.Message{ID: 100, From: 1, FromDevice: 1, To: 2, Body: []byte("x")}))
	wantVerdict(t, r, "1/2 never got message 100 (1/1's cmid 1 to user 2)")
	deliver(t, laptop, message(1, codec.Message{ID: 100, From: 1, FromDevice: 1, To: 3, Body: []byte("x")}))
	wantVerdict(t, r, "1/2: message 100 (1/1's cmid 1) at seq 1 with to 3 reached user 1")
}

// TestRecorderGroups: a group message missing at a member, one delivered
// after the member's removal, and two orders for one group are named.
func TestRecorderGroups(t *testing.T) {
	const g = 77
	r := books(t)
	alice, bob, carol := r.Device(wiretest.User{ID: 1, Device: 1}), r.Device(wiretest.User{ID: 2, Device: 1}), r.Device(wiretest.User{ID: 3, Device: 1})
	add := groupEvent(t, 1, g, 2, pb.GroupOp_GROUP_OP_ADD, 1, 2, 3)
	for _, d := range []*Device{alice, bob, carol} {
		deliver(t, d, add)
	}
	msg := func(seq, id, gseq uint64) []byte {
		return message(seq, codec.Message{ID: id, From: 1, FromDevice: 1, Group: g, GSeq: gseq, Body: []byte("x")})
	}
	deliver(t, alice, codec.AppendSent(nil, written(alice, 0, g), 200))
	deliver(t, bob, msg(2, 200, 3))
	deliver(t, carol, msg(2, 200, 3))
	wantVerdict(t, r)

	remove := groupEvent(t, 3, g, 4, pb.GroupOp_GROUP_OP_REMOVE, 3)
	deliver(t, bob, remove)
	deliver(t, carol, remove)
	deliver(t, alice, codec.AppendSent(nil, written(alice, 0, g), 201))
	deliver(t, carol, msg(4, 201, 5)) // removed, still fed
	deliver(t, alice, codec.AppendSent(nil, written(alice, 0, g), 202))
	deliver(t, bob, msg(4, 202, 5)) // another message at the same gseq
	wantVerdict(t, r,
		"3/1: group 77 entry at gseq 5 (x), not a member then",
		"group 77: gseq 5 is 202 here, 201 elsewhere: two orders",
		"2/1 never got message 201",
	)
}
