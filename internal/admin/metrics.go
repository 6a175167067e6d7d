package admin

import (
	"runtime"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/server"
	"github.com/parley-im/parley/storage"
)

// Commits is a histogram of the shards' group commits: how long each
// commit took (applying the batch; the fsync is separate) and how many ops
// it carried, and of their WAL syncs.
type Commits struct {
	duration *prometheus.HistogramVec // by shard
	ops      prometheus.Histogram
	syncs    prometheus.Histogram
}

// NewCommits returns an empty Commits.
func NewCommits() *Commits {
	return &Commits{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "parley_shard_commit_duration_seconds",
			Help: "Time a shard's group commit took to apply its batch (the WAL fsync is parley_shard_sync_duration_seconds), by shard.",
			// 25 µs to ~0.8 s.
			Buckets: prometheus.ExponentialBuckets(25e-6, 2, 16),
		}, []string{"shard"}),
		ops: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "parley_shard_commit_ops",
			Help:    "Ops applied by one group commit.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 14),
		}),
		syncs: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "parley_shard_sync_duration_seconds",
			Help:    "Time a shard's WAL sync (fsync) took; one sync makes every commit before it durable.",
			Buckets: prometheus.ExponentialBuckets(25e-6, 2, 16),
		}),
	}
}

// ObserveSync records one WAL sync. Its signature is
// storage.Config.OnSync's.
func (c *Commits) ObserveSync(d time.Duration) { c.syncs.Observe(d.Seconds()) }

// Observer returns the commit observer of shard id, for its
// storage.Config.OnCommit.
func (c *Commits) Observer(id uint16) func(d time.Duration, ops int) {
	h := c.duration.WithLabelValues(strconv.Itoa(int(id)))
	return func(d time.Duration, ops int) {
		h.Observe(d.Seconds())
		c.ops.Observe(float64(ops))
	}
}

// collector reads the server's and the shards' counters at scrape time.
type collector struct {
	srv    *server.Server
	shards []*storage.Shard
}

var (
	descAccepted      = prometheus.NewDesc("parley_connections_accepted_total", "Client connections accepted.", nil, nil)
	descOpen          = prometheus.NewDesc("parley_connections_open", "Client connections open now.", nil, nil)
	descAuthenticated = prometheus.NewDesc("parley_connections_authenticated", "Client connections logged in now.", nil, nil)
	descFramesIn      = prometheus.NewDesc("parley_frames_received_total", "Frames received from clients.", nil, nil)
	descBytesIn       = prometheus.NewDesc("parley_bytes_received_total", "Bytes received from clients, before decryption.", nil, nil)
	descBytesOut      = prometheus.NewDesc("parley_bytes_sent_total", "Bytes sent to clients, after encryption.", nil, nil)
	descHandshakes    = prometheus.NewDesc("parley_tls_handshakes_total", "TLS handshakes completed.", nil, nil)
	descHandshakeFail = prometheus.NewDesc("parley_tls_handshake_failures_total", "TLS handshakes failed or timed out.", nil, nil)
	descClosed        = prometheus.NewDesc("parley_connections_closed_total", "Connections the server closed, by connection-scope error code.", []string{"code"}, nil)

	descCommits  = prometheus.NewDesc("parley_shard_commits_total", "Group commits (Pebble batches synced).", []string{"shard"}, nil)
	descOps      = prometheus.NewDesc("parley_shard_ops_total", "Ops applied by the shard's actor.", []string{"shard"}, nil)
	descEntries  = prometheus.NewDesc("parley_shard_entries_total", "Inbox entries (messages and receipts) appended.", []string{"shard"}, nil)
	descQueue    = prometheus.NewDesc("parley_shard_queue_length", "Ops waiting for the shard's actor now.", []string{"shard"}, nil)
	descSyncs    = prometheus.NewDesc("parley_shard_syncs_total", "WAL syncs (fsyncs) made.", []string{"shard"}, nil)
	descSyncTime = prometheus.NewDesc("parley_shard_sync_seconds_total", "Time spent in WAL syncs.", []string{"shard"}, nil)
	descRecords  = prometheus.NewDesc("parley_shard_records_total", "Records (sets, deletes, range deletions) in the batches committed: inserts into the memtable.", []string{"shard"}, nil)
)

