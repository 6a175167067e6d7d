// Command parley-load is Parley's load tester: it drives a node with
// thousands of TLS clients from worker processes on 127.0.0.2, .3, …,
// verifies every delivery end to end and reports throughput, latency and
// the server's memory and CPU. It exits 1 when any message was lost,
// duplicated, reordered or skipped, 2 on bad arguments or a failed run.
//
//	parley-load --spawn --scenario pairs
//	parley-load --spawn-cluster 3 --parleyd ./parleyd --scenario pairs
//	parley-load --addr 127.0.0.1:5222 --fingerprint HEX --admin 127.0.0.1:9222 --scenario idle --conns 19000
//
// The node must be started with test phone numbers:
// parleyd --test-phone-prefix +1999 --test-code 000000.
//
// -help lists the flags and explains the report's figures (the latency
// "uncorrected" for coordinated omission, "ops/commit", "skipped", …);
// --html FILE writes the report with charts and the same explanations,
// and says "wrote FILE".
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/parley-im/parley/loadtest"
)

func main() {
	if ran, code := loadtest.RunChild(); ran {
		os.Exit(code)
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("parley-load", flag.ContinueOnError)
	var cfg loadtest.Config
	var scenarios []string
	for _, s := range loadtest.Scenarios {
		scenarios = append(scenarios, fmt.Sprintf("%s (%s)", s.Name, s.Summary))
	}
	fs.StringVar(&cfg.Scenario, "scenario", "pairs", "`name`: "+strings.Join(scenarios, "; "))
	fs.BoolVar(&cfg.Spawn, "spawn", false, "start a node on loopback for the run (fresh data, removed after)")
	fs.StringVar(&cfg.Addr, "addr", "127.0.0.1:5222", "node client `address`")
	fs.StringVar(&cfg.Fingerprint, "fingerprint", os.Getenv("PARLEY_FINGERPRINT"), "node certificate SHA-256 `hex` (parleyd prints it)")
	fs.StringVar(&cfg.Admin, "admin", "127.0.0.1:9222", "node admin `address` for server memory and CPU (\"\": none)")
	fs.IntVar(&cfg.SpawnShards, "shards", 0, "shards of the spawned node (0: the node's default, one per CPU; chaos: 4)")
	fs.IntVar(&cfg.SpawnLoops, "loops", 0, "event loops of the spawned node (0: GOMAXPROCS)")
	fs.BoolVar(&cfg.Resume, "resume", false, "devices keep TLS session tickets and resume on reconnect (default: a full handshake every time)")
	fs.BoolVar(&cfg.SpawnNoSync, "nosync", false, "spawned node commits without fsync (benchmarks everything but the disk)")
	fs.DurationVar(&cfg.SpawnSyncWait, "sync-wait", 0, "spawned node's adaptive group commit wait before an fsync, taken when more than one promise waits or ops are in hand (0: the node's default, 50µs; -1ns: never wait)")
	fs.IntVar(&cfg.SpawnCluster, "spawn-cluster", 0, "start a local cluster of `N` parleyd nodes (--parleyd) with an etcd inside parley-load for the run, fresh data removed after, and spread the devices over the nodes round robin by account; it prints the nodes' addresses (--scenario idle --hold 10m keeps it up to try)")
	fs.StringVar(&cfg.Parleyd, "parleyd", "", "spawn this parleyd `binary` instead of a node inside parley-load (chaos needs it)")
	fs.IntVar(&cfg.Kills, "kills", 0, "chaos: kill (SIGKILL) or restart (SIGTERM) the node this many times during the traffic")
	fs.IntVar(&cfg.Partitions, "partitions", 0, "chaos on --spawn-cluster: cut a node off from etcd and the other nodes (its clients keep their connections) this many times, each for --partition-for")
	fs.DurationVar(&cfg.PartitionFor, "partition-for", 0, "chaos: how long a partition lasts (default 4s, twice the spawned nodes' lease TTL)")
	fs.IntVar(&cfg.EtcdRestarts, "etcd-restarts", 0, "chaos on --spawn-cluster: stop the cluster's etcd this many times and start it again on its data and ports --etcd-down-for later")
	fs.DurationVar(&cfg.EtcdDownFor, "etcd-down-for", 0, "chaos: how long etcd stays down at a restart (default 4s, twice the spawned nodes' lease TTL)")
	fs.Int64Var(&cfg.Seed, "seed", 0, "chaos: seed of the run's choices, faults included (0: random, printed)")
	fs.StringVar(&cfg.PhonePrefix, "phone-prefix", "+1999", "node's test phone `prefix`")
	fs.StringVar(&cfg.TestCode, "test-code", "000000", "node's test verification `code`")
	fs.IntVar(&cfg.Connections, "conns", 0, "connections: one account each (default 1000); chaos: devices, 2 or 3 per account (default 40)")
	fs.DurationVar(&cfg.Duration, "duration", 0, "traffic duration (default 10s; chaos: 1.5s per kill, partition-for + 1.5s per partition, etcd-down-for + 1.5s per etcd restart, + 3s)")
	fs.DurationVar(&cfg.Warmup, "warmup", 0, "start of the traffic left out of the figures (default 1s)")
	fs.IntVar(&cfg.Rate, "rate", 0, "total messages per second (0: flat out; chaos: actions per second, default 100)")
	fs.IntVar(&cfg.InFlight, "inflight", 0, "unanswered sends per device (default 10)")
	fs.IntVar(&cfg.MessageSize, "size", 0, "message body `bytes`, at least 20 (default 20)")
	fs.DurationVar(&cfg.AckDelay, "ack-delay", 0, "longest wait before a cumulative ack, as the SDK's (default 50ms; -1ns: ack every read)")
	fs.DurationVar(&cfg.LazyAckDelay, "lazy-ack-delay", 0, "longest wait before an ack that covers no 1:1 message from another user (receipts, group messages), as the SDK's (default 1s; -1ns: as --ack-delay)")
	fs.IntVar(&cfg.Devices, "devices", 0, "envelopes, groups, group-envelopes: devices per user, a primary and linked companions, 1 to 5 (default 1)")
	fs.IntVar(&cfg.Groups, "groups", 0, "groups, group-envelopes, chaos: how many groups (default 1; chaos 4)")
	fs.IntVar(&cfg.GroupSize, "group-size", 0, "groups, group-envelopes: members per group, 2 to 1024 (default 1024, at most --conns); chaos: members at creation (default 6)")
	fs.IntVar(&cfg.GroupSenders, "group-senders", 0, "groups, group-envelopes: members of each group that send to it (default 1)")
	fs.IntVar(&cfg.MediaSize, "media-size", 0, "media: file `bytes` (default 1 MiB)")
	fs.IntVar(&cfg.MediaCount, "media-count", 0, "media: most files per uploading device (default 100000; --duration ends it first)")
	fs.IntVar(&cfg.Queue, "queue", 0, "offline: messages queued per user (default 100)")
	fs.DurationVar(&cfg.ChurnLife, "churn-life", 0, "churn: mean connection lifetime (default 5s)")
	fs.DurationVar(&cfg.IdleSettle, "idle-settle", 0, "idle: wait before reading server memory (default 12s)")
	fs.DurationVar(&cfg.Hold, "hold", 0, "idle: keep the connections this long after measuring")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", 0, "wait for in-flight messages after traffic (default 30s)")
	fs.IntVar(&cfg.PerWorker, "per-worker", 0, "most connections per worker process (default 8000)")
	fs.IntVar(&cfg.Workers, "workers", 0, "worker processes (0: as many as --per-worker needs)")
	fs.StringVar(&cfg.ProfileDir, "profile-workers", "", "write each worker's CPU profile to `dir`/worker-N.pprof (dir made if missing)")
	fs.IntVar(&cfg.InjectDuplicate, "inject-duplicate", 0, "fault injection: count every `N`th delivery twice (the run must fail)")
	jsonOut := fs.Bool("json", false, "print the result as one JSON object on stdout")
	htmlFile := fs.String("html", "", "write an HTML report charting rate and latency to `file`")
	quiet := fs.Bool("quiet", false, "no progress lines")
	verbose := fs.Bool("v", false, "log steps")
	fs.SetOutput(io.Discard) // the errors are said once, below
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) { // asked for: on stdout, and no failure
			fs.SetOutput(stdout)
			usage(fs)
			return 0
		}
		fmt.Fprintf(stderr, "parley-load: %v (parley-load -help lists the flags)\n", err)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "parley-load: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if cfg.SpawnCluster > 0 {
		cfg.Spawn = true
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if !*quiet {
		cfg.Progress = stderr
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := loadtest.Run(ctx, cfg)
	if res != nil {
		report(res, *jsonOut, *htmlFile, stdout, stderr)
	}
	switch {
	case errors.Is(err, loadtest.ErrVerification):
		fmt.Fprintln(stderr, "parley-load:", err)
		return 1
	case err != nil:
		fmt.Fprintln(stderr, "parley-load:", err)
		return 2
	}
	return 0
}

// report writes the result: as text or JSON on stdout, and as an HTML
// page to htmlFile if it is not "", saying so on stderr.
func report(res *loadtest.Result, asJSON bool, htmlFile string, stdout, stderr io.Writer) {
	if asJSON {
		b, _ := json.Marshal(res)
		fmt.Fprintln(stdout, string(b))
	} else {
		res.WriteText(stdout)
	}
	if htmlFile != "" {
		if err := writeHTML(htmlFile, res); err != nil {
			fmt.Fprintln(stderr, "parley-load:", err)
		} else {
			fmt.Fprintf(stderr, "wrote %s\n", htmlFile)
		}
	}
}

// usage writes what -help shows: the flags, then what the report's
// figures mean.
func usage(fs *flag.FlagSet) {
	w := fs.Output()
	fmt.Fprintln(w, "Usage: parley-load [flags]   (parley-load --spawn --scenario pairs runs against a node of its own)")
	fmt.Fprintln(w)
	fs.PrintDefaults()
	fmt.Fprintln(w, "\nThe report:")
	for _, g := range loadtest.Glossary {
		fmt.Fprintf(w, "  %s\n", g.Term)
		for _, l := range wrap(g.Meaning, 72) {
			fmt.Fprintf(w, "      %s\n", l)
		}
	}
}

// wrap breaks s into lines of at most width bytes, between words.
func wrap(s string, width int) []string {
	var lines []string
	line := ""
	for _, word := range strings.Fields(s) {
		if line != "" && len(line)+1+len(word) > width {
			lines = append(lines, line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += word
	}
	return append(lines, line)
}

func writeHTML(name string, res *loadtest.Result) error {
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	if err := res.WriteHTML(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
