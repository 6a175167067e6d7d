package loadtest

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
)

// Result is what a run measured. Its JSON form is the tool's --json
// output.
type Result struct {
	Scenario    string `json:"scenario"`
	Connections int    `json:"connections"`
	Workers     int    `json:"workers"`
	// TargetRate is the configured total rate; 0 for flat out.
	TargetRate  int `json:"target_rate"`
	MessageSize int `json:"message_size"`
	// DurationSeconds is the whole run, registration included.
	DurationSeconds float64 `json:"duration_s"`
	// ClusterAccepted is, for a spawned cluster (Config.SpawnCluster),
	// the client connections each node accepted in the run, node 1's
	// first; nil without one.
	ClusterAccepted []int64 `json:"cluster_accepted,omitempty"`

	MessagesSent      int64 `json:"messages_sent"`
	MessagesDelivered int64 `json:"messages_delivered"`
	ReceiptsDelivered int64 `json:"receipts_delivered"`
	Lost              int64 `json:"lost"`
	Duplicated        int64 `json:"duplicated"`
	Reordered         int64 `json:"reordered"`
	// Gaps counts jumps in inbox seq: entries skipped.
	Gaps int64 `json:"skipped"`
	// OrderMismatch counts group messages that two members saw at
	// different places in the group's order (groups).
	OrderMismatch int64 `json:"order_mismatch"`
	Passed        bool  `json:"passed"`

	// MsgsPerSec is the delivery rate inside the measured window (after
	// the warmup), or the backlog drain rate for offline.
	MsgsPerSec float64 `json:"msgs_per_sec"`
	// Latency is end to end, sender to recipient. At a fixed rate it
	// counts from the scheduled send time for a send the server held back
	// (a full in-flight window, no session: corrected for coordinated
	// omission) and from the write for one it did not, so a sender's own
	// lateness (its timer firing late) is not charged to the server; that
	// lateness is SendLate. LatencyUncorrected counts every delivery from
	// the write.
	Latency            Percentiles `json:"latency_us"`
	LatencyUncorrected Percentiles `json:"latency_uncorrected_us"`
	// SendLate is how late senders wrote the sends the server did not hold
	// back, after their scheduled time (fixed rate only).
	SendLate Percentiles `json:"send_late_us"`
	// Connect is TCP + TLS + login until Synced.
	Connect Percentiles `json:"connect_us"`

	// Bytes per message on the wire (TLS included), all frames counted:
	// sends, acks and pings up; entries, receipts and Sent down.
	BytesPerMsgUp   float64 `json:"bytes_per_msg_up"`
	BytesPerMsgDown float64 `json:"bytes_per_msg_down"`
	// The same in frames, before TLS.
	FrameBytesPerMsgUp   float64 `json:"frame_bytes_per_msg_up"`
	FrameBytesPerMsgDown float64 `json:"frame_bytes_per_msg_down"`

	// Server figures from the admin endpoint (0 without one). Memory is
	// read settled (after GC) with every connection up; per connection it
	// is the growth over the settled baseline before they connected.
	ServerRSS         int64   `json:"server_rss_bytes"`
	ServerHeap        int64   `json:"server_heap_bytes"`
	ServerRSSPerConn  float64 `json:"server_rss_per_conn_bytes"`
	ServerHeapPerConn float64 `json:"server_heap_per_conn_bytes"`
	MemoryConnections int64   `json:"memory_connections"`
	// The same RSS read the peers' way (cmd/parley-peers): as it is, with
	// no collection forced and nothing returned to the OS, just before the
	// settled read; per connection over the settled baseline.
	ServerRSSUnforced        int64   `json:"server_rss_unforced_bytes"`
	ServerRSSUnforcedPerConn float64 `json:"server_rss_unforced_per_conn_bytes"`
	ServerCPUSeconds         float64 `json:"server_cpu_s"`
	ServerCPUPerMsgUS        float64 `json:"server_cpu_us_per_msg"`
	ServerCommits            int64   `json:"server_commits"`
	ServerOpsPerCommit       float64 `json:"server_ops_per_commit"`
	// ServerSyncs is the WAL syncs (fsyncs) the node made in the measured
	// window; ServerSyncsPerMsg per delivered message, ServerSyncMeanUS
	// the mean time of one.
	ServerSyncs       int64   `json:"server_syncs"`
	ServerSyncsPerMsg float64 `json:"server_syncs_per_msg"`
	ServerSyncMeanUS  float64 `json:"server_sync_mean_us"`
	// ServerRecordsPerMsg is the records the shards committed (memtable
	// inserts: sets, deletes, range deletions) per delivered message.
	ServerRecordsPerMsg float64 `json:"server_records_per_msg"`
	ServerCommitMeanUS  float64 `json:"server_commit_mean_us"`
	// LoadCPUSeconds and LoadCPUPerMsgUS are the worker processes' CPU
	// over the same window: the load generator's share of the cores.
	LoadCPUSeconds  float64 `json:"load_cpu_s"`
	LoadCPUPerMsgUS float64 `json:"load_cpu_us_per_msg"`

	// Groups runs: the plan, group messages fanned out per second, and
	// the latency until the last member of the group had a message.
	Groups           int         `json:"groups,omitempty"`
	GroupSize        int         `json:"group_size,omitempty"`
	GroupSenders     int         `json:"group_senders,omitempty"`
	GroupMsgsPerSec  float64     `json:"group_msgs_per_sec,omitempty"`
	FanoutLatency    Percentiles `json:"fanout_latency_us"`
	FanoutIncomplete int64       `json:"fanout_incomplete,omitempty"`
	// KeyDistribution is a group-envelopes run's handing out of sender
	// keys, before the measured traffic; nil for other runs.
	KeyDistribution *KeyDistribution `json:"key_distribution,omitempty"`

	// Media runs: files of MediaSize bytes moved each way, latency per
	// file (slot or URL request included), throughput, files whose bytes
	// differed, and the server's CPU per MiB moved (up plus down).
	MediaSize            int         `json:"media_size,omitempty"`
	MediaUploads         int64       `json:"media_uploads,omitempty"`
	MediaDownloads       int64       `json:"media_downloads,omitempty"`
	MediaCorrupt         int64       `json:"media_corrupt"`
	MediaUpMiBps         float64     `json:"media_up_mib_per_sec,omitempty"`
	MediaDownMiBps       float64     `json:"media_down_mib_per_sec,omitempty"`
	MediaUploadLatency   Percentiles `json:"media_upload_latency_us"`
	MediaDownloadLatency Percentiles `json:"media_download_latency_us"`
	ServerCPUPerMiBMS    float64     `json:"server_cpu_ms_per_mib,omitempty"`

	// Chaos is a chaos run's figures and findings; nil for other runs.
	Chaos *ChaosResult `json:"chaos,omitempty"`
	// Abuse is what an abuse run's attack did and met; nil for other
	// runs.
	Abuse *AbuseResult `json:"abuse,omitempty"`
	// Storm is what a storm run's storm step measured; nil for other
	// runs.
	Storm *StormResult `json:"storm,omitempty"`

	Steps    []StepTime `json:"steps"`
	Counters Counters   `json:"counters"`
	Series   []Point    `json:"series"`
}

