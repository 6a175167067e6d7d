package admin

import (
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
	duration prometheus.Histogram
	ops      prometheus.Histogram
	syncs    prometheus.Histogram
}

// NewCommits returns an empty Commits.
func NewCommits() *Commits {
	return &Commits{
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "parley_shard_commit_duration_seconds",
			Help: "Time a shard's group commit took to apply its batch (the WAL fsync is parley_shard_sync_duration_seconds).",
			// 25 µs to ~0.8 s.
			Buckets: prometheus.ExponentialBuckets(25e-6, 2, 16),
		}),
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

// Observe records one commit. Its signature is storage.Config.OnCommit's.
func (c *Commits) Observe(d time.Duration, ops int) {
	c.duration.Observe(d.Seconds())
	c.ops.Observe(float64(ops))
}

// collector reads the server's and the shards' counters at scrape time.
// server.Stats.FramesOut is left out: the server does not count it yet.
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

	descCommits    = prometheus.NewDesc("parley_shard_commits_total", "Group commits (Pebble batches synced).", []string{"shard"}, nil)
	descOps        = prometheus.NewDesc("parley_shard_ops_total", "Ops applied by the shard's actor.", []string{"shard"}, nil)
	descEntries    = prometheus.NewDesc("parley_shard_entries_total", "Inbox entries (messages and receipts) appended.", []string{"shard"}, nil)
	descCommitTime = prometheus.NewDesc("parley_shard_commit_seconds_total", "Time spent committing, fsync included.", []string{"shard"}, nil)
	descQueue      = prometheus.NewDesc("parley_shard_queue_length", "Ops waiting for the shard's actor now.", []string{"shard"}, nil)
	descSyncs      = prometheus.NewDesc("parley_shard_syncs_total", "WAL syncs (fsyncs) made.", []string{"shard"}, nil)
	descSyncTime   = prometheus.NewDesc("parley_shard_sync_seconds_total", "Time spent in WAL syncs.", []string{"shard"}, nil)
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
		descCommits, descOps, descEntries, descCommitTime, descQueue, descSyncs, descSyncTime} {
		ch <- d
	}
	for _, d := range shardLimitDescs {
		ch <- d
	}
	for _, d := range connLimitDescs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
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
		ch <- prometheus.MustNewConstMetric(descCommitTime, prometheus.CounterValue, st.CommitTime.Seconds(), id)
		ch <- prometheus.MustNewConstMetric(descQueue, prometheus.GaugeValue, float64(st.QueueLength), id)
		ch <- prometheus.MustNewConstMetric(descSyncs, prometheus.CounterValue, float64(st.Syncs), id)
		ch <- prometheus.MustNewConstMetric(descSyncTime, prometheus.CounterValue, st.SyncTime.Seconds(), id)
		collectShardLimits(ch, id, st)
	}
}
