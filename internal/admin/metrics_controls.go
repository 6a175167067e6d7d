package admin

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/parley-im/parley/reports"
)

// reportsCollector reads the report queue's counters (reports.Stats) at
// scrape time.
type reportsCollector struct{ q *reports.Queue }

var (
	descReports        = prometheus.NewDesc("parley_reports_total", "User reports by outcome: written (durable, answered OK), failed (a write error, answered INTERNAL), rate_limited and busy (refused).", []string{"outcome"}, nil)
	descReportsWaiting = prometheus.NewDesc("parley_reports_waiting", "User reports taken and not yet written.", nil, nil)
)

// Describe implements prometheus.Collector.
func (c reportsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descReports
	ch <- descReportsWaiting
}

// Collect implements prometheus.Collector.
func (c reportsCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.q.Stats()
	for outcome, n := range map[string]uint64{"written": st.Written, "failed": st.Failed, "rate_limited": st.RateLimited, "busy": st.Busy} {
		ch <- prometheus.MustNewConstMetric(descReports, prometheus.CounterValue, float64(n), outcome)
	}
	ch <- prometheus.MustNewConstMetric(descReportsWaiting, prometheus.GaugeValue, float64(st.Waiting))
}
