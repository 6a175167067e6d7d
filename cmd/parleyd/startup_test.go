package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/parley-im/parley/internal/node"
)

// parleydFails runs parleyd with args as a child process, expecting it to
// fail at start, and returns what it printed.
func parleydFails(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env = append(os.Environ(), "PARLEYD_TEST_AS_MAIN=1")
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("parleyd %s: %v, want exit status 1\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestStartupErrors: a data directory another parleyd holds, and an
// address another program listens on, are said plainly, with the flag
// that chooses another.
func TestStartupErrors(t *testing.T) {
	dir := t.TempDir()
	n, err := node.Start(node.Config{DataDir: dir, Listen: "127.0.0.1:0", Shards: 1, MediaAddr: "off", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown(context.Background())
	out := parleydFails(t, "--data", dir, "--listen", "127.0.0.1:0", "--media-listen", "", "--admin", "")
	want := fmt.Sprintf("parleyd: node: the data directory %s is in use by another parleyd (pid %d); stop it first, or choose another directory with --data\n", dir, os.Getpid())
	if !strings.HasSuffix(out, want) {
		t.Errorf("second parleyd on one data directory printed:\n%s\nwant it to end with:\n%s", out, want)
	}

	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	addr := busy.Addr().String()
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--listen", addr, "--media-listen", "", "--admin", ""}, "the client address " + addr + " is in use by another program (another parleyd?); choose another address with --listen"},
		{[]string{"--listen", "127.0.0.1:0", "--media-listen", addr, "--admin", ""}, "the media address " + addr + " is in use by another program (another parleyd?); choose another address with --media-listen"},
		{[]string{"--listen", "127.0.0.1:0", "--media-listen", "", "--admin", addr}, "the admin address " + addr + " is in use by another program (another parleyd?); choose another address with --admin"},
	} {
		out := parleydFails(t, append([]string{"--data", t.TempDir(), "--shards", "1"}, tt.args...)...)
		if want := "parleyd: node: " + tt.want + "\n"; !strings.HasSuffix(out, want) {
			t.Errorf("busy address printed:\n%s\nwant it to end with:\n%s", out, want)
		}
	}
}
