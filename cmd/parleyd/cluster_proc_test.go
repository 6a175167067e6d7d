package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/parley-im/parley/cluster"
	"github.com/parley-im/parley/internal/nodetest"
	"github.com/parley-im/parley/internal/wiretest"
	"github.com/parley-im/parley/protocol"
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

// procNode is a node of the cluster as a device reaches it.
type procNode struct{ addr, fingerprint string }

func (n procNode) Addr() net.Addr      { return net.TCPAddrFromAddrPort(netip.MustParseAddrPort(n.addr)) }
func (n procNode) Fingerprint() string { return n.fingerprint }

// target returns node id as devices reach it.
func (c *procCluster) target(id uint32) nodetest.Target {
	return procNode{addr: c.addrs[id-1], fingerprint: c.fps[id-1]}
}

// procUser is an account with a primary and a companion device, each
// preferring a node that is not the account's home.
type procUser struct {
	home    uint32
	devices [2]*nodetest.Device
	via     [2]uint32 // the node each device prefers
}

// connect connects device j of u to its preferred node, or the next one
// up, unless its connection still runs; it logs in resuming after the
// last seq it got. A login refused because the home shard is down ends
// the connection: the next connect tries again.
func (c *procCluster) connect(u *procUser, j int) {
	d := u.devices[j]
	if d.Connected() {
		return
	}
	id := u.via[j]
	for !c.up(id) {
		id = id%3 + 1
	}
	d.Disconnect()
	d.Via(c.target(id))
	d.Connect()
}

// procTraffic is 1:1 traffic between users homed on the three nodes: in
// each round every user's primary sends its next message to the next
// user, all three in flight at once, and each is resent with its cmid
// until SENT comes. Its recorder checks every device's stream as it
// comes (no gap, duplicate or reorder) and, in verify, that every SENT
// message reached every device that should have it.
type procTraffic struct {
	c     *procCluster
	rec   *nodetest.Recorder
	users []*procUser
	acked int                   // SENT answers
	retry int                   // SENDs refused with a retriable error
	codes map[protocol.Code]int // the retriable refusals by code
	lost  int                   // connections that ended under a SEND (refused logins included)
	// silent counts SENDs that got no answer within sendTimeout.
	silent int
	// tick, if not nil, is called before every retry of a round.
	tick func()
}

func newProcTraffic(c *procCluster) *procTraffic {
	c.t.Helper()
	c.waitLive(func(st *cluster.State) bool { return st.AllPlaced() })
	tr := &procTraffic{c: c, rec: nodetest.NewRecorder(c.t, c.target(1)), codes: map[protocol.Code]int{}}
	for home := uint32(1); home <= 3; home++ {
		primary := c.register(home)
		via := [2]uint32{home%3 + 1, (home+1)%3 + 1}
		pc := wiretest.Dial(c.t, c.addrs[via[0]-1], c.fps[via[0]-1])
		pc.Login(primary, 0)
		laptop := wiretest.Link(c.t, c.addrs[via[0]-1], c.fps[via[0]-1], pc, "laptop")
		pc.Conn.Close()
		u := &procUser{home: home, via: via, devices: [2]*nodetest.Device{tr.rec.Device(primary), tr.rec.Device(laptop)}}
		tr.users = append(tr.users, u)
	}
	for _, u := range tr.users {
		for j, d := range u.devices {
			c.connect(u, j)
			d.WaitSynced()
		}
	}
	return tr
}

// round sends every user's next message and waits until each is SENT,
// reconnecting and resending after retriable errors; before it waits, it
// calls mid (if not nil) once, with the sends in flight.
func (tr *procTraffic) round(mid func()) {
	t := tr.c.t
	t.Helper()
	pending := map[int]uint64{} // user → the cmid of its SEND, 0 before it is written
	for i := range tr.users {
		pending[i] = 0
	}
	deadline := time.Now().Add(60 * time.Second)
	for len(pending) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no SENT within 60 s for users %v", slices.Sorted(maps.Keys(pending)))
		}
		for i, cmid := range pending {
			u := tr.users[i]
			tr.c.connect(u, 0)
			d := u.devices[0]
			if cmid != 0 {
				d.Resend(cmid)
				continue
			}
			to := tr.users[(i+1)%len(tr.users)].devices[0].User.ID
			pending[i], _ = d.Send(to, []byte(fmt.Sprintf("%v #%d", d, tr.acked)))
		}
		if mid != nil {
			mid()
			mid = nil
		}
		for i, cmid := range pending {
			if cmid != 0 && tr.answered(tr.users[i].devices[0], cmid) {
				delete(pending, i)
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
	tr.rec.Check()
}

// sendTimeout is how long a SEND may go unanswered before the test
// resends it on a new connection.
const sendTimeout = 3 * time.Second

// syncTimeout is how long verify waits for a login's SYNCED before it
// logs in again.
const syncTimeout = 10 * time.Second

// answered waits for the answer to d's SEND of cmid: true for its SENT;
// false after a retriable refusal, the connection's end, or sendTimeout
// without an answer, after which the SEND is resent on a new connection,
// as a client does (a gateway may have lost it with a node).
func (tr *procTraffic) answered(d *nodetest.Device, cmid uint64) bool {
	_, code, err := d.WaitAnswer(cmid, sendTimeout)
	switch {
	case err == nil && code == 0:
		return true
	case err == nil:
		tr.retry++
		tr.codes[code]++
	case errors.Is(err, nodetest.ErrConnectionEnded):
		tr.lost++
	default:
		tr.silent++
		tr.lost++
		d.Disconnect()
	}
	return false
}

// verify logs every device in again, and waits until every message SENT
// reached every device of its recipient and its sender's companion, each
// once and in order. A device whose SYNCED does not come within
// syncTimeout logs in again, as a client that times out does: a node
// that restarted may have lost its login, or its stream, on the way.
func (tr *procTraffic) verify() {
	t := tr.c.t
	t.Helper()
	for _, u := range tr.users {
		for j, d := range u.devices {
			deadline := time.Now().Add(60 * time.Second)
			for {
				d.Disconnect()
				tr.c.connect(u, j)
				err := d.WaitSyncedWithin(syncTimeout)
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%v: not synced after 60 s: %v", d, err)
				}
			}
		}
	}
	tr.rec.Settle()
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
	t.Logf("%d messages SENT across the kill; %d retriable refusals %v, %d connections ended under a SEND, %d SENDs unanswered for %v", tr.acked, tr.retry, tr.codes, tr.lost, tr.silent, sendTimeout)
	if tr.retry == 0 || tr.lost == 0 {
		t.Fatalf("the kill went unnoticed: %d retriable refusals, %d connections ended under a SEND", tr.retry, tr.lost)
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
	t.Logf("%d messages SENT across the rolling restart; %d retriable refusals %v, %d connections ended under a SEND, %d SENDs unanswered for %v", tr.acked, tr.retry, tr.codes, tr.lost, tr.silent, sendTimeout)
}
