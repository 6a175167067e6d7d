package loadtest

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
)

// Histograms hold microseconds, from 1 µs to 10 minutes, to 3 significant
// digits.
const (
	histMin    = 1
	histMax    = int64(10 * time.Minute / time.Microsecond)
	histDigits = 3
	// latencyShards spreads the recording of delivery latencies over
	// several locks, one per group of devices.
	latencyShards = 8
)

func newHist() *hdr.Histogram { return hdr.New(histMin, histMax, histDigits) }

// latencyRecorder records end-to-end latencies of deliveries whose
// intended send time falls in the measured window.
type latencyRecorder struct {
	// from is the start of the measured window in unix nanos; 0: not
	// recording.
	from atomic.Int64
	// to is the end of the measured window for the rate, unix nanos.
	to     atomic.Int64
	inRate atomic.Int64 // deliveries that arrived inside [from, to]

	shards [latencyShards]struct {
		mu        sync.Mutex
		corrected *hdr.Histogram // from the intended send time
		raw       *hdr.Histogram // from the actual send time
		interval  *hdr.Histogram // corrected, since the last interval read
		late      *hdr.Histogram // senders' own lateness: actual minus scheduled send time
	}
}

func newLatencyRecorder() *latencyRecorder {
	r := &latencyRecorder{}
	for i := range r.shards {
		r.shards[i].corrected, r.shards[i].raw, r.shards[i].interval, r.shards[i].late = newHist(), newHist(), newHist(), newHist()
	}
	return r
}

// window starts measuring from `from` until `to` (unix nanos).
func (r *latencyRecorder) window(from, to int64) {
	r.to.Store(to)
	r.from.Store(from)
}

// record records one delivery at now of a message sent (intended, actual).
func (r *latencyRecorder) record(device int, intended, actual, now int64) {
	from := r.from.Load()
	if from == 0 || intended < from {
		return
	}
	if now <= r.to.Load() {
		r.inRate.Add(1)
	}
	sh := &r.shards[device%latencyShards]
	c, a := max(1, (now-intended)/1e3), max(1, (now-actual)/1e3)
	sh.mu.Lock()
	_ = sh.corrected.RecordValue(min(c, histMax))
	_ = sh.raw.RecordValue(min(a, histMax))
	_ = sh.interval.RecordValue(min(c, histMax))
	sh.mu.Unlock()
}

// recordLate records how late device wrote at actual a send scheduled at
// scheduled (unix nanos) that the server did not hold back, when the
// scheduled time falls in the measured window: the load generator's own
// lateness, which the latency does not charge to the server (package
// pace).
func (r *latencyRecorder) recordLate(device int, scheduled, actual int64) {
	from := r.from.Load()
	if from == 0 || scheduled < from || scheduled > r.to.Load() {
		return
	}
	sh := &r.shards[device%latencyShards]
	sh.mu.Lock()
	_ = sh.late.RecordValue(min(max(1, (actual-scheduled)/1e3), histMax))
	sh.mu.Unlock()
}

// takeInterval returns the latencies recorded since the last call.
func (r *latencyRecorder) takeInterval() *hdr.Histogram {
	h := newHist()
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		h.Merge(sh.interval)
		sh.interval.Reset()
		sh.mu.Unlock()
	}
	return h
}

// totals returns the merged corrected, raw and lateness histograms.
func (r *latencyRecorder) totals() (corrected, raw, late *hdr.Histogram) {
	corrected, raw, late = newHist(), newHist(), newHist()
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		corrected.Merge(sh.corrected)
		raw.Merge(sh.raw)
		late.Merge(sh.late)
		sh.mu.Unlock()
	}
	return corrected, raw, late
}

// durationRecorder records durations (connect times).
type durationRecorder struct {
	mu sync.Mutex
	h  *hdr.Histogram
}

func (r *durationRecorder) record(d time.Duration) {
	r.mu.Lock()
	if r.h == nil {
		r.h = newHist()
	}
	_ = r.h.RecordValue(min(max(1, d.Microseconds()), histMax))
	r.mu.Unlock()
}

func (r *durationRecorder) snapshot() *hdr.Histogram {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.h == nil {
		return newHist()
	}
	return r.h.Clone()
}

// encodeHist encodes h for the coordinator (HdrHistogram V2, base64).
func encodeHist(h *hdr.Histogram) []byte {
	b, err := h.Encode(hdr.V2CompressedEncodingCookieBase)
	if err != nil {
		panic(fmt.Sprintf("loadtest: encode histogram: %v", err)) // only for an unsupported version
	}
	return b
}

// decodeHist decodes what encodeHist produced; nil or bad input gives an
// empty histogram and the error.
func decodeHist(b []byte) (*hdr.Histogram, error) {
	if len(b) == 0 {
		return newHist(), nil
	}
	h, err := hdr.Decode(b)
	if err != nil {
		return newHist(), fmt.Errorf("loadtest: decode histogram: %w", err)
	}
	return h, nil
}

// Percentiles are latency figures in microseconds.
type Percentiles struct {
	Count int64 `json:"count"`
	P50   int64 `json:"p50"`
	P90   int64 `json:"p90"`
	P99   int64 `json:"p99"`
	P999  int64 `json:"p999"`
	Max   int64 `json:"max"`
}

func percentiles(h *hdr.Histogram) Percentiles {
	if h.TotalCount() == 0 {
		return Percentiles{}
	}
	return Percentiles{
		Count: h.TotalCount(),
		P50:   h.ValueAtQuantile(50),
		P90:   h.ValueAtQuantile(90),
		P99:   h.ValueAtQuantile(99),
		P999:  h.ValueAtQuantile(99.9),
		Max:   h.Max(),
	}
}
