package admin

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/parley-im/parley/media"
)

// mediaCollector reads the media service's counters (media.Stats) at
// scrape time.
type mediaCollector struct{ svc *media.Service }

var (
	descMediaRefused   = prometheus.NewDesc("parley_media_refused_total", "Media requests refused by a limit, by reason: endpoint_full (503), user_transfers and reserved_share (429 MEDIA_TOO_MANY_TRANSFERS), staging_quota (MEDIA_QUOTA_EXCEEDED), disk_reserve (MEDIA_STORAGE_FULL), rate_limited (RATE_LIMITED).", []string{"reason"}, nil)
	descMediaSlowCut   = prometheus.NewDesc("parley_media_slow_transfers_cut_total", "Media transfers cut for moving slower than the minimum rate, by direction.", []string{"direction"}, nil)
	descMediaTransfers = prometheus.NewDesc("parley_media_transfers", "Media endpoint requests in progress now.", nil, nil)
	descMediaStaged    = prometheus.NewDesc("parley_media_staged_bytes", "Bytes of unfinished media uploads, as the staging quotas count them: staged on disk, and the whole size of each upload a PUT is writing.", nil, nil)
	descMediaDone      = prometheus.NewDesc("parley_media_transfers_total", "Media transfers that moved a body, by direction (upload: a PUT, each resumption apart; download: a GET).", []string{"direction"}, nil)
	descMediaBytes     = prometheus.NewDesc("parley_media_bytes_total", "Media body bytes moved, by direction.", []string{"direction"}, nil)
	descMediaFree      = prometheus.NewDesc("parley_media_free_bytes", "Free space of the media directory's file system, as last read (at most a second old while uploads arrive).", nil, nil)
)

// Describe implements prometheus.Collector.
func (c mediaCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descMediaRefused, descMediaSlowCut, descMediaTransfers, descMediaStaged, descMediaFree, descMediaDone, descMediaBytes} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c mediaCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.svc.Stats()
	for reason, n := range st.Refused {
		ch <- prometheus.MustNewConstMetric(descMediaRefused, prometheus.CounterValue, float64(n), reason)
	}
	ch <- prometheus.MustNewConstMetric(descMediaSlowCut, prometheus.CounterValue, float64(st.SlowUploadsCut), "upload")
	ch <- prometheus.MustNewConstMetric(descMediaSlowCut, prometheus.CounterValue, float64(st.SlowDownloadsCut), "download")
	ch <- prometheus.MustNewConstMetric(descMediaTransfers, prometheus.GaugeValue, float64(st.Transfers))
	ch <- prometheus.MustNewConstMetric(descMediaStaged, prometheus.GaugeValue, float64(st.StagedBytes))
	ch <- prometheus.MustNewConstMetric(descMediaFree, prometheus.GaugeValue, float64(st.FreeBytes))
	ch <- prometheus.MustNewConstMetric(descMediaDone, prometheus.CounterValue, float64(st.Uploads), "upload")
	ch <- prometheus.MustNewConstMetric(descMediaDone, prometheus.CounterValue, float64(st.Downloads), "download")
	ch <- prometheus.MustNewConstMetric(descMediaBytes, prometheus.CounterValue, float64(st.BytesIn), "upload")
	ch <- prometheus.MustNewConstMetric(descMediaBytes, prometheus.CounterValue, float64(st.BytesOut), "download")
}
