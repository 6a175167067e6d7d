package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/parley-im/parley/cluster"
	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/internal/wiretest"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
	"github.com/parley-im/parley/router/link"
	"github.com/parley-im/parley/storage"
)

// procCluster is three parleyd processes joined in a cluster on loopback,
// with an embedded etcd member in the test process.
type procCluster struct {
	t        *testing.T
	watch    *cluster.Watcher
	nodes    [3]*daemon  // node id i+1 at i: its current process
	args     [3][]string // the cluster flags each starts with
	dirs     [3]string   // data directories
	addrs    [3]string   // client addresses, kept across restarts
	fps      [3]string   // TLS fingerprints
	stopping [3]bool     // told to stop: clients stay away
	phone    int         // the last test phone number tried
	codes    func(string) string
}

// startProcCluster starts etcd and three parleyd nodes with two shards
// each and waits until every shard is placed.
func startProcCluster(t *testing.T) *procCluster {
	t.Helper()
	t.Setenv("PARLEY_SENDS_PER_SECOND", "0")
	e, err := cluster.StartEtcd(cluster.EtcdConfig{Dir: t.TempDir(), TickMs: 10, ElectionMs: 100, LogLevel: slog.LevelWarn})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	cli, err := e.Client(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	w, err := cluster.NewWatcher(cluster.WatcherConfig{Client: cli})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	ca := t.TempDir()
	if err := link.CreateCA(ca, time.Now()); err != nil {
		t.Fatal(err)
	}
	c := &procCluster{t: t, watch: w, codes: func(string) string { return testCode }}
	for i := range c.nodes {
		certs := t.TempDir()
		if err := link.IssueNode(ca, certs, uint32(i+1), time.Now()); err != nil {
			t.Fatal(err)
		}
		c.dirs[i] = t.TempDir()
		c.args[i] = []string{"--shards", "6", "--cluster", "--node-id", strconv.Itoa(i + 1),
			"--etcd", e.Endpoints()[0], "--link-listen", "127.0.0.1:0", "--cluster-certs", certs,
			"--lease-ttl", "2s", "--min-nodes", "3"}
		c.nodes[i] = launchDaemon(t, c.dirs[i], "", c.args[i]...)
	}
	for i, d := range c.nodes {
		d.waitReady(t)
		c.addrs[i] = d.addr // a restart listens there again
		c.fps[i] = d.fingerprint(t)
	}
	c.waitLive(func(st *cluster.State) bool { return st.AllPlaced() })
	return c
}

// waitLive waits until the cluster state satisfies ok and every node is
// live.
func (c *procCluster) waitLive(ok func(*cluster.State) bool) *cluster.State {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wiretest.Timeout)
	defer cancel()
	st, err := c.watch.WaitFor(ctx, func(st *cluster.State) bool {
		return ok(st) && st.Live(1) && st.Live(2) && st.Live(3)
	})
	if err != nil {
		c.t.Fatalf("cluster state: %v", err)
	}
	return st
}

// home returns the node serving the shard of phone.
func (c *procCluster) home(st *cluster.State, phone string) uint32 {
	return st.Owner(st.ShardOfSlot(storage.SlotOfPhone(phone))).Node
}

// up reports whether node id's current process is ready and running.
func (c *procCluster) up(id uint32) bool {
	d := c.nodes[id-1]
	if c.stopping[id-1] || c.exited(d) {
		return false
	}
	select {
	case <-d.ready:
		return true
	default:
		return false
	}
}

// relaunch starts node id again with the same data directory, address
// and node id, without waiting for it.
func (c *procCluster) relaunch(id uint32) {
	c.stopping[id-1] = false
	c.nodes[id-1] = launchDaemon(c.t, c.dirs[id-1], c.addrs[id-1], c.args[id-1]...)
}