// Shard metrics of the outbox between shards, storage errors and the
// storage limits (docs/security.md).
var (
	descUnconfirmed  = prometheus.NewDesc("parley_shard_outbox_unconfirmed", "Outbox entries waiting for their destination shard's confirmation now.", []string{"shard"}, nil)
	descResends      = prometheus.NewDesc("parley_shard_outbox_resends_total", "Go-backs: outbox entries forwarded again after a gap or a pair without progress.", []string{"shard"}, nil)
	descForwardsIdle = prometheus.NewDesc("parley_shard_forwards_not_applied_total", "Forwards received but not applied, by reason (repeat: already applied; gap: beyond the next expected).", []string{"shard", "reason"}, nil)
	descAborts       = prometheus.NewDesc("parley_shard_aborted_cycles_total", "Cycles aborted by a storage error (the shard restarted in place).", []string{"shard"}, nil)
	descRefused      = prometheus.NewDesc("parley_shard_refused_total", "Sends and requests refused by a storage limit, by kind (storage_full, inbox_full, pending_links).", []string{"shard", "kind"}, nil)
	descPendingLinks = prometheus.NewDesc("parley_shard_pending_links", "Link codes waiting for approval now.", []string{"shard"}, nil)
	descCodesSwept   = prometheus.NewDesc("parley_shard_code_states_swept_total", "Verification code states deleted once done with.", []string{"shard"}, nil)
	shardLimitDescs  = []*prometheus.Desc{descUnconfirmed, descResends, descForwardsIdle, descAborts, descRefused, descPendingLinks, descCodesSwept}
)

// Server metrics of the connection limits (docs/security.md,
// "Connections and TLS").
var (
	descMaxConns     = prometheus.NewDesc("parley_connections_max", "The client connection cap in force (server.Config.MaxConns).", nil, nil)
	descConnRefused  = prometheus.NewDesc("parley_connections_refused_total", "Connections closed on arrival or at their ClientHello, by the limit that refused them: max_conns, max_conns_per_ip, fd_limit (shed while out of file descriptors), handshakes_per_ip.", []string{"reason"}, nil)
	descAcceptErrors = prometheus.NewDesc("parley_accept_errors_total", "Failed accepts (EMFILE, ENFILE …); each pauses accepting briefly.", nil, nil)
	descHSTimeouts   = prometheus.NewDesc("parley_tls_handshake_timeouts_total", "Connections closed before TLS completed, by phase: client_hello (ClientHello not whole in time), handshake (handshake not done in time).", []string{"phase"}, nil)
	descHSSlots      = prometheus.NewDesc("parley_tls_handshake_slots_busy", "TLS handshake slots in use now.", nil, nil)
	descHSWaiting    = prometheus.NewDesc("parley_tls_handshakes_waiting", "TLS handshakes waiting for a slot now.", nil, nil)
	descRateLimited  = prometheus.NewDesc("parley_rate_limited_total", "Requests and SENDs refused RATE_LIMITED by the server's rate limits, by limit: codes_per_connection, codes_per_ip, codes_per_prefix, codes_per_node (REQUEST_CODE), link_requests_per_connection, link_requests_per_ip, sends_per_account, group_sends_per_account, lookups_per_account.", []string{"limit"}, nil)
	connLimitDescs   = []*prometheus.Desc{descMaxConns, descConnRefused, descAcceptErrors, descHSTimeouts, descHSSlots, descHSWaiting, descRateLimited}
)

