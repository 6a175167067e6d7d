package admin

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/parley-im/parley/sms"
)

// smsCollector reads the SMS sender's counters (sms.Stats) at scrape
// time.
type smsCollector struct{ sender *sms.Sender }

var (
	descSMSSent     = prometheus.NewDesc("parley_sms_sent_total", "Verification codes the SMS gateway took.", nil, nil)
	descSMSFailed   = prometheus.NewDesc("parley_sms_failed_total", "Verification codes not sent, by reason: refused (the gateway refused the number: CODE_UNDELIVERABLE), rejected (the gateway refused our request: check its configuration), unavailable (throttled or failing to the last attempt), timeout (no answer within the deadline), queue_full, closed.", []string{"reason"}, nil)
	descSMSRetries  = prometheus.NewDesc("parley_sms_retries_total", "Attempts to hand a code to the SMS gateway after a first one.", nil, nil)
	descSMSQueued   = prometheus.NewDesc("parley_sms_queued", "Verification codes waiting for a worker now.", nil, nil)
	descSMSInFlight = prometheus.NewDesc("parley_sms_in_flight", "Verification codes being handed to the SMS gateway now.", nil, nil)
)

// Describe implements prometheus.Collector.
func (c smsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSMSSent, descSMSFailed, descSMSRetries, descSMSQueued, descSMSInFlight} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c smsCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.sender.Stats()
	ch <- prometheus.MustNewConstMetric(descSMSSent, prometheus.CounterValue, float64(st.Sent))
	for reason, n := range st.Failed {
		ch <- prometheus.MustNewConstMetric(descSMSFailed, prometheus.CounterValue, float64(n), reason)
	}
	ch <- prometheus.MustNewConstMetric(descSMSRetries, prometheus.CounterValue, float64(st.Retries))
	ch <- prometheus.MustNewConstMetric(descSMSQueued, prometheus.GaugeValue, float64(st.Queued))
	ch <- prometheus.MustNewConstMetric(descSMSInFlight, prometheus.GaugeValue, float64(st.InFlight))
}