// term sends node id SIGTERM: GOAWAY to its clients, its lease revoked
// on the way out. Clients stay away from it until relaunch.
func (c *procCluster) term(id uint32) {
	c.stopping[id-1] = true
	_ = c.nodes[id-1].cmd.Process.Signal(syscall.SIGTERM)
}

// exitedClean reports whether node id's process has exited, failing the
// test if it did not exit with status 0.
func (c *procCluster) exitedClean(id uint32) bool {
	c.t.Helper()
	d := c.nodes[id-1]
	if !c.exited(d) {
		return false
	}
	if !d.cmd.ProcessState.Success() {
		c.t.Fatalf("node %d after SIGTERM: %v\n%s", id, d.cmd.ProcessState, d.printed())
	}
	return true
}

func (c *procCluster) exited(d *daemon) bool {
	select {
	case <-d.exit:
		return true
	default:
		return false
	}
}

// register registers an account homed on node home through a node that
// is not its home.
func (c *procCluster) register(home uint32) wiretest.User {
	c.t.Helper()
	st := c.watch.Current()
	for {
		c.phone++
		p := fmt.Sprintf("+1555000%04d", c.phone)
		if c.home(st, p) != home {
			continue
		}
		via := home%3 + 1
		reg := wiretest.Dial(c.t, c.addrs[via-1], c.fps[via-1])
		defer reg.Conn.Close()
		return reg.Register(p, c.codes)
	}
}

// procUser is an account with a primary and a companion device.
type procUser struct {
	home    uint32
	devices [2]*procDevice
}

// procDevice is one device and what it has read of its inbox stream.
type procDevice struct {
	name string
	u    wiretest.User
	via  uint32 // the node it prefers: never the account's home
	c    *wiretest.Client
	last uint64              // last seq read
	got  map[uint64][]uint64 // sender → the k of each message read, in order
}

// connect (re)connects d to its preferred node, or the next one up, and
// logs in resuming after the last seq it read. It reports false when the
// login was refused with a retriable error (the home shard is down).
func (c *procCluster) connect(d *procDevice) bool {
	c.t.Helper()
	if d.c != nil {
		d.c.Conn.Close()
		d.c = nil
	}
	id := d.via
	for !c.up(id) {
		id = id%3 + 1
	}
	cl := wiretest.Dial(c.t, c.addrs[id-1], c.fps[id-1])
	cl.Send(protocol.KindLogin, &pb.Login{Version: protocol.Version, User: d.u.ID, Device: d.u.Device, Credential: d.u.Cred, Cursor: d.last})
	for {
		f, err := cl.Next(wiretest.Timeout)
		if err != nil {
			cl.Conn.Close()
			return false // the node went down under the login
		}
		switch f.Kind {
		case protocol.KindLoginOK:
			d.c = cl
			return true
		case protocol.KindError:
			var e pb.Error
			if err := codec.ParseProto(f.Body, &e); err != nil {
				c.t.Fatal(err)
			}
			if !retriable(e.Code) {
				c.t.Fatalf("%s: login refused with %v", d.name, e.Code)
			}
			cl.Conn.Close()
			return false
		}
	}
}

// retriable reports whether a SEND or LOGIN refused with code is retried
// with its cmid (spec.md [S-11-3]).
func retriable(code protocol.Code) bool {
	return code == protocol.CodeShardUnavailable || code == protocol.CodeOverloaded || code == protocol.CodeInternal
}