// collectConnLimits sends the connection-limit metrics of srv.
func collectConnLimits(ch chan<- prometheus.Metric, srv *server.Server) {
	st := srv.Stats()
	metric := func(d *prometheus.Desc, t prometheus.ValueType, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, t, v, labels...)
	}
	metric(descMaxConns, prometheus.GaugeValue, float64(srv.MaxConns()))
	metric(descConnRefused, prometheus.CounterValue, float64(st.RefusedMaxConns.Load()), "max_conns")
	metric(descConnRefused, prometheus.CounterValue, float64(st.RefusedPerIP.Load()), "max_conns_per_ip")
	metric(descConnRefused, prometheus.CounterValue, float64(st.RefusedFDLimit.Load()), "fd_limit")
	metric(descConnRefused, prometheus.CounterValue, float64(st.RefusedHandshakesPerIP.Load()), "handshakes_per_ip")
	metric(descAcceptErrors, prometheus.CounterValue, float64(st.AcceptErrors.Load()))
	metric(descHSTimeouts, prometheus.CounterValue, float64(st.HelloTimeouts.Load()), "client_hello")
	metric(descHSTimeouts, prometheus.CounterValue, float64(st.HandshakeTimeouts.Load()), "handshake")
	for l := range server.NumLimits {
		metric(descRateLimited, prometheus.CounterValue, float64(st.RateLimited[l].Load()), l.String())
	}
	busy, waiting := srv.HandshakeSlots()
	metric(descHSSlots, prometheus.GaugeValue, float64(busy))
	metric(descHSWaiting, prometheus.GaugeValue, float64(waiting))
}

// collectShardLimits sends the outbox and limit metrics of shard id.
func collectShardLimits(ch chan<- prometheus.Metric, id string, st storage.Stats) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), append([]string{id}, labels...)...)
	}
	ch <- prometheus.MustNewConstMetric(descUnconfirmed, prometheus.GaugeValue, float64(st.Unconfirmed), id)
	ch <- prometheus.MustNewConstMetric(descPendingLinks, prometheus.GaugeValue, float64(st.PendingLinks), id)
	counter(descResends, st.Resends)
	counter(descForwardsIdle, st.ForwardRepeats, "repeat")
	counter(descForwardsIdle, st.ForwardGaps, "gap")
	counter(descAborts, st.Aborts)
	counter(descRefused, st.FullRefusals, "storage_full")
	counter(descRefused, st.QuotaRefusals, "inbox_full")
	counter(descRefused, st.LinkRefusals, "pending_links")
	counter(descCodesSwept, st.CodesSwept)
}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descAccepted, descOpen, descAuthenticated, descFramesIn,
		descBytesIn, descBytesOut, descHandshakes, descHandshakeFail, descClosed,
		descCommits, descOps, descEntries, descQueue, descSyncs, descSyncTime, descRecords} {
		ch <- d
	}
	for _, d := range shardLimitDescs {
		ch <- d
	}
	for _, d := range connLimitDescs {
		ch <- d
	}
	for _, d := range flowDescs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	ch <- buildInfo()
	if c.srv != nil {
		st := c.srv.Stats()
		counter := func(d *prometheus.Desc, v uint64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
		}
		gauge := func(d *prometheus.Desc, v int64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v))
		}
		counter(descAccepted, st.Accepted.Load())
		gauge(descOpen, st.Open.Load())
		gauge(descAuthenticated, st.Authenticated.Load())
		counter(descFramesIn, st.FramesIn.Load())
		counter(descBytesIn, st.BytesIn.Load())
		counter(descBytesOut, st.BytesOut.Load())
		counter(descHandshakes, st.Handshakes.Load())
		counter(descHandshakeFail, st.HandshakeFails.Load())
		collectConnLimits(ch, c.srv)
		collectServerFlow(ch, st)
		for code := range st.Closed {
			if n := st.Closed[code].Load(); n > 0 {
				ch <- prometheus.MustNewConstMetric(descClosed, prometheus.CounterValue, float64(n), protocol.Code(code).String())
			}
		}
	}
	for _, s := range c.shards {
		st := s.Stats()
		id := strconv.Itoa(int(s.ID()))
		ch <- prometheus.MustNewConstMetric(descCommits, prometheus.CounterValue, float64(st.Commits), id)
		ch <- prometheus.MustNewConstMetric(descOps, prometheus.CounterValue, float64(st.Ops), id)
		ch <- prometheus.MustNewConstMetric(descEntries, prometheus.CounterValue, float64(st.Entries), id)
		ch <- prometheus.MustNewConstMetric(descQueue, prometheus.GaugeValue, float64(st.QueueLength), id)
		ch <- prometheus.MustNewConstMetric(descSyncs, prometheus.CounterValue, float64(st.Syncs), id)
		ch <- prometheus.MustNewConstMetric(descSyncTime, prometheus.CounterValue, st.SyncTime.Seconds(), id)
		ch <- prometheus.MustNewConstMetric(descRecords, prometheus.CounterValue, float64(st.Records), id)
		collectShardLimits(ch, id, st)
		collectFlow(ch, id, s.Flow())
	}
}