// ChaosResult is what a chaos run did and found (scenario_chaos.go,
// chaos_verify.go). Counts of deliveries count (message, device) pairs.
type ChaosResult struct {
	// Seed repeats the run's choices (not its timing): --seed.
	Seed int64 `json:"seed"`
	// The layout: shards, users per shard, users and their devices,
	// groups and the shards of each group's first members.
	Shards        int   `json:"shards"`
	UsersPerShard []int `json:"users_per_shard"`
	Users         int   `json:"users"`
	Devices       int   `json:"devices"`
	Groups        int   `json:"groups"`
	GroupShards   []int `json:"group_shards"`

	// The faults: SIGKILLs, graceful restarts (SIGTERM), graceful stops
	// that needed a SIGKILL after 30 s or exited non-zero, and the
	// longest and mean time from a signal to the node's ready line.
	Kills          int     `json:"kills"`
	Restarts       int     `json:"restarts"`
	SlowStops      int     `json:"slow_stops"`
	BadExits       int     `json:"bad_exits"`
	DowntimeMaxMS  float64 `json:"downtime_max_ms"`
	DowntimeMeanMS float64 `json:"downtime_mean_ms"`
	// Partitions of a node from etcd and the other nodes; those during
	// which its lease expired in etcd (its fence closed, its shards
	// refused); the longest from a cut to its record gone and from a heal
	// to its registration again; and the sends acknowledged during the
	// partitions (by the rest of the cluster), from the one-second series.
	Partitions           int     `json:"partitions"`
	PartitionLeaseLost   int     `json:"partition_lease_lost"`
	PartitionLeaseGoneMS float64 `json:"partition_lease_gone_ms"`
	PartitionBackMS      float64 `json:"partition_back_ms"`
	AckedPartitioned     int64   `json:"acked_partitioned"`
	// etcd restarts; the longest etcd was down; nodes that had to register
	// again after one (their lease did not survive it); and the sends
	// acknowledged while etcd was down, from the one-second series.
	EtcdRestarts      int     `json:"etcd_restarts"`
	EtcdDownMaxMS     float64 `json:"etcd_down_max_ms"`
	EtcdReregistered  int     `json:"etcd_reregistered"`
	AckedWhileEtcdOff int64   `json:"acked_while_etcd_off"`

	// Sends handed to the clients, answered SENT, failed for good (a
	// group send after its sender left, say), and never answered.
	Sent         int `json:"sent"`
	Acknowledged int `json:"acknowledged"`
	Failed       int `json:"failed"`
	Unanswered   int `json:"unanswered"`
	// FailedBy counts the sends failed for good by the client's error.
	FailedBy map[string]int `json:"failed_by,omitempty"`
	// RetriedBy counts the clients' retries of sends and requests refused
	// with a retriable code, as "send CODE" or "request CODE": what the
	// clients saw of the faults.
	RetriedBy map[string]int `json:"retried_by,omitempty"`
	// Deliveries the acknowledged sends and the group events owed, and
	// those made; group events; membership changes asked for and
	// answered; read marks answered; receipts owed.
	DeliveriesExpected int `json:"deliveries_expected"`
	Delivered          int `json:"delivered"`
	GroupEvents        int `json:"group_events"`
	MembershipChanges  int `json:"membership_changes"`
	MembershipAnswered int `json:"membership_answered"`
	ReadMarks          int `json:"read_marks"`
	ReceiptsExpected   int `json:"receipts_expected"`
	// Redelivered counts entries a device got again at the same seq after
	// its client was restarted before its ack reached the server: allowed
	// ([S-8-9]), and counted only to show it happened.
	Redelivered int `json:"redelivered"`

	// Violations by kind, and their total. Lost and the rest count
	// (message, device) pairs, or entries; ReceiptsMissing counts
	// (device, peer, group, type) receipts that never arrived.
	Lost            int `json:"lost"`
	Duplicated      int `json:"duplicated"`
	Reordered       int `json:"reordered"`
	Skipped         int `json:"skipped"`
	OrderMismatch   int `json:"order_mismatch"`
	Unexpected      int `json:"unexpected"`
	ReceiptsMissing int `json:"receipts_missing"`
	UnansweredSends int `json:"unanswered_violations"`
	Violations      int `json:"violations"`
	// LostGroupMessages, LostDirectMessages and LostCopies count the
	// acknowledged sends behind Lost: group messages some member's device
	// never got, 1:1 messages some device of the recipient never got, and
	// 1:1 messages some device of the sender never got a copy of.
	LostGroupMessages  int `json:"lost_group_messages"`
	LostDirectMessages int `json:"lost_direct_messages"`
	LostCopies         int `json:"lost_copies"`
	// First lists the first few violations of each kind, with their ids.
	First []string `json:"first"`
}

