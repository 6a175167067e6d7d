package server_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/internal/node"
	"github.com/parley-im/parley/internal/nodetest"
	"github.com/parley-im/parley/internal/wiretest"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
	"github.com/parley-im/parley/server"
)

// groupCreate creates a group on c (logged in as its creator).
func groupCreate(t testing.TB, c *wiretest.Client, name string, members []uint64) *pb.GroupInfo {
	t.Helper()
	c.Send(protocol.KindGroupCreate, &pb.GroupCreate{Rid: c.NextRID(), Name: name, Members: members})
	var info pb.GroupInfo
	c.ExpectProto(protocol.KindGroupInfo, &info, protocol.KindSynced, protocol.KindGroupEvent, protocol.KindMessage)
	if len(info.Refused) > 0 {
		t.Fatalf("create refused %v", info.Refused)
	}
	return &info
}

// groupSequence returns the entries of group g a device got, as
// "gseq:body" strings in arrival order.
func groupSequence(got []nodetest.Entry, g uint64) []string {
	var out []string
	for _, e := range got {
		if e.Group == g {
			out = append(out, fmt.Sprintf("%d:%s", e.GSeq, e.Body))
		}
	}
	return out
}

func gseqOf(e string) int {
	var gseq int
	fmt.Sscanf(e, "%d:", &gseq)
	return gseq
}

// sendAll has d send count group messages to g, one at a time, each body
// from body(k); each SENT is announced on progress if there is room. It
// runs on its own goroutine: trouble is reported with Errorf.
func sendAll(t *testing.T, d *nodetest.Device, g uint64, count int, body func(k int) string, progress chan<- struct{}) {
	for k := range count {
		cmid, ok := d.SendGroup(g, []byte(body(k)))
		if !ok {
			t.Errorf("%s: send %d: not connected", d, k)
			return
		}
		if _, err := d.WaitSent(cmid); err != nil {
			t.Error(err)
			return
		}
		select {
		case progress <- struct{}{}:
		default:
		}
	}
}

// TestGroup1024MembersOnlineOfflineFlapping: a 1024-member group over 4
// shards whose members are online, offline or flapping while three
// members send; every member ends with every entry of the group, once, in
// the one order, and every SENT message reached every member.
func TestGroup1024MembersOnlineOfflineFlapping(t *testing.T) {
	if testing.Short() {
		t.Skip("1024 TLS connections")
	}
	nd := nodetest.Start(t, func(c *node.Config) { c.Shards = 4 })
	users := nd.RegisterMany(t, protocol.MaxGroupMembers)
	admin, _ := nd.Login(t, users[0], 0)
	admin.Expect(protocol.KindSynced)
	var ids []uint64
	for _, u := range users[1:] {
		ids = append(ids, u.ID)
	}
	info := groupCreate(t, admin, "everyone", ids)
	if len(info.Members) != protocol.MaxGroupMembers {
		t.Fatalf("%d members, want %d", len(info.Members), protocol.MaxGroupMembers)
	}
	admin.Conn.Close()
	g := info.Group

	rec := nodetest.NewRecorder(t, nd)
	devs := make([]*nodetest.Device, len(users))
	for i, u := range users {
		devs[i] = rec.Device(u)
		if i%3 != 1 { // online and flapping start connected; offline ones wait
			devs[i].Connect()
		}
	}
	const perSender = 10
	senders := []*nodetest.Device{devs[0], devs[3], devs[6]}
	progress := make(chan struct{}, len(senders)*perSender)
	stop := make(chan struct{})
	var flap sync.WaitGroup
	flap.Add(1)
	go func() { // flapping members drop, miss what is sent meanwhile, and resume
		defer flap.Done()
		r := rand.New(rand.NewPCG(7, 7))
		for {
			down := make([]*nodetest.Device, 1+r.IntN(16))
			for k := range down {
				down[k] = devs[2+3*r.IntN(len(devs)/3)]
				down[k].Disconnect()
			}
			select {
			case <-progress: // a message was SENT while they were away
			case <-stop:
			}
			for _, d := range down {
				d.Connect()
			}
			select {
			case <-stop:
				return
			default:
			}
		}
	}()
	var wg sync.WaitGroup
	for si, s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sendAll(t, s, g, perSender, func(k int) string { return fmt.Sprintf("s%d-%d", si, k) }, progress)
		}()
	}
	wg.Wait()
	close(stop)
	flap.Wait()
	for i, d := range devs {
		if i%3 == 1 {
			d.Connect()
		}
	}
	rec.Settle()

	// The ADD, then the messages: every member sees gseq 2 … total, less
	// its own messages (a single device gets no copy of what it sent).
	total := 2 + len(senders)*perSender
	own := func(i int) string {
		for si, s := range senders {
			if s == devs[i] {
				return fmt.Sprintf(":s%d-", si)
			}
		}
		return "\x00"
	}
	var ref []string
	for i, d := range devs {
		if i == 0 {
			continue // the admin's own stream also holds the CREATE
		}
		exp := total - 1
		if own(i) != "\x00" {
			exp -= perSender
		}
		seq := groupSequence(d.Entries(), g)
		if own(i) == "\x00" && ref == nil {
			ref = seq
		}
		if len(seq) != exp {
			t.Fatalf("member %d got %d group entries, want %d", i, len(seq), exp)
		}
	}
	for k, e := range ref {
		if gseqOf(e) != k+2 {
			t.Fatalf("gseq %d at position %d: a gap or a reorder", gseqOf(e), k)
		}
	}
	for i, d := range devs[1:] {
		var exp []string
		for _, e := range ref {
			if !strings.Contains(e, own(i+1)) {
				exp = append(exp, e)
			}
		}
		if got := groupSequence(d.Entries(), g); !slices.Equal(got, exp) {
			t.Fatalf("member %d saw %v\nwant %v", i+1, got, exp)
		}
	}
}

