package server_test

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/internal/node"
	"github.com/parley-im/parley/internal/wiretest"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
	"github.com/parley-im/parley/server"
)

// registerMany registers n users concurrently.
func registerMany(t testing.TB, nd *testNode, base, n int) []wiretest.User {
	t.Helper()
	users := make([]wiretest.User, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			users[i] = register(t, nd, phone(base+i))
		}()
	}
	wg.Wait()
	return users
}

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

// groupSequence returns the group entries of g a device got, as
// "gseq:body" strings in arrival order.
func groupSequence(got []entry, g uint64) []string {
	var out []string
	for _, e := range got {
		if e.group == g {
			out = append(out, fmt.Sprintf("%d:%s", e.gseq, e.body))
		}
	}
	return out
}

// TestGroup1024MembersOnlineOfflineFlapping: a 1024-member group whose
// members are online, offline or flapping while three members send; every
// member ends with every entry of the group, once, in the one order.
func TestGroup1024MembersOnlineOfflineFlapping(t *testing.T) {
	if testing.Short() {
		t.Skip("1024 TLS connections")
	}
	nd := startNode(t, func(c *node.Config) { c.Shards = 4 })
	users := registerMany(t, nd, 10_000, protocol.MaxGroupMembers)
	admin, _ := login(t, nd, users[0], 0)
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

	streams := make([]*stream, len(users))
	for i, u := range users {
		streams[i] = newStream(t, nd, u)
		if i%3 != 1 { // online and flapping start connected; offline ones wait
			streams[i].connect()
		}
	}
	rng := rand.New(rand.NewPCG(1024, 1))
	const perSender = 10
	senders := []*stream{streams[0], streams[3], streams[6]}
	stop := make(chan struct{})
	var flap sync.WaitGroup
	flap.Add(1)
	go func() { // flapping members drop and resume while the messages flow
		defer flap.Done()
		r := rand.New(rand.NewPCG(7, 7))
		for {
			select {
			case <-stop:
				return
			default:
			}
			s := streams[2+3*r.IntN(len(streams)/3)]
			s.disconnect()
			time.Sleep(time.Duration(r.IntN(5)) * time.Millisecond)
			s.connect()
		}
	}()
	var wg sync.WaitGroup
	for si, s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range perSender {
				cmid := uint64(k + 1)
				s.write(codec.AppendSend(nil, codec.Send{Group: g, CMID: cmid, Body: fmt.Appendf(nil, "s%d-%d", si, k)}))
				if !s.waitSent(cmid) {
					return
				}
				time.Sleep(time.Duration(rng.IntN(3)) * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	close(stop)
	flap.Wait()
	for i, s := range streams {
		if i%3 == 1 {
			s.connect()
		}
	}
	// The ADD, then the messages: every member sees gseq 2 … total, less
	// its own messages (a single device gets no copy of what it sent).
	total := 2 + len(senders)*perSender
	own := func(i int) string {
		for si, s := range senders {
			if s == streams[i] {
				return fmt.Sprintf(":s%d-", si)
			}
		}
		return "\x00"
	}
	var ref []string
	for i, s := range streams {
		if i == 0 {
			continue // the admin's own stream also holds the CREATE
		}
		exp := total - 1
		if own(i) != "\x00" {
			exp -= perSender
		}
		s.waitFor("every group entry", func(got []entry) bool { return len(groupSequence(got, g)) >= exp })
		seq := groupSequence(s.entries(), g)
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
	for i, s := range streams[1:] {
		var exp []string
		for _, e := range ref {
			if !contains(e, own(i+1)) {
				exp = append(exp, e)
			}
		}
		if got := groupSequence(s.entries(), g); fmt.Sprint(got) != fmt.Sprint(exp) {
			t.Fatalf("member %d saw %v\nwant %v", i+1, got, exp)
		}
	}
	for _, s := range streams {
		s.disconnect()
	}
}

// TestGroupConcurrentSendersAndMembershipChanges: several members send
// while the admin removes and adds members; every member sees one
// sequence, and a removed member gets nothing after its removal.
func TestGroupConcurrentSendersAndMembershipChanges(t *testing.T) {
	nd := startNode(t, func(c *node.Config) { c.Shards = 3 })
	users := registerMany(t, nd, 20_000, 12)
	admin, _ := login(t, nd, users[0], 0)
	admin.Expect(protocol.KindSynced)
	var ids []uint64
	for _, u := range users[1:8] {
		ids = append(ids, u.ID)
	}
	g := groupCreate(t, admin, "busy", ids).Group
	streams := make([]*stream, len(users))
	for i, u := range users[1:] { // the admin stays on its own connection
		streams[i+1] = newStream(t, nd, u)
		streams[i+1].connect()
	}
	var wg sync.WaitGroup
	for si := 1; si <= 4; si++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range 15 {
				cmid := uint64(k + 1)
				streams[si].write(codec.AppendSend(nil, codec.Send{Group: g, CMID: cmid, Body: fmt.Appendf(nil, "%d-%d", si, k)}))
				if !streams[si].waitSent(cmid) {
					return
				}
			}
		}()
	}
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
		admin.Send(protocol.KindGroupUpdate, &pb.GroupUpdate{Rid: admin.NextRID(), Group: g, Op: ch.op, Members: ch.users})
		if ch.op == pb.GroupOp_GROUP_OP_ADD {
			admin.Expect(protocol.KindGroupInfo, protocol.KindGroupEvent, protocol.KindMessage, protocol.KindReceipts)
		} else {
			admin.Expect(protocol.KindOK, protocol.KindGroupEvent, protocol.KindMessage, protocol.KindReceipts)
		}
		time.Sleep(5 * time.Millisecond)
	}
	wg.Wait()
	admin.Conn.Close()
	// The full order, from a member that stayed throughout and sent nothing.
	keeper := streams[7]
	var last uint64
	defer func() {
		if t.Failed() {
			t.Logf("keeper saw %v", groupSequence(keeper.entries(), g))
		}
	}()
	keeper.waitFor("the end", func(got []entry) bool {
		seq := groupSequence(got, g)
		return len(seq) >= 1+60+len(changes) // the add of the creation, 60 messages, the changes
	})
	full := groupSequence(keeper.entries(), g)
	byGseq := map[string]bool{}
	for _, e := range full {
		byGseq[e] = true
	}
	for i, s := range streams[1:] {
		time.Sleep(10 * time.Millisecond)
		seq := groupSequence(s.entries(), g)
		// Each member's sequence is a contiguous run of the full order (from
		// its add to its removal).
		for _, e := range seq {
			if !byGseq[e] {
				t.Fatalf("member %d saw %s, not in the order %v", i+1, e, full)
			}
		}
		// ... with no gap but the member's own messages (a single device
		// gets no copy of what it sent).
		own := fmt.Sprintf(":%d-", i+1)
		var prev int
		for _, e := range full {
			var gseq int
			fmt.Sscanf(e, "%d:", &gseq)
			if len(seq) == 0 || gseq < gseqOf(seq[0]) || gseq > gseqOf(seq[len(seq)-1]) || contains(e, own) {
				continue
			}
			if !containsEntry(seq, e) {
				t.Fatalf("member %d missed %s (after gseq %d): %v", i+1, e, prev, seq)
			}
			prev = gseq
		}
		_ = last
	}
	// Removed members got their removal and nothing after.
	for _, idx := range []int{5, 6, 8} {
		seq := groupSequence(streams[idx].entries(), g)
		if len(seq) == 0 {
			continue
		}
		lastEntry := seq[len(seq)-1]
		if !contains(lastEntry, "GROUP_OP_REMOVE") {
			t.Fatalf("removed member %d's last group entry is %s", idx, lastEntry)
		}
	}
	for _, s := range streams[1:] {
		s.disconnect()
	}
}

