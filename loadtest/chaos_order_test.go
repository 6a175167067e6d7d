package loadtest

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parley-im/parley/client"
	"github.com/parley-im/parley/internal/node"
	"github.com/parley-im/parley/internal/nodetest"
	"github.com/parley-im/parley/protocol/pb"
)

// TestChaosOrderBehindARefusal is the guard TestSpawnClusterChaos's
// reorder check lacks: its short run never has a later SEND of a
// conversation in flight when an earlier one is refused, so it stays
// green with the barriers ([S-8-13]) gone. Here the chaos run's own parts
// meet that case once, on a node in this process: the SDK client that
// chaos devices use, and the chaos verifier as the checker. Alice (shard
// 0) sends S1 to bob (shard 1, offline) while every shard's fence is
// closed: bob's shard refuses it, SHARD_UNAVAILABLE, and holds the
// conversation back. Alice's client does not read the refusal yet (its
// connection's reads wait), so it writes S2 too, which reaches bob's
// shard once the fence is open again: the barrier refuses it. Both are
// resent in order after the refusal's delay (1 s), and bob's devices and
// alice's copies must hold S1 before S2: the verifier reports no
// reorder, and bob's shard counts S2 held back. With the shard's barrier
// removed, S2 is stored before S1's retry and the verifier reports it.
func TestChaosOrderBehindARefusal(t *testing.T) {
	var fenced atomic.Bool
	n := nodetest.Start(t, func(c *node.Config) {
		c.MediaAddr = "off"
		c.Storage.Fence = func() bool { return !fenced.Load() }
	})
	alice, bob := n.RegisterOn(t, 0), n.RegisterOn(t, 1)
	bobShard := n.Shards()[n.Router().ShardOf(bob.ID)]
	ver := newChaosVerifier()
	ctx, cancel := context.WithCancel(context.Background())
	var running sync.WaitGroup
	defer running.Wait()
	defer cancel()
	gate := &readGate{}
	defer gate.resume() // a failed wait must not leave a client's reads held
	cfg := client.Config{
		Addr: n.Addr().String(), Fingerprint: n.Fingerprint(), DialTimeout: nodetest.Timeout,
		BackoffMin: 10 * time.Millisecond, BackoffMax: 100 * time.Millisecond, Logger: nodetest.Logger(t),
	}
	start := func(creds client.Credentials, dial func(context.Context, string, string) (net.Conn, error)) (*client.Client, <-chan struct{}) {
		t.Helper()
		ver.addDevice(creds.User, creds.Device)
		key := chaosDevKey{creds.User, creds.Device}
		synced := make(chan struct{})
		var once sync.Once
		c := cfg
		c.Dial = dial
		c.OnEvent = func(ev client.Event) {
			ver.record(key, ev)
			if _, ok := ev.(client.Synced); ok {
				once.Do(func() { close(synced) })
			}
		}
		cl, err := client.New(c, creds, client.NewMemoryStore())
		if err != nil {
			t.Fatal(err)
		}
		running.Go(func() {
			if err := cl.Run(ctx); err != nil && !errors.Is(err, client.ErrClosed) && ctx.Err() == nil {
				t.Errorf("client of user %d: %v", creds.User, err)
			}
		})
		return cl, synced
	}
	within := func(what string, done <-chan struct{}) {
		t.Helper()
		select {
		case <-done:
		case <-time.After(nodetest.Timeout):
			t.Fatalf("timed out waiting for %s", what)
		}
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(nodetest.Timeout)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(time.Millisecond)
		}
	}

	ac, synced := start(client.Credentials{User: alice.ID, Device: alice.Device, Secret: alice.Cred}, gate.dial)
	within("alice's Synced", synced)
	// A companion: a 1:1 message is copied to every device of its sender
	// when it has more than one ([S-8-17]), and the copies keep the order.
	link, err := client.RequestLink(ctx, cfg, "companion")
	if err != nil {
		t.Fatal(err)
	}
	if err := ac.ApproveLink(ctx, link.Code); err != nil {
		t.Fatal(err)
	}
	companion, err := link.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, synced = start(companion, nil)
	within("the companion's Synced", synced)
	var answered sync.WaitGroup
	send := func(n uint64) {
		t.Helper()
		k := chaosSendKey{User: alice.ID, Device: alice.Device, N: n}
		ver.sendStarted(k, bob.ID, 0)
		answered.Add(1)
		cmid, err := ac.SendAsync(bob.ID, appendChaosBody(nil, k), pb.ContentType_CONTENT_TEXT, func(s client.Sent, err error) {
			ver.sendDone(k, s, err)
			answered.Done()
		})
		if err != nil {
			t.Fatal(err)
		}
		ver.sendCMID(k, cmid)
	}

	gate.pause() // alice's client reads nothing until S2 is on bob's shard
	fenced.Store(true)
	send(1)
	waitFor("bob's shard to refuse S1", func() bool { return bobShard.FencedOps() >= 1 })
	fenced.Store(false)
	applied := bobShard.Stats().Ops
	send(2)
	waitFor("bob's shard to apply S2", func() bool { return bobShard.Stats().Ops > applied })
	gate.resume()
	bothAnswered := make(chan struct{})
	go func() { answered.Wait(); close(bothAnswered) }()
	within("both answers (resent after the refusal's delay)", bothAnswered)

	_, synced = start(client.Credentials{User: bob.ID, Device: bob.Device, Secret: bob.Cred}, nil)
	within("bob's Synced", synced)
	var chk chaosCheck
	waitFor("every delivery (alice's copies come from bob's shard)", func() bool {
		chk = ver.check(false)
		return chk.delivered == chk.expected || chk.total() != 0
	})
	if chk.acked != 2 || chk.delivered != chk.expected || chk.total() != 0 {
		t.Fatalf("%d of 2 sends acknowledged, %d of %d deliveries made, violations %v: %v", chk.acked, chk.delivered, chk.expected, chk.counts, chk.examples)
	}
	if held := bobShard.HeldSends(); held != 1 {
		t.Errorf("bob's shard held %d sends back, want S2: the case this test is for did not happen", held)
	}
}

// readGate holds back what a client reads from the connections it
// dialled while paused: a Read that returns meanwhile returns only once
// the gate is open again.
type readGate struct {
	mu   sync.Mutex
	open chan struct{} // while paused: closed by resume; nil while open
}

// pause holds reads back until resume.
func (g *readGate) pause() {
	g.mu.Lock()
	g.open = make(chan struct{})
	g.mu.Unlock()
}

// resume opens the gate, if paused.
func (g *readGate) resume() {
	g.mu.Lock()
	if g.open != nil {
		close(g.open)
		g.open = nil
	}
	g.mu.Unlock()
}

// wait returns once the gate is open.
func (g *readGate) wait() {
	g.mu.Lock()
	open := g.open
	g.mu.Unlock()
	if open != nil {
		<-open
	}
}

func (g *readGate) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return gatedConn{c, g}, nil
}

// gatedConn is a connection whose reads wait for its gate.
type gatedConn struct {
	net.Conn
	g *readGate
}

func (c gatedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.g.wait()
	return n, err
}