// TestGroupConcurrentSendersAndMembershipChanges: several members on
// three shards send while the admin removes and adds members; every
// member sees one sequence, every SENT message reaches every member of
// its time, and a removed member gets its removal and nothing after it.
func TestGroupConcurrentSendersAndMembershipChanges(t *testing.T) {
	nd := nodetest.Start(t, func(c *node.Config) { c.Shards = 3 })
	users := make([]wiretest.User, 12)
	for i := range users {
		users[i] = nd.RegisterOn(t, i%3)
	}
	admin, _ := nd.Login(t, users[0], 0)
	admin.Expect(protocol.KindSynced)
	var ids []uint64
	for _, u := range users[1:8] {
		ids = append(ids, u.ID)
	}
	g := groupCreate(t, admin, "busy", ids).Group
	rec := nodetest.NewRecorder(t, nd)
	devs := make([]*nodetest.Device, len(users))
	for i, u := range users[1:] { // the admin stays on its own connection
		devs[i+1] = rec.Connected(u)
	}
	const senders, perSender = 4, 15
	progress := make(chan struct{}, senders*perSender)
	var wg sync.WaitGroup
	for si := 1; si <= senders; si++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sendAll(t, devs[si], g, perSender, func(k int) string { return fmt.Sprintf("%d-%d", si, k) }, progress)
		}()
	}
	sendersDone := make(chan struct{})
	go func() { wg.Wait(); close(sendersDone) }()
	changes := []struct {
		op    pb.GroupOp
		users []uint64
	}{
		{pb.GroupOp_GROUP_OP_ADD, []uint64{users[8].ID, users[9].ID}},
		{pb.GroupOp_GROUP_OP_REMOVE, []uint64{users[5].ID}},
		{pb.GroupOp_GROUP_OP_ADD, []uint64{users[10].ID}},
		{pb.GroupOp_GROUP_OP_REMOVE, []uint64{users[8].ID, users[6].ID}},
	}
	for _, ch := range changes {
		// Spread the changes through the traffic: each after a few more
		// messages were SENT (or once every sender is done).
		for range 5 {
			select {
			case <-progress:
			case <-sendersDone:
			}
		}
		admin.Send(protocol.KindGroupUpdate, &pb.GroupUpdate{Rid: admin.NextRID(), Group: g, Op: ch.op, Members: ch.users})
		if ch.op == pb.GroupOp_GROUP_OP_ADD {
			admin.Expect(protocol.KindGroupInfo, protocol.KindGroupEvent, protocol.KindMessage, protocol.KindReceipts)
		} else {
			admin.Expect(protocol.KindOK, protocol.KindGroupEvent, protocol.KindMessage, protocol.KindReceipts)
		}
	}
	<-sendersDone
	if t.Failed() {
		t.FailNow()
	}
	admin.Conn.Close()
	rec.Settle()

	// The full order, from a member that stayed throughout and sent nothing.
	keeper := devs[7]
	keeper.WaitFor("every change", func(got []nodetest.Entry) bool {
		return len(groupSequence(got, g)) >= 1+senders*perSender+len(changes) // the add of the creation, the messages, the changes
	})
	full := groupSequence(keeper.Entries(), g)
	if len(full) != 1+senders*perSender+len(changes) {
		t.Fatalf("the keeper saw %d group entries, want %d: %v", len(full), 1+senders*perSender+len(changes), full)
	}
	for i, e := range full {
		if gseqOf(e) != i+2 {
			t.Fatalf("keeper: gseq %d at position %d: a gap or a reorder in %v", gseqOf(e), i, full)
		}
	}
	for i, d := range devs[1:] {
		seq := groupSequence(d.Entries(), g)
		// Each member's sequence is a contiguous run of the full order (from
		// its add to its removal) ...
		for _, e := range seq {
			if !slices.Contains(full, e) {
				t.Fatalf("member %d saw %s, not in the order %v", i+1, e, full)
			}
		}
		// ... with no gap but the member's own messages (a single device
		// gets no copy of what it sent).
		own := fmt.Sprintf(":%d-", i+1)
		var prev int
		for _, e := range full {
			gseq := gseqOf(e)
			if len(seq) == 0 || gseq < gseqOf(seq[0]) || gseq > gseqOf(seq[len(seq)-1]) || strings.Contains(e, own) {
				continue
			}
			if !slices.Contains(seq, e) {
				t.Fatalf("member %d missed %s (after gseq %d): %v", i+1, e, prev, seq)
			}
			prev = gseq
		}
	}
	// Removed members got their removal, and nothing after it: not before
	// the traffic settled, and not on a fresh login, whose Synced proves
	// the inbox holds nothing more.
	for _, idx := range []int{5, 6, 8} {
		devs[idx].Resync()
		seq := groupSequence(devs[idx].Entries(), g)
		if len(seq) == 0 {
			t.Fatalf("removed member %d saw nothing of the group", idx)
		}
		if last := seq[len(seq)-1]; !strings.Contains(last, "GROUP_OP_REMOVE") || !strings.Contains(last, fmt.Sprint(users[idx].ID)) {
			t.Fatalf("removed member %d's last group entry is %s", idx, last)
		}
	}
	rec.Check()
}