// StepTime is how long a step took.
type StepTime struct {
	Name    string  `json:"name"`
	Seconds float64 `json:"seconds"`
	Timed   bool    `json:"timed"`
}

// Point is one second of the run.
type Point struct {
	T          float64 `json:"t"`
	Connected  int64   `json:"connected"`
	Sent       int64   `json:"sent"`
	Delivered  int64   `json:"delivered"`
	Acked      int64   `json:"acked"`
	Rate       float64 `json:"rate"`
	LatencyP50 int64   `json:"p50_us"`
	LatencyP99 int64   `json:"p99_us"`
	LatencyMax int64   `json:"max_us"`
}

// WriteText writes the final report for people.
func (r *Result) WriteText(w io.Writer) {
	verdict := "PASS"
	if !r.Passed {
		verdict = "FAIL"
	}
	fmt.Fprintf(w, "scenario %s: %d connections over %d workers, %.1fs — %s\n", r.Scenario, r.Connections, r.Workers, r.DurationSeconds, verdict)
	for _, s := range r.Steps {
		if s.Timed {
			fmt.Fprintf(w, "  %-20s %8.3fs\n", s.Name, s.Seconds)
		}
	}
	if len(r.ClusterAccepted) > 0 {
		fmt.Fprintf(w, "cluster of %d nodes: client connections accepted by node %v\n", len(r.ClusterAccepted), r.ClusterAccepted)
	}
	if r.Chaos != nil {
		r.Chaos.writeText(w)
	} else if r.MediaSize == 0 {
		fmt.Fprintf(w, "messages: %d sent, %d delivered, %d receipt entries; lost %d, duplicated %d, reordered %d, skipped %d\n",
			r.MessagesSent, r.MessagesDelivered, r.ReceiptsDelivered, r.Lost, r.Duplicated, r.Reordered, r.Gaps)
		if n := r.Counters.Unanswered; n > 0 {
			fmt.Fprintf(w, "  %d sends never answered by the server (no Sent by the end of the drain; not counted as lost)\n", n)
		}
	}
	c := r.Counters
	if c.ErrorFrames+c.Drops+c.DialErrors+c.Resent+c.GoAways > 0 {
		fmt.Fprintf(w, "errors: %d error frames, %d drops, %d dial errors, %d resends, %d goaways\n", c.ErrorFrames, c.Drops, c.DialErrors, c.Resent, c.GoAways)
	}
	if len(c.Errors) > 0 {
		fmt.Fprintf(w, "error frames by code: %s\n", countsText(c.Errors, ""))
	}
	if r.Abuse != nil {
		r.Abuse.writeText(w)
	}
	if r.MsgsPerSec > 0 && r.Chaos == nil {
		rate := "flat out"
		if r.TargetRate > 0 {
			rate = fmt.Sprintf("target %d/s", r.TargetRate)
		}
		fmt.Fprintf(w, "rate: %.0f msg/s delivered (%s)\n", r.MsgsPerSec, rate)
	}
	if r.Groups > 0 {
		fmt.Fprintf(w, "groups: %d of %d members, %d senders each; %.1f group messages/s fanned out; %d order mismatches\n",
			r.Groups, r.GroupSize, r.GroupSenders, r.GroupMsgsPerSec, r.OrderMismatch)
		fmt.Fprintf(w, "fan-out to the last member: %s\n", r.FanoutLatency)
		if r.FanoutIncomplete > 0 {
			fmt.Fprintf(w, "  %d fan-outs incomplete at the end\n", r.FanoutIncomplete)
		}
		if r.KeyDistribution != nil {
			fmt.Fprintf(w, "sender keys handed out: %s\n", r.KeyDistribution)
		}
	}
	if r.MediaSize > 0 {
		fmt.Fprintf(w, "media: %d uploads, %d downloads of %d bytes, %d corrupt; up %.1f MiB/s, down %.1f MiB/s\n",
			r.MediaUploads, r.MediaDownloads, r.MediaSize, r.MediaCorrupt, r.MediaUpMiBps, r.MediaDownMiBps)
		if r.Counters.MediaRetries > 0 {
			fmt.Fprintf(w, "  %d answers waited out (RATE_LIMITED: 600 media requests a minute per user; OVERLOADED)\n", r.Counters.MediaRetries)
		}
		fmt.Fprintf(w, "upload (slot + PUT):  %s\n", r.MediaUploadLatency)
		fmt.Fprintf(w, "download (URL + GET): %s\n", r.MediaDownloadLatency)
		if r.ServerCPUSeconds > 0 {
			fmt.Fprintf(w, "server: %.2f s CPU, %.2f ms per MiB moved; load generator %.2f s\n", r.ServerCPUSeconds, r.ServerCPUPerMiBMS, r.LoadCPUSeconds)
		}
	}
	if r.Latency.Count > 0 {
		fmt.Fprintf(w, "latency end to end: %s\n", r.Latency)
		fmt.Fprintf(w, "  uncorrected:      %s\n", r.LatencyUncorrected)
	}
	if r.SendLate.Count > 0 {
		fmt.Fprintf(w, "senders' own lateness (not charged): %s\n", r.SendLate)
	}
	if c := r.Counters; c.Handshakes > 0 {
		fmt.Fprintf(w, "TLS handshakes: %d, %d resumed; %.0f B up, %.0f B down per handshake\n", c.Handshakes, c.Resumed,
			float64(c.HandshakeBytesUp)/float64(c.Handshakes), float64(c.HandshakeBytesDown)/float64(c.Handshakes))
	}
	if r.Connect.Count > 0 {
		fmt.Fprintf(w, "connect (TCP+TLS+login+synced): %s\n", r.Connect)
	}
	if r.Storm != nil {
		r.Storm.writeText(w)
	}
	if r.BytesPerMsgUp > 0 {
		fmt.Fprintf(w, "bytes per message (%d-byte body), all frames: up %.1f on the wire / %.1f in frames; down %.1f / %.1f\n",
			r.MessageSize, r.BytesPerMsgUp, r.FrameBytesPerMsgUp, r.BytesPerMsgDown, r.FrameBytesPerMsgDown)
	}
	if r.ServerRSS > 0 {
		fmt.Fprintf(w, "server memory with %d connections: RSS %.1f MiB, heap %.1f MiB; per connection RSS %.0f B, heap %.0f B\n",
			r.MemoryConnections, float64(r.ServerRSS)/(1<<20), float64(r.ServerHeap)/(1<<20), r.ServerRSSPerConn, r.ServerHeapPerConn)
		if r.ServerRSSUnforced > 0 {
			fmt.Fprintf(w, "  read the peers' way (no forced GC): RSS %.1f MiB, per connection %.0f B\n",
				float64(r.ServerRSSUnforced)/(1<<20), r.ServerRSSUnforcedPerConn)
		}
	}
	if r.ServerCPUPerMsgUS > 0 {
		fmt.Fprintf(w, "server: %.1f µs CPU per delivered message, %d commits, %.1f ops/commit, %.0f µs/commit; %d fsyncs, %.2f per message, %.0f µs each; %.1f records per message\n",
			r.ServerCPUPerMsgUS, r.ServerCommits, r.ServerOpsPerCommit, r.ServerCommitMeanUS, r.ServerSyncs, r.ServerSyncsPerMsg, r.ServerSyncMeanUS, r.ServerRecordsPerMsg)
	}
	if r.LoadCPUPerMsgUS > 0 {
		fmt.Fprintf(w, "load generator: %.1f µs CPU per delivered message (%.2f s in the measured window)\n", r.LoadCPUPerMsgUS, r.LoadCPUSeconds)
	}
}

