package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"syscall"
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

// TestDataDirInUse: a second node on a data directory stops at once and
// names the directory and the first node's process, instead of failing
// on a shard's lock; once the first stops, the directory is free.
func TestDataDirInUse(t *testing.T) {
	dir := t.TempDir()
	n, err := start(t, dir, 1)
	if err != nil {
		t.Fatal(err)
	}
	_, err = start(t, dir, 1)
	var inUse *DataDirInUseError
	if !errors.As(err, &inUse) || !errors.Is(err, ErrDataDirInUse) || inUse.PID != os.Getpid() ||
		err.Error() != fmt.Sprintf("node: the data directory %s is in use by another parleyd (pid %d)", dir, os.Getpid()) {
		t.Fatalf("second node on %s: %v", dir, err)
	}
	stop(t, n)
	n, err = start(t, dir, 1)
	if err != nil {
		t.Fatalf("after the first stopped: %v", err)
	}
	stop(t, n)
}

// TestListenerInUse: an address another program listens on is named,
// with the listener that wanted it.
func TestListenerInUse(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	addr := busy.Addr().String()
	for _, tt := range []struct {
		listener string
		cfg      Config
	}{
		{"client", Config{Listen: addr, MediaAddr: "off"}},
		{"media", Config{Listen: "127.0.0.1:0", MediaAddr: addr}},
		{"admin", Config{Listen: "127.0.0.1:0", MediaAddr: "off", AdminAddr: addr}},
	} {
		cfg := tt.cfg
		cfg.DataDir, cfg.Shards, cfg.Logger = t.TempDir(), 1, slog.New(slog.DiscardHandler)
		n, err := Start(cfg)
		if err == nil {
			stop(t, n)
			t.Errorf("%s listener on a busy address: started", tt.listener)
			continue
		}
		var le *ListenError
		want := "node: the " + tt.listener + " address " + addr + " is in use by another program (another parleyd?)"
		if !errors.As(err, &le) || le.Listener != tt.listener || !errors.Is(err, syscall.EADDRINUSE) || err.Error() != want {
			t.Errorf("%s listener on a busy address: %v, want %q", tt.listener, err, want)
		}
		// Nothing is left held: the same directory starts.
		cfg.Listen, cfg.MediaAddr, cfg.AdminAddr = "127.0.0.1:0", "off", ""
		n, err = Start(cfg)
		if err != nil {
			t.Fatalf("%s: restart after the failure: %v", tt.listener, err)
		}
		stop(t, n)
	}
}