// TestThreeDevicesRandomSchedule is a seeded property test: three users,
// each on a shard of its own, with three devices each send, disconnect
// and reconnect at random. Every message that was SENT reaches every
// device of its recipient and of its sender, once; every device of a user
// ends with the same entries in the same order, with no duplicate and no
// gap.
func TestThreeDevicesRandomSchedule(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			nd := nodetest.Start(t, func(c *node.Config) { c.Shards = 3 })
			rec := nodetest.NewRecorder(t, nd)
			var users []wiretest.User
			var devices [3][]*nodetest.Device
			for i := range devices {
				u := nd.RegisterOn(t, i)
				users = append(users, u)
				p, _ := nd.Login(t, u, 0)
				devices[i] = append(devices[i], rec.Device(u))
				for k := range 2 {
					devices[i] = append(devices[i], rec.Device(nd.Link(t, p, fmt.Sprint("dev", k))))
				}
				p.Conn.Close()
				for _, d := range devices[i] {
					d.Connect()
				}
			}
			rng := rand.New(rand.NewPCG(seed, 99))
			sent := 0
			for step := 0; step < 300; step++ {
				ui, di := rng.IntN(3), rng.IntN(3)
				d := devices[ui][di]
				switch r := rng.IntN(10); {
				case r < 6:
					to := users[rng.IntN(3)].ID
					cmid, ok := d.Send(to, fmt.Appendf(nil, "%d/%d#%d", ui, di, step))
					if !ok {
						continue // not connected: nothing was written
					}
					if _, err := d.WaitSent(cmid); err != nil {
						t.Fatal(err)
					}
					sent++
				case r < 8:
					d.Disconnect()
				default:
					d.Disconnect()
					d.Connect()
				}
			}
			for i := range devices {
				for _, d := range devices[i] {
					d.Disconnect()
					d.Connect()
				}
			}
			rec.Settle()
			for i := range devices {
				// The receipts the last acks caused may still be on their way:
				// wait until the three devices have the same head.
				rec.Wait(fmt.Sprintf("user %d's devices at one head", i), func() bool {
					h := devices[i][0].Cursor()
					for _, d := range devices[i] {
						if d.Cursor() != h {
							return false
						}
					}
					return true
				})
				want := devices[i][0].Entries()
				for k, e := range want {
					if e.Seq != uint64(k+1) {
						t.Fatalf("user %d device 0: seq %d at position %d: a gap", i, e.Seq, k)
					}
				}
				for di, d := range devices[i][1:] {
					if got := d.Entries(); !slices.Equal(got, want) {
						t.Fatalf("user %d device %d saw %d entries, device 0 %d; first difference at %d", i, di+1, len(got), len(want), firstDiff(got, want))
					}
				}
			}
			rec.Check()
			t.Logf("seed %d: %d messages", seed, sent)
		})
	}
}