// Message flow, accounts and errors (docs/operations.md, "What to watch").
var (
	descMessages      = prometheus.NewDesc("parley_messages_stored_total", "Message entries stored in inboxes: one per 1:1 message, one per member's inbox of a group message (and the copies for the sender's other devices).", []string{"shard"}, nil)
	descDelivered     = prometheus.NewDesc("parley_entries_delivered_total", "Inbox entries (messages, receipts, events) sent to devices; sent again after a reconnect, counted again.", []string{"shard"}, nil)
	descAcknowledged  = prometheus.NewDesc("parley_entries_acknowledged_total", "Inbox entries devices acknowledged, each device apart.", []string{"shard"}, nil)
	descBacklog       = prometheus.NewDesc("parley_inbox_backlog_entries", "Inbox entries held now: stored and not yet acknowledged by every device of their user, nor expired (the offline backlog).", []string{"shard"}, nil)
	descRegistrations = prometheus.NewDesc("parley_registrations_total", "Devices registered by phone verification.", []string{"shard"}, nil)
	descCodes         = prometheus.NewDesc("parley_codes_issued_total", "Verification codes issued (handed to the SMS sender; for test numbers, not sent).", []string{"shard"}, nil)
	descErrorsSent    = prometheus.NewDesc("parley_errors_sent_total", "Error frames sent to clients, by code.", []string{"code"}, nil)
	descFramesOut     = prometheus.NewDesc("parley_frames_sent_total", "Frames sent to clients (a batch counts once).", nil, nil)
	descBuild         = prometheus.NewDesc("parley_build_info", "Always 1; the labels say which parleyd runs.", []string{"version", "revision", "goversion"}, nil)
	flowDescs         = []*prometheus.Desc{descMessages, descDelivered, descAcknowledged, descBacklog, descRegistrations, descCodes, descErrorsSent, descFramesOut, descBuild}
)

// collectFlow sends the flow metrics of shard id.
func collectFlow(ch chan<- prometheus.Metric, id string, f storage.Flow) {
	counter := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), id)
	}
	counter(descMessages, f.Messages)
	counter(descDelivered, f.Delivered)
	counter(descAcknowledged, f.Acknowledged)
	counter(descRegistrations, f.Registrations)
	counter(descCodes, f.Codes)
	ch <- prometheus.MustNewConstMetric(descBacklog, prometheus.GaugeValue, float64(f.Backlog), id)
}

// collectServerFlow sends the server's frames and errors sent.
func collectServerFlow(ch chan<- prometheus.Metric, st *server.Stats) {
	ch <- prometheus.MustNewConstMetric(descFramesOut, prometheus.CounterValue, float64(st.FramesOut.Load()))
	for code := range st.ErrorsSent {
		if n := st.ErrorsSent[code].Load(); n > 0 {
			ch <- prometheus.MustNewConstMetric(descErrorsSent, prometheus.CounterValue, float64(n), protocol.Code(code).String())
		}
	}
}

// buildInfo is the parley_build_info metric of the running binary.
func buildInfo() prometheus.Metric {
	version, revision, goVersion := "unknown", "", runtime.Version()
	if bi, ok := debug.ReadBuildInfo(); ok {
		version = bi.Main.Version
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				revision = s.Value
			}
		}
	}
	return prometheus.MustNewConstMetric(descBuild, prometheus.GaugeValue, 1, version, revision, goVersion)
}
