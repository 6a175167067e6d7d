package loadtest

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parley-im/parley/internal/node"
)

var (
	flagChaosSeed  = flag.Int64("chaos.seed", 0, "seed of TestChaos (0: random, logged)")
	flagChaosKills = flag.Int("chaos.kills", 10, "faults in TestChaos")
)

// buildParleyd builds cmd/parleyd into a temporary directory and returns
// its path. A build that fails fails the test: the chaos test never
// skips for want of a binary.
func buildParleyd(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go") // go test puts its own go first in PATH
	if err != nil {
		t.Fatalf("build parleyd: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "parleyd")
	cmd := exec.Command(goTool, "build", "-o", bin, "github.com/parley-im/parley/cmd/parleyd")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build parleyd: %v\n%s", err, out)
	}
	return bin
}

// TestChaos is the chaos scenario in short: 10 faults (SIGKILL or
// SIGTERM) of a real parleyd with four shards under 1:1, group, companion
// and receipt traffic, and every acknowledged message checked on every
// device. -chaos.seed repeats a run's choices; -chaos.kills sets the
// faults.
func TestChaos(t *testing.T) {
	bin := buildParleyd(t)
	seed := *flagChaosSeed
	if seed == 0 {
		seed = time.Now().UnixNano()%(1<<53) + 1
	}
	t.Logf("seed %d (go test ./loadtest -run TestChaos -chaos.seed %d repeats its choices)", seed, seed)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var progress strings.Builder
	res, err := Run(ctx, Config{
		Scenario:     "chaos",
		Spawn:        true,
		Parleyd:      bin,
		Kills:        *flagChaosKills,
		Seed:         seed,
		DrainTimeout: 20 * time.Second,
		Progress:     &progress,
		Logger:       slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	logChaos(t, res, progress.String())
	if err != nil {
		t.Fatal(err)
	}
	c := res.Chaos
	if c == nil || !res.Passed || c.Violations != 0 {
		t.Fatalf("chaos result %+v", c)
	}
	if c.Kills+c.Restarts != *flagChaosKills {
		t.Errorf("%d SIGKILL + %d SIGTERM, want %d faults", c.Kills, c.Restarts, *flagChaosKills)
	}
	if c.Shards != 4 || slices.Contains(c.UsersPerShard, 0) || slices.ContainsFunc(c.GroupShards, func(n int) bool { return n < 2 }) {
		t.Errorf("users per shard %v, shards of groups %v: want every shard used and groups on several", c.UsersPerShard, c.GroupShards)
	}
	if c.Acknowledged == 0 || c.Delivered != c.DeliveriesExpected || c.GroupEvents == 0 || c.MembershipChanges == 0 ||
		c.ReadMarks == 0 || c.ReceiptsExpected == 0 || c.Devices <= 2*c.Users {
		t.Errorf("a run without the traffic it claims: %+v", c)
	}
}

// logChaos logs a chaos run's faults (the lines of progress about them,
// not the line a second) and its report, if there is one.
func logChaos(t *testing.T, res *Result, progress string) {
	t.Helper()
	if res == nil {
		return
	}
	var b strings.Builder
	for _, line := range strings.SplitAfter(progress, "\n") {
		if strings.Contains(line, "s fault ") || strings.HasPrefix(line, "chaos:") {
			b.WriteString(line)
		}
	}
	res.WriteText(&b)
	t.Logf("\n%s", b.String())
}

// testWriter sends log lines to the test's log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestChaosConfig: a chaos run needs a parleyd to kill, more than one
// shard, and one worker.
func TestChaosConfig(t *testing.T) {
	cfg := Config{Scenario: "chaos", SpawnShards: 1, Workers: 2, Kills: -1}
	cfg.setDefaults()
	err := cfg.validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"--parleyd", "2 or more", "one worker", "-1 kills"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q lacks %q", err, want)
		}
	}
	cfg = Config{Scenario: "chaos", Spawn: true, Parleyd: "parleyd", Kills: 4}
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.Connections != chaosConnections || cfg.SpawnShards != chaosShards || cfg.Duration != 9*time.Second {
		t.Errorf("defaults: %d connections, %d shards, %v", cfg.Connections, cfg.SpawnShards, cfg.Duration)
	}
}

// TestChaosPlan: users have two or three devices, go to the shards in
// turn, and each group starts with members on several shards.
func TestChaosPlan(t *testing.T) {
	p := planChaos(&Config{Connections: 41, SpawnShards: 4, Groups: 4, GroupSize: 6})
	total := 0
	for _, n := range p.devices {
		if n < 2 || n > 3 {
			t.Fatalf("devices %v", p.devices)
		}
		total += n
	}
	if total != 41 || p.check() != nil {
		t.Fatalf("devices %v (%d), check %v", p.devices, total, p.check())
	}
	for g := range p.groups {
		shards := map[int]bool{}
		for _, i := range p.initial(g) {
			shards[p.shardOfUser(i)] = true
		}
		if len(shards) != 4 || p.initial(g)[0] != p.creator(g) {
			t.Errorf("group %d: members %v on %d shards", g, p.initial(g), len(shards))
		}
	}
}

// TestPlanFaults: the same seed gives the same faults, in time order,
// inside the traffic, of both kinds.
func TestPlanFaults(t *testing.T) {
	a, b := planFaults(42, 200, time.Minute), planFaults(42, 200, time.Minute)
	if !slices.Equal(a, b) || slices.Equal(a, planFaults(43, 200, time.Minute)) {
		t.Fatal("plans do not follow the seed")
	}
	graceful := 0
	for i, f := range a {
		if f.At < time.Second || f.At >= time.Minute-2*time.Second || (i > 0 && f.At < a[i-1].At) {
			t.Fatalf("fault %d at %v", i, f.At)
		}
		if f.Graceful {
			graceful++
		}
	}
	if graceful < 30 || graceful > 90 {
		t.Errorf("%d of 200 graceful, want about %d", graceful, int(200*gracefulShare))
	}
}

// TestShardOf: the loadtest places users and groups on the shards the
// node's router gives them.
func TestShardOf(t *testing.T) {
	n, err := node.Start(node.Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0", MediaAddr: "off", Shards: 4,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown(context.Background())
	r := n.Router()
	for u := uint64(1); u < 1<<16; u += 7 {
		if got, want := shardOf(u, 4), int(r.ShardOf(u)); got != want {
			t.Fatalf("id %d: shard %d, router says %d", u, got, want)
		}
	}
	for i := range 1000 {
		p := fmt.Sprintf("+1999%07d", i)
		if got, want := shardOfPhone(p, 4), int(r.ShardOfPhone(p)); got != want {
			t.Fatalf("phone %s: shard %d, router says %d", p, got, want)
		}
	}
}

// TestLogFields reads parleyd's ready line.
func TestLogFields(t *testing.T) {
	f := logFields(`time=2026-12-04T21:18:49.073Z level=INFO msg="parleyd ready" addr=127.0.0.1:44927 data="/tmp/a b" shards=4 fingerprint=c6dd admin=127.0.0.1:45891`)
	want := map[string]string{"level": "INFO", "msg": "parleyd ready", "addr": "127.0.0.1:44927", "data": "/tmp/a b", "fingerprint": "c6dd", "admin": "127.0.0.1:45891"}
	for k, v := range want {
		if f[k] != v {
			t.Errorf("%s = %q, want %q", k, f[k], v)
		}
	}
	if f := logFields("panic: boom"); len(f) != 0 {
		t.Errorf("a panic line parsed as %v", f)
	}
}