// writeText writes a chaos run's part of the report.
func (c *ChaosResult) writeText(w io.Writer) {
	fmt.Fprintf(w, "chaos: seed %d (--seed %d repeats the choices, not the timing)\n", c.Seed, c.Seed)
	fmt.Fprintf(w, "  %d users on %d devices over %d shards (users per shard %v); %d groups, first members on shards %v\n",
		c.Users, c.Devices, c.Shards, c.UsersPerShard, c.Groups, c.GroupShards)
	fmt.Fprintf(w, "  faults: %d SIGKILL, %d SIGTERM restarts; down %.0f ms at most, %.0f ms on average",
		c.Kills, c.Restarts, c.DowntimeMaxMS, c.DowntimeMeanMS)
	if c.SlowStops+c.BadExits > 0 {
		fmt.Fprintf(w, "; %d graceful stops killed after the timeout, %d exited non-zero", c.SlowStops, c.BadExits)
	}
	fmt.Fprintln(w)
	if c.Partitions > 0 {
		fmt.Fprintf(w, "  partitions: %d, the node's lease expired in %d (gone from etcd %.0f ms after the cut at most, registered again %.0f ms after the heal at most); %d sends acknowledged during them\n",
			c.Partitions, c.PartitionLeaseLost, c.PartitionLeaseGoneMS, c.PartitionBackMS, c.AckedPartitioned)
	}
	if c.EtcdRestarts > 0 {
		fmt.Fprintf(w, "  etcd restarts: %d, down %.0f ms at most; %d node registrations lost; %d sends acknowledged while etcd was down\n",
			c.EtcdRestarts, c.EtcdDownMaxMS, c.EtcdReregistered, c.AckedWhileEtcdOff)
	}
	fmt.Fprintf(w, "  sends: %d sent, %d acknowledged, %d failed for good, %d unanswered\n", c.Sent, c.Acknowledged, c.Failed, c.Unanswered)
	for _, e := range slices.Sorted(maps.Keys(c.FailedBy)) {
		fmt.Fprintf(w, "    failed for good: %d × %s\n", c.FailedBy[e], e)
	}
	if len(c.RetriedBy) > 0 {
		var parts []string
		for _, e := range slices.Sorted(maps.Keys(c.RetriedBy)) {
			parts = append(parts, fmt.Sprintf("%d × %s", c.RetriedBy[e], e))
		}
		fmt.Fprintf(w, "  retried after a refusal: %s\n", strings.Join(parts, ", "))
	}
	fmt.Fprintf(w, "  deliveries: %d owed to devices, %d made; %d group events; %d membership changes (%d answered); %d read marks; %d receipts owed; %d redelivered after a client restart\n",
		c.DeliveriesExpected, c.Delivered, c.GroupEvents, c.MembershipChanges, c.MembershipAnswered, c.ReadMarks, c.ReceiptsExpected, c.Redelivered)
	fmt.Fprintf(w, "  lost %d, duplicated %d, reordered %d, skipped %d, group order %d, unexpected %d, receipts missing %d, unanswered %d: %d violations\n",
		c.Lost, c.Duplicated, c.Reordered, c.Skipped, c.OrderMismatch, c.Unexpected, c.ReceiptsMissing, c.UnansweredSends, c.Violations)
	if c.Lost > 0 {
		fmt.Fprintf(w, "  lost: deliveries of %d acknowledged group messages, %d 1:1 messages, %d copies to their senders' devices\n",
			c.LostGroupMessages, c.LostDirectMessages, c.LostCopies)
	}
	if len(c.First) > 0 {
		fmt.Fprintln(w, "  first violations:")
		for _, v := range c.First {
			fmt.Fprintf(w, "    %s\n", v)
		}
	}
}

// String formats latency percentiles.
func (p Percentiles) String() string {
	return fmt.Sprintf("p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  (n=%d)", us(p.P50), us(p.P90), us(p.P99), us(p.P999), us(p.Max), p.Count)
}