func gseqOf(e string) int {
	var gseq int
	fmt.Sscanf(e, "%d:", &gseq)
	return gseq
}

func containsEntry(seq []string, e string) bool {
	for _, x := range seq {
		if x == e {
			return true
		}
	}
	return false
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

// TestThreeDevicesRandomSchedule is a seeded property test: three users
// with three devices each send, disconnect and reconnect at random; every
// device of a user ends with the same entries in the same order, with no
// duplicate and no gap.
func TestThreeDevicesRandomSchedule(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			nd := startNode(t, nil)
			users := registerMany(t, nd, 30_000+int(seed)*100, 3)
			var devices [3][]*stream
			for i, u := range users {
				p, _ := login(t, nd, u, 0)
				devices[i] = append(devices[i], newStream(t, nd, u))
				for k := range 2 {
					devices[i] = append(devices[i], newStream(t, nd, wiretest.Link(t, nd.Addr().String(), nd.Fingerprint(), p, fmt.Sprint("dev", k))))
				}
				p.Conn.Close()
				for _, d := range devices[i] {
					d.connect()
				}
			}
			rng := rand.New(rand.NewPCG(seed, 99))
			cmids := map[*stream]uint64{}
			sent := 0
			for step := 0; step < 300; step++ {
				ui, di := rng.IntN(3), rng.IntN(3)
				d := devices[ui][di]
				switch r := rng.IntN(10); {
				case r < 6:
					to := users[rng.IntN(3)].ID
					cmids[d]++
					if d.write(codec.AppendSend(nil, codec.Send{To: to, CMID: cmids[d], Body: fmt.Appendf(nil, "%d/%d#%d", ui, di, cmids[d])})) {
						if !d.waitSent(cmids[d]) {
							t.FailNow()
						}
						sent++
					} else {
						cmids[d]--
					}
				case r < 8:
					d.disconnect()
				default:
					d.disconnect()
					d.connect()
				}
			}
			for i := range devices {
				for _, d := range devices[i] {
					d.disconnect()
					d.connect()
				}
			}
			for i := range devices {
				ref := devices[i][0]
				// Wait until the three devices agree on the head, stably.
				agreed := 0
				for deadline := time.Now().Add(20 * time.Second); agreed < 5; time.Sleep(20 * time.Millisecond) {
					h := lastSeq(ref.entries())
					same := h > 0
					for _, d := range devices[i] {
						same = same && lastSeq(d.entries()) == h
					}
					if same {
						agreed++
					} else {
						agreed = 0
					}
					if time.Now().After(deadline) {
						t.Fatalf("user %d's devices never agreed on the head", i)
					}
				}
				want := ref.entries()
				for k, e := range want {
					if e.seq != want[0].seq+uint64(k) {
						t.Fatalf("user %d device 0: seq %d at position %d: a gap", i, e.seq, k)
					}
				}
				for di, d := range devices[i][1:] {
					got := d.entries()
					if fmt.Sprint(got) != fmt.Sprint(want) {
						t.Fatalf("user %d device %d saw %d entries, device 0 %d; first difference at %d", i, di+1, len(got), len(want), firstDiff(got, want))
					}
				}
			}
			for i := range devices {
				for _, d := range devices[i] {
					d.disconnect()
				}
			}
			t.Logf("seed %d: %d messages", seed, sent)
		})
	}
}