// handle records an inbox frame f read by d: seqs must increase, and each
// sender's messages arrive once, in the order sent.
func (d *procDevice) handle(t *testing.T, f codec.Frame) {
	t.Helper()
	var seq uint64
	switch f.Kind {
	case protocol.KindMessage:
		m, err := codec.ParseMessage(f.Body)
		if err != nil {
			t.Fatal(err)
		}
		seq = m.Seq
		var from, k uint64
		if _, err := fmt.Sscanf(string(m.Body), "%d/%d", &from, &k); err != nil {
			t.Fatalf("%s: body %q", d.name, m.Body)
		}
		got := d.got[from]
		if n := uint64(len(got)); k != n {
			t.Fatalf("%s: message %d from %d after %d messages (want %d: once and in order)", d.name, k, from, n, n)
		}
		d.got[from] = append(got, k)
	case protocol.KindReceipt, protocol.KindReceipts, protocol.KindGroupEvent:
		// Entries too: the seq below is read from their common field.
		seq = entrySeq(t, f)
	default:
		return
	}
	if seq <= d.last {
		t.Fatalf("%s: seq %d after %d", d.name, seq, d.last)
	}
	d.last = seq
	if seq%50 == 0 {
		if _, err := d.c.Conn.Write(codec.AppendAck(nil, seq)); err != nil {
			return // the connection died: the next read says so
		}
	}
}

// entrySeq returns the seq of a receipt or group event entry.
func entrySeq(t *testing.T, f codec.Frame) uint64 {
	switch f.Kind {
	case protocol.KindReceipt:
		r, err := codec.ParseReceipt(f.Body)
		if err != nil {
			t.Fatal(err)
		}
		return r.Seq
	case protocol.KindReceipts:
		var r pb.Receipts
		if err := codec.ParseProto(f.Body, &r); err != nil {
			t.Fatal(err)
		}
		return r.Seq
	default:
		var ev pb.GroupEvent
		if err := codec.ParseProto(f.Body, &ev); err != nil {
			t.Fatal(err)
		}
		return ev.Seq
	}
}

// procTraffic is 1:1 traffic between users homed on the three nodes: in
// each round every user's primary sends its next message to the next
// user, all three in flight at once, and each is resent with its cmid
// until SENT comes.
type procTraffic struct {
	c     *procCluster
	users []*procUser
	next  []uint64              // per user: k of the next message
	acked int                   // SENT answers
	retry int                   // SENDs refused with a retriable error
	codes map[protocol.Code]int // the retriable refusals by code
	lost  int                   // connections that ended under a device
	// silent counts SENDs that got no answer within sendTimeout.
	silent int
	// tick, if not nil, is called before every retry of a round.
	tick func()
}

func newProcTraffic(c *procCluster) *procTraffic {
	c.t.Helper()
	c.waitLive(func(st *cluster.State) bool { return st.AllPlaced() })
	tr := &procTraffic{c: c, codes: map[protocol.Code]int{}}
	for home := uint32(1); home <= 3; home++ {
		u := c.register(home)
		pu := &procUser{home: home}
		primary := &procDevice{name: fmt.Sprintf("user %d primary", home), u: u, via: home%3 + 1, got: map[uint64][]uint64{}}
		if !c.connect(primary) {
			c.t.Fatalf("%s: no login", primary.name)
		}
		lu := wiretest.Link(c.t, c.addrs[primary.via-1], c.fps[primary.via-1], primary.c, "laptop")
		laptop := &procDevice{name: fmt.Sprintf("user %d laptop", home), u: lu, via: (home+1)%3 + 1, got: map[uint64][]uint64{}}
		pu.devices = [2]*procDevice{primary, laptop}
		tr.users = append(tr.users, pu)
		tr.next = append(tr.next, 0)
	}
	for _, u := range tr.users {
		if !c.connect(u.devices[1]) {
			c.t.Fatalf("%s: no login", u.devices[1].name)
		}
	}
	return tr
}

