package loadtest

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestSyncWaitArgs: a spawned parleyd gets --sync-wait only when the run
// sets one, and "never wait" (negative here) is parleyd's 0.
func TestSyncWaitArgs(t *testing.T) {
	for _, tc := range []struct {
		w    time.Duration
		want []string
	}{
		{0, nil},
		{-1, []string{"--sync-wait", "0s"}},
		{200 * time.Microsecond, []string{"--sync-wait", "200µs"}},
	} {
		if got := syncWaitArgs(tc.w); !slices.Equal(got, tc.want) {
			t.Errorf("syncWaitArgs(%v) = %q, want %q", tc.w, got, tc.want)
		}
	}
}

// TestSpawnCluster runs the pairs scenario on a spawned 3-node cluster of
// real parleyd processes: every device's account is on one of the nodes
// round robin, so each pair's two devices are on different nodes and
// every message crosses a node link; nothing may be lost, duplicated or
// reordered, and every node must have served its third of the devices.
func TestSpawnCluster(t *testing.T) {
	bin := buildParleyd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const conns, nodes = 30, 3
	res, err := Run(ctx, Config{
		Scenario:     "pairs",
		Spawn:        true,
		Parleyd:      bin,
		SpawnCluster: nodes,
		Connections:  conns,
		Duration:     2 * time.Second,
		Warmup:       -1,
		Rate:         300,
		DrainTimeout: 30 * time.Second,
		Logger:       slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if res != nil {
		var b strings.Builder
		res.WriteText(&b)
		t.Logf("\n%s", b.String())
	}
	if err != nil {
		t.Fatal(err)
	}
	if !res.Passed || res.Lost != 0 || res.Duplicated != 0 || res.Reordered != 0 || res.MessagesDelivered == 0 ||
		res.MessagesDelivered != res.MessagesSent {
		t.Fatalf("sent %d, delivered %d, lost %d, duplicated %d, reordered %d",
			res.MessagesSent, res.MessagesDelivered, res.Lost, res.Duplicated, res.Reordered)
	}
	if n := res.Counters.Unanswered; n != 0 {
		t.Fatalf("%d sends never answered", n)
	}
	if len(res.ClusterAccepted) != nodes {
		t.Fatalf("connections accepted per node %v, want %d nodes", res.ClusterAccepted, nodes)
	}
	for i, n := range res.ClusterAccepted {
		if n < conns/nodes { // registration and the devices' own connections
			t.Errorf("node %d accepted %d client connections, want at least its %d devices", i+1, n, conns/nodes)
		}
	}
}

// TestFaultNodes: a cluster chaos run's faults strike nodes drawn from
// the seed (the same seed the same nodes), every node of three among
// twenty faults, and a single node's plan draws none.
func TestFaultNodes(t *testing.T) {
	if got := faultNodes(7, 20, 1); got != nil {
		t.Fatalf("one node: %v, want none", got)
	}
	a, b := faultNodes(7, 20, 3), faultNodes(7, 20, 3)
	if !slices.Equal(a, b) {
		t.Fatalf("seed 7 drew %v, then %v", a, b)
	}
	seen := map[int]bool{}
	for _, n := range a {
		if n < 0 || n >= 3 {
			t.Fatalf("node index %d of 3", n)
		}
		seen[n] = true
	}
	if len(seen) != 3 {
		t.Fatalf("20 faults struck nodes %v, want all three", a)
	}
}