func lastSeq(es []entry) uint64 {
	if len(es) == 0 {
		return 0
	}
	return es[len(es)-1].seq
}

func firstDiff(a, b []entry) int {
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
	nd := startNode(t, func(c *node.Config) { c.Server = server.Config{Heartbeat: time.Second} })
	users := registerMany(t, nd, 40_000, 3)
	alice, bob, carol := users[0], users[1], users[2]
	b, _ := login(t, nd, bob, 0)
	b.Send(protocol.KindPresenceSubscribe, &pb.PresenceSubscribe{Rid: 1, Users: []uint64{alice.ID}})
	var p pb.Presence
	b.ExpectProto(protocol.KindPresence, &p, protocol.KindSynced, protocol.KindOK) // [S-15-2] in either order
	if p.User != alice.ID || p.Online {
		t.Fatalf("initial %v", &p)
	}
	start := time.Now()
	a, _ := login(t, nd, alice, 0)
	b.ExpectProto(protocol.KindPresence, &p, protocol.KindOK)
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
	a2, _ := login(t, nd, alice, 0)
	a2.Send(protocol.KindSetPrivacy, &pb.SetPrivacy{Rid: 2, Presence: pb.Visibility_VISIBILITY_NOBODY})
	a2.Expect(protocol.KindOK, protocol.KindSynced)
	c, _ := login(t, nd, carol, 0)
	c.Send(protocol.KindPresenceSubscribe, &pb.PresenceSubscribe{Rid: 1, Users: []uint64{alice.ID}})
	c.ExpectProto(protocol.KindPresence, &p, protocol.KindOK, protocol.KindSynced)
	if p.Online || p.LastSeenMs != 0 {
		t.Fatalf("carol sees %v through NOBODY", &p)
	}
}

// TestTypingRelayedNotStored: typing reaches the peer's devices over the
// wire and writes nothing to any shard.
func TestTypingRelayedNotStored(t *testing.T) {
	nd := startNode(t, nil)
	users := registerMany(t, nd, 50_000, 2)
	a, _ := login(t, nd, users[0], 0)
	b, _ := login(t, nd, users[1], 0)
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