// round sends every user's next message and reads until each is SENT,
// reconnecting and resending after retriable errors; before reads, it
// calls mid (if not nil) once, with the sends in flight.
func (tr *procTraffic) round(mid func()) {
	t := tr.c.t
	t.Helper()
	pending := map[int]bool{}
	for i := range tr.users {
		pending[i] = true
	}
	deadline := time.Now().Add(60 * time.Second)
	for len(pending) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no SENT within 60 s for users %v", pending)
		}
		for i := range pending {
			d := tr.users[i].devices[0]
			if d.c == nil && !tr.c.connect(d) {
				continue
			}
			to := tr.users[(i+1)%len(tr.users)].devices[0].u.ID
			body := fmt.Sprintf("%d/%d", d.u.ID, tr.next[i])
			if _, err := d.c.Conn.Write(codec.AppendSend(nil, codec.Send{To: to, CMID: tr.next[i] + 1, Body: []byte(body)})); err != nil {
				d.c.Conn.Close()
				d.c = nil
			}
		}
		if mid != nil {
			mid()
			mid = nil
		}
		for i := range pending {
			d := tr.users[i].devices[0]
			if d.c == nil {
				continue
			}
			if tr.readSent(d, tr.next[i]+1) {
				delete(pending, i)
				tr.next[i]++
				tr.acked++
			}
		}
		if len(pending) > 0 && tr.tick != nil {
			tr.tick()
		}
		if len(pending) > 0 {
			time.Sleep(20 * time.Millisecond) // retry backoff, as a client's
		}
	}
}

// sendTimeout is how long a SEND may go unanswered before the test
// resends it on a new connection.
const sendTimeout = 3 * time.Second

// readSent reads d's frames until the SENT for cmid (true), a retriable
// error or the connection's end (false, d.c nil after the end).
func (tr *procTraffic) readSent(d *procDevice, cmid uint64) bool {
	t := tr.c.t
	t.Helper()
	for {
		// A SEND unanswered for sendTimeout is resent on a new connection,
		// as a client does (a gateway may have lost it with a node).
		f, err := d.c.Next(sendTimeout)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				tr.silent++
			}
			d.c.Conn.Close()
			d.c = nil
			tr.lost++
			return false
		}
		switch f.Kind {
		case protocol.KindSent:
			var s pb.Sent
			if err := codec.ParseProto(f.Body, &s); err != nil {
				t.Fatal(err)
			}
			if s.Cmid == cmid {
				return true
			}
		case protocol.KindError:
			var e pb.Error
			if err := codec.ParseProto(f.Body, &e); err != nil {
				t.Fatal(err)
			}
			switch {
			case protocol.ScopeOf(e.Code) == protocol.ScopeConnection:
				d.c.Conn.Close()
				d.c = nil
				return false
			case retriable(e.Code):
				tr.retry++
				tr.codes[e.Code]++
				return false
			default:
				t.Fatalf("%s: SEND refused with %v", d.name, e.Code)
			}
		case protocol.KindGoAway:
			// The node is going away: finish this read on a new connection.
			d.c.Conn.Close()
			d.c = nil
			return false
		default:
			d.handle(t, f)
		}
	}
}

// verify has every device read its stream until it holds every message
// SENT to its account, and for the companion every message its primary
// sent, each once and in order.
func (tr *procTraffic) verify() {
	t := tr.c.t
	t.Helper()
	for i, u := range tr.users {
		from := tr.users[(i+len(tr.users)-1)%len(tr.users)]
		for j, d := range u.devices {
			want := map[uint64]uint64{from.devices[0].u.ID: tr.next[(i+len(tr.users)-1)%len(tr.users)]}
			if j == 1 {
				want[u.devices[0].u.ID] = tr.next[i]
			}
			done := func() bool {
				for s, n := range want {
					if uint64(len(d.got[s])) < n {
						return false
					}
				}
				return true
			}
			deadline := time.Now().Add(60 * time.Second)
			for !done() {
				if time.Now().After(deadline) {
					t.Fatalf("%s: has %v of %v after 60 s", d.name, lens(d.got), want)
				}
				if d.c == nil && !tr.c.connect(d) {
					time.Sleep(20 * time.Millisecond) // retry backoff, as a client's
					continue
				}
				f, err := d.c.Next(wiretest.Timeout)
				if err != nil {
					d.c.Conn.Close()
					d.c = nil
					continue
				}
				d.handle(t, f)
			}
			for s, n := range want {
				if got := uint64(len(d.got[s])); got != n {
					t.Fatalf("%s: %d messages from %d, %d were SENT", d.name, got, s, n)
				}
			}
		}
	}
}