func firstDiff(a, b []nodetest.Entry) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestPresenceWithinBoundedTime: a subscriber sees a contact come online
// at once and go offline after an ungraceful disconnect within twice the
// heartbeat; privacy NOBODY hides both.
func TestPresenceWithinBoundedTime(t *testing.T) {
	nd := nodetest.Start(t, func(c *node.Config) { c.Server = server.Config{Heartbeat: time.Second} })
	alice, bob, carol := nd.RegisterOn(t, 0), nd.RegisterOn(t, 1), nd.RegisterOn(t, 1)
	b, _ := nd.Login(t, bob, 0)
	b.Send(protocol.KindPresenceSubscribe, &pb.PresenceSubscribe{Rid: 1, Users: []uint64{alice.ID}})
	var p pb.Presence
	b.ExpectProto(protocol.KindPresence, &p, protocol.KindSynced, protocol.KindOK) // [S-15-2] in either order
	if p.User != alice.ID || p.Online {
		t.Fatalf("initial %v", &p)
	}
	start := time.Now()
	a, _ := nd.Login(t, alice, 0)
	// SYNCED (bob's shard) may come after the first PRESENCE (alice's).
	b.ExpectProto(protocol.KindPresence, &p, protocol.KindOK, protocol.KindSynced)
	if !p.Online {
		t.Fatalf("after alice's login %v", &p)
	}
	t.Logf("online seen after %v", time.Since(start))
	// Alice's connection goes silent (a dead radio, no FIN): offline within
	// two heartbeats, with a last seen.
	start = time.Now()
	b.Ping()
	keepAlive := make(chan struct{})
	defer close(keepAlive)
	go func() { // keep bob alive meanwhile
		for {
			select {
			case <-keepAlive:
				return
			case <-time.After(400 * time.Millisecond):
				_, _ = b.Conn.Write(codec.AppendFrame(nil, protocol.KindPing, nil))
			}
		}
	}()
	for {
		f := b.Expect(protocol.KindPresence, protocol.KindPong, protocol.KindOK)
		if err := codec.ParseProto(f.Body, &p); err != nil {
			t.Fatal(err)
		}
		if !p.Online {
			break
		}
	}
	if d := time.Since(start); d > 2*time.Second+time.Second/2 || p.LastSeenMs == 0 {
		t.Fatalf("offline after %v (last seen %d), want within 2 heartbeats", d, p.LastSeenMs)
	}
	_ = a
	// NOBODY hides alice from carol.
	a2, _ := nd.Login(t, alice, 0)
	a2.Send(protocol.KindSetPrivacy, &pb.SetPrivacy{Rid: 2, Presence: pb.Visibility_VISIBILITY_NOBODY})
	a2.Expect(protocol.KindOK, protocol.KindSynced)
	c, _ := nd.Login(t, carol, 0)
	c.Send(protocol.KindPresenceSubscribe, &pb.PresenceSubscribe{Rid: 1, Users: []uint64{alice.ID}})
	c.ExpectProto(protocol.KindPresence, &p, protocol.KindOK, protocol.KindSynced)
	if p.Online || p.LastSeenMs != 0 {
		t.Fatalf("carol sees %v through NOBODY", &p)
	}
}

// TestTypingRelayedNotStored: typing reaches the peer's devices over the
// wire and writes nothing to any shard.
func TestTypingRelayedNotStored(t *testing.T) {
	nd := nodetest.Start(t, nil)
	users := []wiretest.User{nd.RegisterOn(t, 0), nd.RegisterOn(t, 1)} // relayed across shards
	a, _ := nd.Login(t, users[0], 0)
	b, _ := nd.Login(t, users[1], 0)
	a.Expect(protocol.KindSynced)
	b.Expect(protocol.KindSynced)
	var before []uint64
	for _, s := range nd.Shards() {
		before = append(before, s.Stats().Commits)
	}
	a.Send(protocol.KindTyping, &pb.Typing{To: users[1].ID, State: pb.TypingState_TYPING_STARTED})
	var it pb.IsTyping
	b.ExpectProto(protocol.KindIsTyping, &it)
	if it.From != users[0].ID || it.State != pb.TypingState_TYPING_STARTED {
		t.Fatalf("bob got %v", &it)
	}
	for i, s := range nd.Shards() {
		if got := s.Stats().Commits; got != before[i] {
			t.Fatalf("shard %d committed %d times for a typing indicator", i, got-before[i])
		}
	}
}
