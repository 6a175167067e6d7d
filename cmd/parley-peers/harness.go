package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/parley-im/parley/internal/pace"
)

type config struct {
	peer, scenario   string
	conns            int
	duration, warmup time.Duration
	rate, inflight   int
	settle           time.Duration
}

// harness runs one measurement against a peer.
type harness struct {
	cfg   config
	srv   *peerServer
	conns []*pconn

	wireUp, wireDown, frameUp, frameDown atomic.Int64
	sent, delivered, inRate              atomic.Int64
	from, to                             atomic.Int64 // measured window, unix nanos

	mu             sync.Mutex
	lat, raw, late *hdr.Histogram // guarded by mu, microseconds
}

// result is what a peer run measured; the JSON names match parley-load's.
type result struct {
	Peer              string  `json:"peer"`
	Scenario          string  `json:"scenario"`
	Connections       int     `json:"connections"`
	TargetRate        int     `json:"target_rate"`
	MessagesSent      int64   `json:"messages_sent"`
	MessagesDelivered int64   `json:"messages_delivered"`
	MsgsPerSec        float64 `json:"msgs_per_sec"`
	Latency           lat     `json:"latency_us"`
	LatencyRaw        lat     `json:"latency_uncorrected_us"`
	SendLate          lat     `json:"send_late_us"`
	BytesPerMsgUp     float64 `json:"bytes_per_msg_up"`
	BytesPerMsgDown   float64 `json:"bytes_per_msg_down"`
	FrameBytesUp      float64 `json:"frame_bytes_per_msg_up"`
	FrameBytesDown    float64 `json:"frame_bytes_per_msg_down"`
	ServerRSS         int64   `json:"server_rss_bytes"`
	ServerRSSPerConn  float64 `json:"server_rss_per_conn_bytes"`
	ServerCPUPerMsgUS float64 `json:"server_cpu_us_per_msg"`
	// LoadCPUPerMsgUS is this process's CPU (the clients) per message.
	LoadCPUPerMsgUS float64 `json:"load_cpu_us_per_msg"`
}

type lat struct {
	P50, P90, P99, P999, Max int64
}

func percentiles(h *hdr.Histogram) lat {
	return lat{h.ValueAtQuantile(50), h.ValueAtQuantile(90), h.ValueAtQuantile(99), h.ValueAtQuantile(99.9), h.Max()}
}

func (r *result) writeText(w io.Writer) {
	fmt.Fprintf(w, "peer %s, scenario %s, %d connections\n", r.Peer, r.Scenario, r.Connections)
	if r.ServerRSSPerConn != 0 {
		fmt.Fprintf(w, "server RSS %.1f MiB, %.0f B per connection\n", float64(r.ServerRSS)/(1<<20), r.ServerRSSPerConn)
	}
	if r.MessagesSent > 0 {
		fmt.Fprintf(w, "messages: %d sent, %d delivered; %.0f msg/s\n", r.MessagesSent, r.MessagesDelivered, r.MsgsPerSec)
		fmt.Fprintf(w, "latency µs: p50 %d p90 %d p99 %d p99.9 %d max %d (uncorrected p50 %d p99 %d; senders' own lateness, not charged: p50 %d p99 %d)\n",
			r.Latency.P50, r.Latency.P90, r.Latency.P99, r.Latency.P999, r.Latency.Max, r.LatencyRaw.P50, r.LatencyRaw.P99, r.SendLate.P50, r.SendLate.P99)
		fmt.Fprintf(w, "bytes per message: up %.1f wire / %.1f frames; down %.1f / %.1f\n", r.BytesPerMsgUp, r.FrameBytesUp, r.BytesPerMsgDown, r.FrameBytesDown)
		fmt.Fprintf(w, "server CPU %.1f µs per message; clients %.1f µs\n", r.ServerCPUPerMsgUS, r.LoadCPUPerMsgUS)
	}
}