func lens(m map[uint64][]uint64) map[uint64]int {
	out := map[uint64]int{}
	for k, v := range m {
		out[k] = len(v)
	}
	return out
}

// TestClusterKill9LosesNothing: three parleyd processes, users homed on
// each with two devices connected to nodes that are not their homes, 1:1
// traffic between them. Node 3 is killed with SIGKILL with sends in
// flight and started again with the same data and node id. The test
// reconnects the clients of the killed node to the next node up (the
// role of the SDK's address list) and resends every unanswered SEND with
// its cmid after SHARD_UNAVAILABLE; every message answered SENT reaches
// every device of its recipient and its sender's companion exactly once
// and in order.
func TestClusterKill9LosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three parleyd processes")
	}
	c := startProcCluster(t)
	tr := newProcTraffic(c)
	for range 10 {
		tr.round(nil)
	}
	// Node 3 dies with the round's sends in flight. It stays down until
	// the others see its lease expire and a SEND was refused with a
	// retriable error; the round that needs node 3's user's SENT waits
	// for it to be back, the others' traffic goes on.
	restarted := false
	tr.tick = func() {
		if !restarted && tr.retry > 0 && !c.watch.Current().Live(3) {
			c.relaunch(3)
			restarted = true
		}
	}
	tr.round(func() { c.nodes[2].kill() })
	for range 10 {
		tr.round(nil)
	}
	c.nodes[2].waitReady(t)
	c.waitLive(func(*cluster.State) bool { return true })
	for range 10 {
		tr.round(nil)
	}
	tr.verify()
	t.Logf("%d messages SENT across the kill; %d retriable refusals %v, %d connections lost, %d SENDs unanswered for %v", tr.acked, tr.retry, tr.codes, tr.lost, tr.silent, sendTimeout)
	if tr.retry == 0 || tr.lost == 0 {
		t.Fatalf("the kill went unnoticed: %d retriable refusals, %d connections lost", tr.retry, tr.lost)
	}
}

// TestClusterRollingRestart: under the same traffic, each node in turn is
// stopped with SIGTERM (GOAWAY to its clients, its lease revoked) and
// started again, the next one only once it is live; nothing SENT is lost
// or duplicated on any device.
func TestClusterRollingRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three parleyd processes")
	}
	c := startProcCluster(t)
	tr := newProcTraffic(c)
	for range 5 {
		tr.round(nil)
	}
	for id := uint32(1); id <= 3; id++ {
		// Traffic goes on while the node shuts down; it starts again once
		// its process has exited, and rounds go on until it is ready.
		restarted := false
		start := time.Now()
		tr.tick = func() {
			if !restarted && c.exitedClean(id) {
				t.Logf("node %d exited %v after SIGTERM", id, time.Since(start))
				c.relaunch(id)
				restarted = true
			}
		}
		tr.round(func() { c.term(id) })
		for !restarted || !c.up(id) {
			if time.Since(start) > 60*time.Second {
				t.Fatalf("node %d not back within 60 s of its SIGTERM (restarted %v)", id, restarted)
			}
			if c.exited(c.nodes[id-1]) && restarted {
				t.Fatalf("node %d exited at its restart:\n%s", id, c.nodes[id-1].printed())
			}
			tr.round(nil)
			tr.tick()
		}
		t.Logf("node %d ready %v after SIGTERM", id, time.Since(start))
		c.waitLive(func(*cluster.State) bool { return true })
		for range 5 {
			tr.round(nil)
		}
	}
	tr.verify()
	t.Logf("%d messages SENT across the rolling restart; %d retriable refusals %v, %d connections lost, %d SENDs unanswered for %v", tr.acked, tr.retry, tr.codes, tr.lost, tr.silent, sendTimeout)
}
