package cluster

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// testLogger is where the tests' etcd, nodes and controllers log: nowhere,
// unless PARLEY_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("PARLEY_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// waitBound is the deadline of every wait for an event in these tests.
const waitBound = 20 * time.Second

// testEtcd starts a single-member etcd in a temporary directory with fast
// ticks, closed at the end of the test.
func testEtcd(t *testing.T) *Etcd {
	t.Helper()
	e, err := StartEtcd(testEtcdConfig(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

func testEtcdConfig(dir string) EtcdConfig {
	return EtcdConfig{Dir: dir, TickMs: 10, ElectionMs: 100, Logger: testLogger(), LogLevel: slog.LevelWarn}
}

// testClient returns a client of e, closed at the end of the test.
func testClient(t *testing.T, e *Etcd) *clientv3.Client {
	t.Helper()
	cli, err := e.Client(testLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// testCtx returns a context that ends at waitBound or with the test.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitBound)
	t.Cleanup(cancel)
	return ctx
}

// testWatcher returns a watcher of cli, closed at the end of the test.
func testWatcher(t *testing.T, cli *clientv3.Client) *Watcher {
	t.Helper()
	w, err := NewWatcher(WatcherConfig{Client: cli, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	return w
}

// waitState waits for a State that satisfies ok.
func waitState(t *testing.T, w *Watcher, what string, ok func(*State) bool) *State {
	t.Helper()
	st, err := w.WaitFor(testCtx(t), ok)
	if err != nil {
		t.Fatalf("waiting for %s: %v (last state %+v)", what, err, st)
	}
	return st
}

// events collects a node's keepalive events.
type events struct {
	ch chan nodeEvent
}

// newEvents buffers more events than a test lasts (5 renewals a second).
func newEvents() *events { return &events{ch: make(chan nodeEvent, 4096)} }

func (e *events) hook(ev nodeEvent) {
	select {
	case e.ch <- ev:
	default: // a test that does not read renewals must not stall the node
	}
}

// next waits for event want, skipping others.
func (e *events) next(t *testing.T, want nodeEvent) {
	t.Helper()
	deadline := time.NewTimer(waitBound)
	defer deadline.Stop()
	for {
		select {
		case ev := <-e.ch:
			if ev == want {
				return
			}
		case <-deadline.C:
			t.Fatalf("no node event %d within %v", want, waitBound)
		}
	}
}

// testNode joins node id with boot generation gen, closed at the end of the
// test unless the test closes it first.
func testNode(t *testing.T, cli *clientv3.Client, id uint32, mod func(*NodeConfig)) *Node {
	t.Helper()
	cfg := NodeConfig{
		Client: cli, Member: Member{ID: id, Client: "127.0.0.1:1", Link: "127.0.0.1:2", Gen: 1},
		LeaseTTL: 2 * time.Second, Margin: 500 * time.Millisecond, KeepAliveEvery: 200 * time.Millisecond,
		Logger: testLogger(),
	}
	if mod != nil {
		mod(&cfg)
	}
	n, err := Join(testCtx(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		select {
		case <-n.done:
			if n.watch != nil {
				n.watch.Close()
			}
		default:
			n.Close(context.Background())
		}
	})
	return n
}

// testController starts a controller, closed at the end of the test.
func testController(t *testing.T, cli *clientv3.Client, id uint32, mod func(*ControllerConfig)) *Controller {
	t.Helper()
	cfg := ControllerConfig{Client: cli, ID: id, SessionTTL: 2 * time.Second, Logger: testLogger()}
	if mod != nil {
		mod(&cfg)
	}
	c, err := StartController(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}
