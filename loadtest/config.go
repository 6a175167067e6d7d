package loadtest

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/parley-im/parley/protocol"
)

// Config configures a run. The zero value of each optional field means its
// default; Scenario and either Spawn or Addr and Fingerprint are required.
type Config struct {
	// Scenario is the name of a scenario in Scenarios.
	Scenario string `json:"scenario"`

	// Addr is the node's client address, host:port. Ignored with Spawn.
	Addr string `json:"addr"`
	// Fingerprint is the hex SHA-256 of the node's certificate (parleyd
	// prints it at start). Ignored with Spawn.
	Fingerprint string `json:"fingerprint"`
	// Admin is the node's admin endpoint, host:port, where the server's
	// memory and CPU are read; "" leaves those figures out. Ignored with
	// Spawn.
	Admin string `json:"admin"`
	// Spawn starts a node in a child process on loopback for the run,
	// with a fresh data directory that is removed afterwards.
	Spawn bool `json:"spawn"`
	// SpawnShards is the spawned node's shard count; 0 is the node's
	// default (one per CPU, internal/node).
	SpawnShards int `json:"spawn_shards"`
	// SpawnLoops is the spawned node's event-loop count; 0 is the
	// server's default (GOMAXPROCS).
	SpawnLoops int `json:"spawn_loops"`
	// Resume makes each device keep the TLS session tickets it is sent and
	// resume its session when it reconnects (spec.md [S-5-2]), as the SDK
	// does; false makes every connection a full handshake.
	Resume bool `json:"resume"`
	// SpawnNoSync commits without fsync in the spawned node: a benchmark
	// of everything but the disk. Never what a deployment runs.
	SpawnNoSync bool `json:"spawn_nosync"`
	// SpawnSyncWait is the spawned node's adaptive group commit wait
	// (storage.Config.SyncWait, parleyd --sync-wait): 0 is the node's
	// default (50 µs), negative never waits.
	SpawnSyncWait time.Duration `json:"spawn_sync_wait"`
	// Parleyd is the path of a parleyd binary: with Spawn, the node is
	// that program (real flags, signals and shutdown) rather than a node
	// in a child of this one; SpawnLoops and SpawnNoSync do not apply to
	// it. "" spawns the child node. The chaos scenario needs it.
	Parleyd string `json:"parleyd"`
	// SpawnCluster is how many parleyd nodes (Parleyd) a spawned cluster
	// has: an etcd member inside this process, a cluster CA and node
	// certificates in a temporary directory, the nodes on free loopback
	// ports with SpawnShards shards in all. Device i connects to node
	// i mod SpawnCluster (round robin by account index). 0: one node, no
	// cluster. Needs Spawn and Parleyd.
	SpawnCluster int `json:"spawn_cluster"`
	// PhonePrefix is the node's test phone prefix (parleyd
	// --test-phone-prefix); accounts get numbers under it. Default "+1999".
	PhonePrefix string `json:"phone_prefix"`
	// TestCode is the node's test verification code. Default "000000".
	TestCode string `json:"test_code"`

	// Connections is how many devices (one account each) connect. Scenarios
	// that pair accounts round it up to an even number. Default 1000.
	Connections int `json:"connections"`
	// Duration is how long traffic runs. Default 10 s; a chaos run's
	// default is 1.5 s per kill, PartitionFor + 1.5 s per partition,
	// EtcdDownFor + 1.5 s per etcd restart, and 3 s. A chaos run's traffic
	// lasts until its faults are done, if they take longer.
	Duration time.Duration `json:"duration"`
	// Warmup is the start of the traffic left out of the rate and latency
	// figures. Default 1 s; negative means none.
	Warmup time.Duration `json:"warmup"`
	// Rate is the total messages per second over all senders; 0 sends flat
	// out, each sender keeping InFlight sends unanswered.
	Rate int `json:"rate"`
	// InFlight is how many sends one device keeps unanswered at most.
	// Default 10; at most 120 (the server reads no more than 128).
	InFlight int `json:"in_flight"`
	// MessageSize is the body of each message in bytes, at least 20 (the
	// timestamps and cmid it carries). Default 20.
	MessageSize int `json:"message_size"`
	// AckDelay is how long a device may hold a cumulative Ack so that it
	// covers more entries or rides along with a send, as the SDK does
	// (client.Config.AckDelay); it acks at once when half the window is
	// unacknowledged. Default 50 ms; negative acks every read at once.
	AckDelay time.Duration `json:"ack_delay"`
	// LazyAckDelay is how long the Ack may wait instead while it would
	// newly cover no one-to-one message from another user and no message
	// of 4 KiB or more (receipts, group messages, group events), as the
	// SDK does (client.Config.LazyAckDelay, [S-8-5]): at a chat's pace it
	// then rides on the device's next send, and a group member
	// acknowledges several messages at once. Default 1 s; negative:
	// AckDelay.
	LazyAckDelay time.Duration `json:"lazy_ack_delay"`
	// Devices is the devices of each user in an envelopes, groups or
	// group-envelopes run: a primary and Devices-1 linked companions, 1 to
	// protocol.MaxCompanions+1.
	// Default 1.
	Devices int `json:"devices"`
	// Groups is how many groups a groups run has. Default 1.
	Groups int `json:"groups"`
	// GroupSize is the members per group, 2 to 1024. Default 1024, or
	// the connections if fewer.
	GroupSize int `json:"group_size"`
	// GroupSenders is how many members of each group send to it.
	// Default 1.
	GroupSenders int `json:"group_senders"`
	// MediaSize is the bytes of each file a media run moves. Default
	// 1 MiB.
	MediaSize int `json:"media_size"`
	// MediaCount is the most files each uploading device moves in a
	// media run. Default 100,000 (the duration ends it first).
	MediaCount int `json:"media_count"`
	// Queue is how many messages each offline user gets queued (offline).
	// Default 100.
	Queue int `json:"queue"`
	// ChurnLife is the mean time a connection lives before it drops and
	// reconnects (churn). Default 5 s.
	ChurnLife time.Duration `json:"churn_life"`
	// IdleSettle is how long the idle scenario waits after everyone logged
	// in before reading the server's memory: past the server's IdleTrim
	// (10 s by default). Default 12 s.
	IdleSettle time.Duration `json:"idle_settle"`
	// Hold is how long the idle scenario keeps the connections after
	// measuring. Default 0.
	Hold time.Duration `json:"hold"`
	// DrainTimeout bounds the wait for every sent message to arrive after
	// traffic stops; what has not arrived by then is lost. Default 30 s.
	DrainTimeout time.Duration `json:"drain_timeout"`

	// Kills is how many times a chaos run kills (SIGKILL) or gracefully
	// restarts (SIGTERM) the node during the traffic. 0: none, a run
	// without faults. Chaos runs only.
	Kills int `json:"kills"`
	// Partitions is how many times a chaos run on a spawned cluster cuts a
	// node, drawn from Seed, off from etcd and from the other nodes (its
	// links both ways; its clients keep their connections) for
	// PartitionFor, then heals it. 0: none. Needs SpawnCluster 2 or more.
	Partitions int `json:"partitions"`
	// PartitionFor is how long a partition lasts. Default 4 s: twice the
	// spawned nodes' lease TTL, so the node's lease expires meanwhile.
	PartitionFor time.Duration `json:"partition_for"`
	// EtcdRestarts is how many times a chaos run on a spawned cluster
	// stops its etcd member and starts it again EtcdDownFor later on the
	// same data directory and ports. 0: none. Needs SpawnCluster.
	EtcdRestarts int `json:"etcd_restarts"`
	// EtcdDownFor is how long etcd stays down at each restart. Default
	// 4 s: twice the spawned nodes' lease TTL, so every node's own
	// reckoning of its lease lapses meanwhile.
	EtcdDownFor time.Duration `json:"etcd_down_for"`
	// Seed makes a chaos run's choices: phone numbers on each shard,
	// devices, groups, who sends what to whom, read marks, membership
	// changes, and the moments and kinds of the faults. The same seed
	// makes the same choices; timing differs from run to run. 0: Run
	// picks one at random and reports it (Result.Chaos.Seed).
	Seed int64 `json:"seed"`

	// PerWorker is the most connections one worker process holds. Default
	// 8000 (a process may hold 20,000 open files here).
	PerWorker int `json:"per_worker"`
	// Workers is how many worker processes run; 0 means as many as
	// PerWorker needs.
	Workers int `json:"workers"`
	// SourceBase is the last octet of the first worker's source address
	// 127.0.0.x; the next worker gets the next one. Default 2.
	SourceBase int `json:"source_base"`

	// ProfileDir, if set, makes each worker write a CPU profile of its
	// whole run to ProfileDir/worker-<index>.pprof: where the load
	// generator's own CPU goes. Run creates the directory, with its
	// parents, before any work starts.
	ProfileDir string `json:"profile_dir"`

	// InjectDuplicate counts every Nth delivered message twice: a fault
	// for testing the verifier, which must then fail the run. 0: none.
	InjectDuplicate int `json:"inject_duplicate"`

	// WorkerCommand is the argv that starts a worker or a spawned node;
	// the child role is set in the environment (see RunChild). Default:
	// this executable with no arguments.
	WorkerCommand []string `json:"-"`
	// Progress receives a live progress line every second; nil: none.
	Progress io.Writer `json:"-"`
	// Logger receives the run's logs; nil discards them.
	Logger *slog.Logger `json:"-"`
}

