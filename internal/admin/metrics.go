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
// commit (with fsync) took and how many ops it carried.
type Commits struct {
	duration prometheus.Histogram
	ops      prometheus.Histogram
}

// NewCommits returns an empty Commits.
func NewCommits() *Commits {
	return &Commits{
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "parley_shard_commit_duration_seconds",
			Help: "Time a shard's group commit took, fsync included.",
			// 25 µs to ~0.8 s.
			Buckets: prometheus.ExponentialBuckets(25e-6, 2, 16),
		}),
		ops: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "parley_shard_commit_ops",
			Help:    "Ops applied by one group commit.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 14),
		}),
	}
}

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
)

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descAccepted, descOpen, descAuthenticated, descFramesIn,
		descBytesIn, descBytesOut, descHandshakes, descHandshakeFail, descClosed,
		descCommits, descOps, descEntries, descCommitTime, descQueue} {
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
	}
}