func measure(ctx context.Context, cfg config, logw io.Writer) (*result, error) {
	srv, err := startPeer(cfg.peer, logw)
	if err != nil {
		return nil, err
	}
	defer srv.stop()
	h := &harness{cfg: cfg, srv: srv, lat: hdr.New(1, 600e6, 3), raw: hdr.New(1, 600e6, 3), late: hdr.New(1, 600e6, 3)}
	time.Sleep(time.Second)
	rss0 := srv.rss()
	n := cfg.conns + cfg.conns%2
	h.conns = make([]*pconn, n)
	for i := range h.conns {
		h.conns[i] = &pconn{h: h, idx: i, credit: make(chan struct{}, 1)}
	}
	for i, c := range h.conns {
		c.peer = h.conns[i^1]
	}
	sem := make(chan struct{}, 64)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for _, c := range h.conns {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := h.dial(ctx, c); err != nil {
				errs <- fmt.Errorf("connection %d: %w", c.idx, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		return nil, err
	}
	defer func() {
		for _, c := range h.conns {
			c.raw.Close()
		}
	}()
	for _, c := range h.conns {
		go func() {
			if cfg.peer == "mosquitto" {
				_ = c.mqttReadLoop()
			} else {
				_ = c.natsReadLoop()
			}
		}()
	}
	res := &result{Peer: cfg.peer, Scenario: cfg.scenario, Connections: n, TargetRate: cfg.rate}
	if cfg.scenario == "idle" {
		time.Sleep(cfg.settle)
		res.ServerRSS = srv.rss()
		res.ServerRSSPerConn = float64(res.ServerRSS-rss0) / float64(n)
		return res, nil
	}

	cpu0, self0 := srv.cpu(), selfCPU()
	up0, down0, fup0, fdown0 := h.wireUp.Load(), h.wireDown.Load(), h.frameUp.Load(), h.frameDown.Load()
	start := time.Now()
	end := start.Add(cfg.duration)
	h.to.Store(end.UnixNano())
	h.from.Store(start.Add(cfg.warmup).UnixNano())
	var interval time.Duration
	if cfg.rate > 0 {
		interval = time.Duration(float64(n) / float64(cfg.rate) * float64(time.Second))
	}
	var sw sync.WaitGroup
	for _, c := range h.conns {
		sw.Go(func() { h.sendLoop(ctx, c, end, interval) })
	}
	sw.Wait()
	for t := time.Now(); time.Since(t) < 10*time.Second && h.delivered.Load() < h.sent.Load(); {
		time.Sleep(10 * time.Millisecond)
	}
	cpu, self := srv.cpu()-cpu0, selfCPU()-self0
	res.ServerRSS = srv.rss()
	res.MessagesSent, res.MessagesDelivered = h.sent.Load(), h.delivered.Load()
	res.MsgsPerSec = float64(h.inRate.Load()) / (cfg.duration - cfg.warmup).Seconds()
	h.mu.Lock()
	res.Latency, res.LatencyRaw, res.SendLate = percentiles(h.lat), percentiles(h.raw), percentiles(h.late)
	h.mu.Unlock()
	if s, d := float64(res.MessagesSent), float64(res.MessagesDelivered); s > 0 && d > 0 {
		res.BytesPerMsgUp = float64(h.wireUp.Load()-up0) / s
		res.BytesPerMsgDown = float64(h.wireDown.Load()-down0) / d
		res.FrameBytesUp = float64(h.frameUp.Load()-fup0) / s
		res.FrameBytesDown = float64(h.frameDown.Load()-fdown0) / d
		res.ServerCPUPerMsgUS = float64(cpu.Microseconds()) / d
		res.LoadCPUPerMsgUS = float64(self.Microseconds()) / d
	}
	return res, nil
}

// sendLoop publishes from c to its peer until end: flat out within the
// in-flight window, or at interval, latency counting as parley-load's
// does (package pace): from the scheduled time of a publish the server
// held back (a full in-flight window), from the write of one it did not.
func (h *harness) sendLoop(ctx context.Context, c *pconn, end time.Time, interval time.Duration) {
	pace.Until(ctx, end, interval, &pacedConn{h: h, c: c, bodies: make([][]byte, 0, 128)})
}

// pacedConn is a connection as pace.Run drives it.
type pacedConn struct {
	h      *harness
	c      *pconn
	seq    uint32
	buf    []byte   // the bodies of one Send, end to end; the publishers copy them
	bodies [][]byte // slices of buf
}

// bodySize is a publish's body: when it was due and when it went out
// (unix nanos) and the connection's sequence number.
const bodySize = 8 + 8 + 4

// Send implements pace.Sender: the connection is held back while its
// in-flight window is full, and stops when a publish fails.
func (pc *pacedConn) Send(due *pace.Due) (<-chan struct{}, bool) {
	h, c := pc.h, pc.c
	free := h.cfg.inflight - int(c.inflight.Load())
	if free <= 0 {
		return c.credit, true
	}
	pc.buf = pc.buf[:0]
	for _, w := range due.Take(free) {
		pc.seq++
		pc.buf = binary.BigEndian.AppendUint64(pc.buf, uint64(w.From))
		pc.buf = binary.BigEndian.AppendUint64(pc.buf, uint64(w.At))
		pc.buf = binary.BigEndian.AppendUint32(pc.buf, pc.seq)
	}
	pc.bodies = pc.bodies[:0]
	for b := pc.buf; len(b) > 0; b = b[bodySize:] {
		pc.bodies = append(pc.bodies, b[:bodySize:bodySize])
	}
	k := len(pc.bodies)
	c.inflight.Add(int32(k))
	h.sent.Add(int64(k))
	var err error
	if h.cfg.peer == "mosquitto" {
		err = c.mqttPublish(pc.bodies)
	} else {
		err = c.natsPublish(pc.bodies)
	}
	return nil, err == nil
}

// Late implements pace.Sender.
func (pc *pacedConn) Late(scheduled, actual int64) { pc.h.recordLate(scheduled, actual) }

// recordLate records how late a publish scheduled at scheduled went out
// at actual (unix nanos) on the sender's own account, when scheduled
// falls in the measured window.
func (h *harness) recordLate(scheduled, actual int64) {
	if from := h.from.Load(); from == 0 || scheduled < from || scheduled > h.to.Load() {
		return
	}
	h.mu.Lock()
	_ = h.late.RecordValue(max(1, (actual-scheduled)/1e3))
	h.mu.Unlock()
}

// deliver records a message received on c.
func (h *harness) deliver(c *pconn, body []byte) {
	if len(body) < bodySize {
		return
	}
	now := time.Now().UnixNano()
	intended := int64(binary.BigEndian.Uint64(body))
	actual := int64(binary.BigEndian.Uint64(body[8:]))
	h.delivered.Add(1)
	if intended < h.from.Load() {
		return
	}
	if now <= h.to.Load() {
		h.inRate.Add(1)
	}
	h.mu.Lock()
	_ = h.lat.RecordValue(max(1, (now-intended)/1e3))
	_ = h.raw.RecordValue(max(1, (now-actual)/1e3))
	h.mu.Unlock()
}

// selfCPU returns this process's CPU time so far, user and system.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
