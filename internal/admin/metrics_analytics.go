package admin

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/parley-im/parley/analytics"
)

// analyticsCollector reads the analytics pipeline's counters
// (analytics.Stats) at scrape time.
type analyticsCollector struct{ p *analytics.Pipeline }

var (
	descAnalyticsEvents  = prometheus.NewDesc("parley_analytics_events_total", "Analytics events, by outcome: emitted (taken into the buffer), dropped (the buffer was full: the sink is slow or down), written (the sink took them), failed (in batches the sink refused twice).", []string{"outcome"}, nil)
	descAnalyticsWaiting = prometheus.NewDesc("parley_analytics_waiting", "Analytics events in the buffer now.", nil, nil)
)

// Describe implements prometheus.Collector.
func (c analyticsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descAnalyticsEvents
	ch <- descAnalyticsWaiting
}

// Collect implements prometheus.Collector.
func (c analyticsCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.p.Stats()
	for _, o := range []struct {
		name string
		n    uint64
	}{{"emitted", st.Emitted}, {"dropped", st.Dropped}, {"written", st.Written}, {"failed", st.Failed}} {
		ch <- prometheus.MustNewConstMetric(descAnalyticsEvents, prometheus.CounterValue, float64(o.n), o.name)
	}
	ch <- prometheus.MustNewConstMetric(descAnalyticsWaiting, prometheus.GaugeValue, float64(st.Waiting))
}