func (c *Config) setDefaults() {
	if c.SpawnShards < 0 {
		c.SpawnShards = 0
	}
	if c.Scenario == chaosScenario.Name {
		c.setChaosDefaults()
	}
	if c.SpawnCluster > 0 && c.SpawnShards == 0 {
		c.SpawnShards = clusterShardsPerNode * c.SpawnCluster
	}
	if c.Scenario == abuseScenario.Name {
		if c.Connections == 0 {
			c.Connections = abuseConnections
		}
		if c.Rate == 0 {
			c.Rate = abuseRate
		}
	}
	if c.PhonePrefix == "" {
		c.PhonePrefix = "+1999"
	}
	if c.TestCode == "" {
		c.TestCode = "000000"
	}
	if c.Connections == 0 {
		c.Connections = 1000
	}
	if c.Duration == 0 {
		c.Duration = 10 * time.Second
	}
	if c.Warmup == 0 {
		c.Warmup = time.Second
	}
	if c.Warmup < 0 {
		c.Warmup = 0
	}
	if c.InFlight == 0 {
		c.InFlight = 10
	}
	if c.MessageSize == 0 {
		c.MessageSize = bodyHeader
	}
	if c.AckDelay == 0 {
		c.AckDelay = 50 * time.Millisecond
	}
	switch {
	case c.LazyAckDelay == 0:
		c.LazyAckDelay = time.Second
	case c.LazyAckDelay < 0:
		c.LazyAckDelay = c.AckDelay
	}
	if c.Devices == 0 {
		c.Devices = 1
	}
	if c.Groups == 0 {
		c.Groups = 1
	}
	if c.GroupSize == 0 {
		c.GroupSize = min(1024, c.Connections+c.Connections%2)
	}
	if c.GroupSenders == 0 {
		c.GroupSenders = 1
	}
	if c.MediaSize == 0 {
		c.MediaSize = 1 << 20
	}
	if c.MediaCount == 0 {
		c.MediaCount = 100_000
	}
	if c.Queue == 0 {
		c.Queue = 100
	}
	if c.ChurnLife == 0 {
		c.ChurnLife = 5 * time.Second
	}
	if c.IdleSettle == 0 {
		c.IdleSettle = 12 * time.Second
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = 30 * time.Second
	}
	if c.PerWorker == 0 {
		c.PerWorker = 8000
	}
	if c.SourceBase == 0 {
		c.SourceBase = 2
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// validate reports every problem with c at once.
func (c *Config) validate() error {
	var errs []error
	if _, ok := scenarioByName(c.Scenario); !ok {
		errs = append(errs, fmt.Errorf("unknown scenario %q (have %s)", c.Scenario, strings.Join(ScenarioNames(), ", ")))
	}
	if !c.Spawn && (c.Addr == "" || c.Fingerprint == "") {
		errs = append(errs, errors.New("no server: give the address and certificate fingerprint, or spawn one"))
	}
	if digits := strings.TrimPrefix(c.PhonePrefix, "+"); !strings.HasPrefix(c.PhonePrefix, "+") || len(digits) == 0 ||
		strings.Trim(digits, "0123456789") != "" || len(digits) > maxPhoneDigits-indexDigits-runDigits {
		errs = append(errs, fmt.Errorf("phone prefix %q: want + and 1 to %d digits", c.PhonePrefix, maxPhoneDigits-indexDigits-runDigits))
	}
	if c.Connections < 2 || c.Connections > maxConnections {
		errs = append(errs, fmt.Errorf("%d connections: want 2 to %d", c.Connections, maxConnections))
	}
	if c.Duration < 0 || c.Duration > 24*time.Hour {
		errs = append(errs, fmt.Errorf("duration %v: want up to 24h", c.Duration))
	}
	if c.Warmup >= c.Duration {
		errs = append(errs, fmt.Errorf("warmup %v not below the duration %v", c.Warmup, c.Duration))
	}
	if c.Rate < 0 {
		errs = append(errs, fmt.Errorf("negative rate %d", c.Rate))
	}
	if c.InFlight < 1 || c.InFlight > 120 {
		errs = append(errs, fmt.Errorf("in flight %d: want 1 to 120", c.InFlight))
	}
	if c.MessageSize < bodyHeader || c.MessageSize > 64<<10 {
		errs = append(errs, fmt.Errorf("message size %d: want %d to 65536", c.MessageSize, bodyHeader))
	}
	if c.Devices < 1 || c.Devices > protocol.MaxCompanions+1 {
		errs = append(errs, fmt.Errorf("devices %d: want 1 to %d", c.Devices, protocol.MaxCompanions+1))
	}
	if c.Queue < 1 || c.Queue > 1_000_000 {
		errs = append(errs, fmt.Errorf("queue %d: want 1 to 1000000", c.Queue))
	}
	if isGroupRun(c) && c.Connections >= 2 {
		if err := planGroups(c).check(); err != nil {
			errs = append(errs, err)
		}
	}
	if c.Scenario == chaosScenario.Name {
		errs = append(errs, c.validateChaos()...)
	}
	if c.SpawnCluster < 0 || c.SpawnCluster > maxClusterNodes {
		errs = append(errs, fmt.Errorf("cluster of %d nodes: want 0 (none) to %d", c.SpawnCluster, maxClusterNodes))
	}
	if c.SpawnCluster > 0 && (!c.Spawn || c.Parleyd == "") {
		errs = append(errs, errors.New("a spawned cluster runs parleyd: spawn it (--spawn-cluster N) from a parleyd binary (--parleyd PATH; go build ./cmd/parleyd)"))
	}
	if c.Parleyd != "" && (c.SpawnLoops != 0 || c.SpawnNoSync) {
		errs = append(errs, errors.New("the event loops and nosync of a spawned parleyd cannot be set (it has no flags for them)"))
	}
	if c.MediaSize < 1 || c.MediaSize > protocol.MaxMediaDocument || c.MediaCount < 1 {
		errs = append(errs, fmt.Errorf("media size %d, count %d: want 1 to %d bytes and a count of 1 or more", c.MediaSize, c.MediaCount, protocol.MaxMediaDocument))
	}
	if c.PerWorker < 1 || c.PerWorker > 18_000 {
		errs = append(errs, fmt.Errorf("%d connections per worker: want 1 to 18000 (20,000 open files per process)", c.PerWorker))
	}
	if c.Workers < 0 || c.SourceBase < 1 || c.SourceBase+c.workers() > 255 {
		errs = append(errs, fmt.Errorf("%d workers from 127.0.0.%d: out of 127.0.0.x", c.workers(), c.SourceBase))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"churn life", c.ChurnLife}, {"idle settle", c.IdleSettle}, {"drain timeout", c.DrainTimeout}} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("%s %v not positive", d.name, d.v))
		}
	}
	if c.Hold < 0 || c.InjectDuplicate < 0 {
		errs = append(errs, errors.New("negative hold or inject-duplicate"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("loadtest: config: %w", err)
	}
	return nil
}

// workers returns how many worker processes the run uses.
func (c *Config) workers() int {
	if c.Workers > 0 {
		return c.Workers
	}
	return max(1, (c.Connections+c.PerWorker-1)/c.PerWorker)
}

// Phone numbers: prefix, run id, account index. E.164 allows 15 digits.
const (
	maxPhoneDigits = 15
	indexDigits    = 7
	runDigits      = 3
	maxConnections = 9_999_999
)

// Spawned cluster bounds.
const (
	// clusterShardsPerNode is a spawned cluster's shards per node when
	// SpawnShards is not set.
	clusterShardsPerNode = 2
	maxClusterNodes      = 9
)

// Abuse defaults: the bystanders' traffic, light enough that what the
// attack costs them shows in their latency.
const (
	abuseConnections = 100
	abuseRate        = 1000 // messages per second over all bystanders
)

// Chaos defaults: a small run over four shards that fits on a laptop and
// in go test.
const (
	chaosConnections = 40 // 16 users with 2 or 3 devices
	chaosShards      = 4
	chaosGroups      = 4
	chaosGroupSize   = 6
	chaosKills       = 10
	chaosRate        = 100 // actions per second over all devices
	// chaosTimePerKill is the traffic time per fault a chaos run gets when
	// Duration is not set.
	chaosTimePerKill = 1500 * time.Millisecond
	// chaosMaxConnections bounds a chaos run's devices: it runs in one
	// worker, and the verifier keeps every entry.
	chaosMaxConnections = 2000
)

// setChaosDefaults fills in the chaos scenario's own defaults, before the
// common ones.
func (c *Config) setChaosDefaults() {
	if c.Connections == 0 {
		c.Connections = chaosConnections
	}
	if c.SpawnShards == 0 {
		c.SpawnShards = chaosShards
	}
	if c.Groups == 0 {
		c.Groups = chaosGroups
	}
	if c.GroupSize == 0 {
		c.GroupSize = chaosGroupSize
	}
	if c.Rate == 0 {
		c.Rate = chaosRate
	}
	if c.PartitionFor == 0 {
		c.PartitionFor = 2 * clusterLeaseTTL
	}
	if c.EtcdDownFor == 0 {
		c.EtcdDownFor = 2 * clusterLeaseTTL
	}
	if c.Duration == 0 {
		c.Duration = time.Duration(c.Kills)*chaosTimePerKill +
			time.Duration(c.Partitions)*(c.PartitionFor+chaosTimePerKill) +
			time.Duration(c.EtcdRestarts)*(c.EtcdDownFor+chaosTimePerKill) + 3*time.Second
	}
}

// validateChaos reports what a chaos run cannot do with c.
func (c *Config) validateChaos() []error {
	var errs []error
	if (!c.Spawn || c.Parleyd == "") && c.SpawnCluster == 0 {
		errs = append(errs, errors.New("chaos kills and restarts the node: spawn it (--spawn) from a parleyd binary (--parleyd PATH; go build ./cmd/parleyd)"))
	}
	if c.Workers > 1 {
		errs = append(errs, fmt.Errorf("chaos runs in one worker, not %d", c.Workers))
	}
	if c.Kills < 0 || c.Kills > 100_000 {
		errs = append(errs, fmt.Errorf("%d kills: want 0 to 100000", c.Kills))
	}
	if c.Partitions < 0 || c.Partitions > 100_000 || c.EtcdRestarts < 0 || c.EtcdRestarts > 100_000 {
		errs = append(errs, fmt.Errorf("%d partitions, %d etcd restarts: want 0 to 100000 each", c.Partitions, c.EtcdRestarts))
	}
	if c.Partitions > 0 && c.SpawnCluster < 2 {
		errs = append(errs, errors.New("partitions cut a node off from the others: spawn a cluster of 2 or more (--spawn-cluster 3)"))
	}
	if c.EtcdRestarts > 0 && c.SpawnCluster < 1 {
		errs = append(errs, errors.New("etcd restarts restart the spawned cluster's etcd: spawn one (--spawn-cluster 3)"))
	}
	if c.PartitionFor < 0 || c.EtcdDownFor < 0 {
		errs = append(errs, fmt.Errorf("partition for %v, etcd down for %v: want 0 (default) or more", c.PartitionFor, c.EtcdDownFor))
	}
	if c.Connections > chaosMaxConnections {
		errs = append(errs, fmt.Errorf("chaos: %d connections: want at most %d", c.Connections, chaosMaxConnections))
	}
	if c.Connections >= 2 && c.Connections <= chaosMaxConnections {
		if err := planChaos(c).check(); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}
