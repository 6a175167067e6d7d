package node

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*poolCommon).purgeStaleWorkers"),
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*poolCommon).ticktock"),
		// Its idle workers (server.Server hands each accepted connection to a
		// loop through it) exit 10 s after their last task.
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*goWorker).run.func1"),
	)
}

func start(t *testing.T, dir string, shards int) (*Node, error) {
	t.Helper()
	return Start(Config{DataDir: dir, Listen: "127.0.0.1:0", Shards: shards, MediaAddr: "off", Logger: slog.New(slog.DiscardHandler)})
}

func stop(t *testing.T, n *Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestShardCountIsFixed: slots map to shards by the count, so a data
// directory keeps the count it was created with.
func TestShardCountIsFixed(t *testing.T) {
	dir := t.TempDir()
	n, err := start(t, dir, 3)
	if err != nil {
		t.Fatal(err)
	}
	stop(t, n)
	n, err = start(t, dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(n.Shards()); got != 3 {
		t.Fatalf("restart with the default: %d shards, want the 3 created", got)
	}
	stop(t, n)
	if _, err := start(t, dir, 2); err == nil || !strings.Contains(err.Error(), "holds 3 shards, not 2") {
		t.Fatalf("restart with 2 shards: %v, want a refusal", err)
	}
}
