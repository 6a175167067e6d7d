package admin

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/parley-im/parley/push"
	"github.com/parley-im/parley/storage"
)

// pushCollector reads the push dispatcher's counters (push.Stats) and the
// shards' (storage.PushStats) at scrape time.
type pushCollector struct {
	d      *push.Dispatcher
	shards []*storage.Shard
}

var (
	descPushSent          = prometheus.NewDesc("parley_push_sent_total", "Push notifications the provider took, by provider.", []string{"provider"}, nil)
	descPushFailed        = prometheus.NewDesc("parley_push_failed_total", "Push notifications given up on after every attempt or refused as misconfigured, by provider (each is tried again an interval later).", []string{"provider"}, nil)
	descPushTokensInvalid = prometheus.NewDesc("parley_push_tokens_invalid_total", "Push notifications whose token the provider reported invalid, by provider.", []string{"provider"}, nil)
	descPushRetries       = prometheus.NewDesc("parley_push_retries_total", "Attempts to hand a push to its provider after a first one (throttled or failing).", nil, nil)
	descPushDropped       = prometheus.NewDesc("parley_push_dropped_total", "Push jobs not taken because the dispatcher's queue was full (they stay owed on their shards).", nil, nil)
	descPushPending       = prometheus.NewDesc("parley_push_pending", "Devices with a push pending in the dispatcher now (waiting for their interval, a retry or a worker).", nil, nil)
	descPushInFlight      = prometheus.NewDesc("parley_push_in_flight", "Pushes being handed to a provider now.", nil, nil)
	descPushCoalesced     = prometheus.NewDesc("parley_push_coalesced_total", "Waking entries counted into a push the device was already owed, by shard.", []string{"shard"}, nil)
	descPushTokensRemoved = prometheus.NewDesc("parley_push_tokens_removed_total", "Push registrations deleted because the provider reported the token invalid, by shard.", []string{"shard"}, nil)
)

// Describe implements prometheus.Collector.
func (c pushCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPushSent, descPushFailed, descPushTokensInvalid, descPushRetries, descPushDropped,
		descPushPending, descPushInFlight, descPushCoalesced, descPushTokensRemoved} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c pushCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.d.Stats()
	for p, n := range st.Sent {
		ch <- prometheus.MustNewConstMetric(descPushSent, prometheus.CounterValue, float64(n), p)
	}
	for p, n := range st.Failed {
		ch <- prometheus.MustNewConstMetric(descPushFailed, prometheus.CounterValue, float64(n), p)
	}
	for p, n := range st.TokensInvalid {
		ch <- prometheus.MustNewConstMetric(descPushTokensInvalid, prometheus.CounterValue, float64(n), p)
	}
	ch <- prometheus.MustNewConstMetric(descPushRetries, prometheus.CounterValue, float64(st.Retries))
	ch <- prometheus.MustNewConstMetric(descPushDropped, prometheus.CounterValue, float64(st.Dropped))
	ch <- prometheus.MustNewConstMetric(descPushPending, prometheus.GaugeValue, float64(st.Pending))
	ch <- prometheus.MustNewConstMetric(descPushInFlight, prometheus.GaugeValue, float64(st.InFlight))
	for _, s := range c.shards {
		ps := s.PushStats()
		id := strconv.Itoa(int(s.ID()))
		ch <- prometheus.MustNewConstMetric(descPushCoalesced, prometheus.CounterValue, float64(ps.Coalesced), id)
		ch <- prometheus.MustNewConstMetric(descPushTokensRemoved, prometheus.CounterValue, float64(ps.TokensRemoved), id)
	}
}
