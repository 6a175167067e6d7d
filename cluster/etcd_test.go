package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestEtcdThreeMembers: a 3-member embedded etcd keeps serving the
// cluster's keys with one member stopped, and the stopped member rejoins
// from its data directory.
func TestEtcdThreeMembers(t *testing.T) {
	dir := t.TempDir()
	cfgs := make([]EtcdConfig, 3)
	peers := map[string]string{}
	for i := range cfgs {
		c := testEtcdConfig(filepath.Join(dir, fmt.Sprint(i)))
		c.Name = fmt.Sprintf("m%d", i)
		c.TickMs, c.ElectionMs = 50, 1000 // three members on two shared cores, under -race
		var err error
		if c.ClientAddr, err = FreeAddr(); err != nil {
			t.Fatal(err)
		}
		if c.PeerAddr, err = FreeAddr(); err != nil {
			t.Fatal(err)
		}
		peers[c.Name] = c.PeerAddr
		cfgs[i] = c
	}
	members := make([]*Etcd, 3)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i := range cfgs { // each waits for a quorum: start them together
		cfgs[i].Peers = peers
		wg.Go(func() { members[i], errs[i] = StartEtcd(cfgs[i]) })
	}
	wg.Wait()
	var endpoints []string
	for i, m := range members {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		endpoints = append(endpoints, m.Endpoints()...)
	}
	stopped := false
	t.Cleanup(func() { // after the client: Close waits for its streams
		for i, m := range members {
			if i != 2 || !stopped {
				m.Close()
			}
		}
	})
	cli, err := NewClient(endpoints, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	if err := Create(testCtx(t), cli, "", 2); err != nil {
		t.Fatal(err)
	}
	testController(t, cli, 1, nil)
	w := testWatcher(t, cli)
	testNode(t, cli, 1, nil)
	waitState(t, w, "all shards placed", (*State).AllPlaced)

	members[2].Close()
	stopped = true
	testNode(t, cli, 2, nil)
	if err := RequestMove(testCtx(t), cli, "", 0, 2); err != nil {
		t.Fatal(err)
	}
	st := waitState(t, w, "node 2 live, the move pending", func(st *State) bool { return st.Live(2) && st.Moves[0] == 2 })
	if st.Owner(0).Node != 1 {
		t.Fatalf("shard 0 on node %d", st.Owner(0).Node)
	}

	cfgs[2].Peers = nil // a member with data restarts from it
	if members[2], err = StartEtcd(cfgs[2]); err != nil {
		t.Fatal(err)
	}
	stopped = false
	one, err := members[2].Client(testLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = one.Close() }()
	// A linearizable read through the restarted member: it has caught up
	// with what was written while it was down.
	resp, err := one.Get(testCtx(t), keys{DefaultPrefix}.node(2))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 {
		t.Fatal("the restarted member does not see node 2")
	}
}

// TestEtcdPortTaken: a port StartEtcd chose, and another process took
// before etcd bound it, is chosen again: the client port at the first
// start, the peer port at the second; the member then serves. A port the
// caller named is not chosen again: StartEtcd fails.
func TestEtcdPortTaken(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	c := testEtcdConfig(t.TempDir())
	calls := 0
	c.freeAddr = func() (string, error) {
		calls++ // client, peer; client, peer; …
		if calls == 1 || calls == 4 {
			return taken.Addr().String(), nil
		}
		return FreeAddr()
	}
	e, err := StartEtcd(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close) // after the client's
	if calls != 6 || e.ClientAddr() == taken.Addr().String() || e.PeerAddr() == taken.Addr().String() {
		t.Fatalf("%d ports chosen, client %s, peer %s; want 6, neither %s", calls, e.ClientAddr(), e.PeerAddr(), taken.Addr())
	}
	if _, err := testClient(t, e).Put(testCtx(t), "k", "v"); err != nil {
		t.Fatal(err)
	}

	c = testEtcdConfig(t.TempDir())
	c.ClientAddr = taken.Addr().String()
	if e, err := StartEtcd(c); !errors.Is(err, syscall.EADDRINUSE) {
		if err == nil {
			e.Close()
		}
		t.Fatalf("StartEtcd on a taken ClientAddr: %v, want address in use", err)
	}
}

// TestEtcdLogs: etcd's zap logs reach the injected slog logger at the
// configured level, tagged component=etcd.
func TestEtcdLogs(t *testing.T) {
	h := &recordHandler{store: &recordStore{}}
	c := testEtcdConfig(t.TempDir())
	c.Logger, c.LogLevel = slog.New(h), slog.LevelInfo
	e, err := StartEtcd(c)
	if err != nil {
		t.Fatal(err)
	}
	e.Close()
	h.store.mu.Lock()
	defer h.store.mu.Unlock()
	if len(h.store.records) == 0 {
		t.Fatal("no etcd logs at info")
	}
	for _, r := range h.store.records {
		if r.Level < slog.LevelInfo {
			t.Fatalf("a %v record below the level: %s", r.Level, r.Message)
		}
		found := false
		r.Attrs(func(a slog.Attr) bool {
			found = found || a.Key == "component" && a.Value.String() == "etcd"
			return true
		})
		if !found {
			t.Fatalf("record %q without component=etcd", r.Message)
		}
	}
}

// recordHandler keeps every record in its store.
type recordHandler struct {
	store *recordStore
	attrs []slog.Attr
}

type recordStore struct {
	mu      sync.Mutex
	records []slog.Record // guarded by mu
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	r = r.Clone()
	r.AddAttrs(h.attrs...)
	h.store.mu.Lock()
	h.store.records = append(h.store.records, r)
	h.store.mu.Unlock()
	return nil
}

func (h *recordHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &recordHandler{store: h.store, attrs: append(append([]slog.Attr(nil), h.attrs...), as...)}
}

func (h *recordHandler) WithGroup(string) slog.Handler { return h }

// BenchmarkStartEtcd measures starting a single-member embedded etcd in a
// new directory with etcd's default ticks until it serves (ms-to-ready),
// and closing it (ns/op covers both).
func BenchmarkStartEtcd(b *testing.B) {
	var ready time.Duration
	for b.Loop() {
		start := time.Now()
		e, err := StartEtcd(EtcdConfig{Dir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		ready += time.Since(start)
		e.Close()
	}
	b.ReportMetric(float64(ready.Microseconds())/1000/float64(b.N), "ms-to-ready")
}
