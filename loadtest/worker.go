package loadtest

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
)

// workerSpec is what the coordinator tells a worker, as the first line of
// its standard input.
type workerSpec struct {
	Config      Config `json:"config"`
	Index       int    `json:"index"`
	Source      string `json:"source"` // source IP address
	Lo, Hi      int    // account indices [Lo, Hi)
	Addr        string `json:"addr"`
	Fingerprint string `json:"fingerprint"`
	// Nodes are a cluster's nodes: device i connects to Nodes[i mod
	// len(Nodes)]. Empty: every device connects to Addr.
	Nodes []Endpoint `json:"nodes,omitempty"`
	RunID string     `json:"run_id"` // digits that make this run's phone numbers unique
}

// Endpoint is a node's client address and certificate fingerprint.
type Endpoint struct {
	// Addr is the node's client address, host:port.
	Addr string `json:"addr"`
	// Fingerprint is the hex SHA-256 of the node's certificate.
	Fingerprint string `json:"fingerprint"`
}

// nodeOf returns the node device (account) index connects to: round
// robin over the cluster's nodes, or the one node.
func (s *workerSpec) nodeOf(index int) Endpoint {
	if len(s.Nodes) == 0 {
		return Endpoint{Addr: s.Addr, Fingerprint: s.Fingerprint}
	}
	return s.Nodes[index%len(s.Nodes)]
}

// addrOf returns the address of nodeOf(index).
func (s *workerSpec) addrOf(index int) string { return s.nodeOf(index).Addr }

// event is a line a worker writes to its standard output.
type event struct {
	Type     string   `json:"type"` // "step", "stats", "result" or "error"
	Step     int      `json:"step,omitempty"`
	Counters Counters `json:"counters"`
	// Interval holds the latencies recorded since the previous stats
	// event (HdrHistogram V2, base64), on stats events.
	Interval []byte `json:"interval,omitempty"`
	// Latency, Uncorrected, SendLate and Connect are the run's
	// histograms, on the result event.
	Latency     []byte `json:"latency,omitempty"`
	Uncorrected []byte `json:"uncorrected,omitempty"`
	SendLate    []byte `json:"send_late,omitempty"`
	Connect     []byte `json:"connect,omitempty"`
	// InRate counts deliveries inside the measured window.
	InRate int64  `json:"in_rate,omitempty"`
	Error  string `json:"error,omitempty"`
	// Share is a step's Step.Share values, on step events.
	Share []uint64 `json:"share,omitempty"`
	// Fanout holds a groups run's partial fan-outs (scenario_groups.go),
	// on stats and result events; FanoutLocal the fan-out latencies this
	// worker completed alone and Order its groups' order, on the result.
	Fanout      []fanoutPart `json:"fanout,omitempty"`
	FanoutLocal []byte       `json:"fanout_local,omitempty"`
	Order       []orderEntry `json:"order,omitempty"`
	// MediaUp and MediaDown are a media run's transfer latencies, on the
	// result.
	MediaUp   []byte `json:"media_up,omitempty"`
	MediaDown []byte `json:"media_down,omitempty"`
	// Chaos is a chaos run's check, on the result.
	Chaos *ChaosResult `json:"chaos,omitempty"`
}

// goLine is a line from the coordinator that lets a worker go on with the
// next step: "go", or this object when the step shared values.
type goLine struct {
	Share []uint64 `json:"share"`
}

// Counters are a worker's (or, summed, a run's) counts.
type Counters struct {
	Connected   int64 `json:"connected"`
	Logins      int64 `json:"logins"`
	Reconnects  int64 `json:"reconnects"`
	Drops       int64 `json:"drops"`
	DialErrors  int64 `json:"dial_errors"`
	GoAways     int64 `json:"go_aways"`
	ErrorFrames int64 `json:"error_frames"`
	Sent        int64 `json:"sent"`
	Resent      int64 `json:"resent"`
	Acked       int64 `json:"acked"`
	Delivered   int64 `json:"delivered"`
	Receipts    int64 `json:"receipts"`
	Foreign     int64 `json:"foreign"`
	Lost        int64 `json:"lost"`
	// Unanswered counts sends the server never answered (no Sent) by the
	// end of the drain: not lost (never acknowledged), but a sender's
	// window held.
	Unanswered int64 `json:"unanswered,omitempty"`
	Duplicated int64 `json:"duplicated"`
	Reordered  int64 `json:"reordered"`
	Gaps       int64 `json:"gaps"`
	// OrderMismatch counts group deliveries whose gseq held another
	// message for another member of the group.
	OrderMismatch int64 `json:"order_mismatch"`
	// KeySends and KeyDeliveries count a group-envelopes run's sender key
	// distribution (1:1 envelope sends, and their first deliveries to a
	// device), apart from Sent and Delivered.
	KeySends      int64 `json:"key_sends,omitempty"`
	KeyDeliveries int64 `json:"key_deliveries,omitempty"`
	// Bytes on the wire (TLS records included) and in frames (before
	// TLS), up (client to server) and down.
	BytesUp        int64 `json:"bytes_up"`
	BytesDown      int64 `json:"bytes_down"`
	FrameBytesUp   int64 `json:"frame_bytes_up"`
	FrameBytesDown int64 `json:"frame_bytes_down"`
	// CPUMicros is the worker processes' own CPU time (user + system,
	// getrusage): what the load generator spends on the shared cores.
	CPUMicros int64 `json:"cpu_us"`
	// Media transfers (media): files up and down, their bytes, files
	// whose bytes differed from the upload, answers waited out.
	MediaUploads   int64 `json:"media_uploads,omitempty"`
	MediaDownloads int64 `json:"media_downloads,omitempty"`
	MediaBytesUp   int64 `json:"media_bytes_up,omitempty"`
	MediaBytesDown int64 `json:"media_bytes_down,omitempty"`
	MediaCorrupt   int64 `json:"media_corrupt,omitempty"`
	MediaRetries   int64 `json:"media_retries,omitempty"`
	// TLS handshakes of the message sessions: how many, how many resumed
	// a session, and the bytes that crossed the socket while they ran.
	Handshakes         int64 `json:"handshakes"`
	Resumed            int64 `json:"handshakes_resumed"`
	HandshakeBytesUp   int64 `json:"handshake_bytes_up"`
	HandshakeBytesDown int64 `json:"handshake_bytes_down"`
	// Errors counts the Error frames the clients got, by code name
	// (RATE_LIMITED, OVERLOADED …): what the server refused and why.
	Errors map[string]int64 `json:"errors,omitempty"`
	// Attack counts an abuse run's attack (scenario_abuse.go) by request
	// kind and outcome: "SEND sent", "SEND SENT", "SEND RATE_LIMITED",
	// "REQUEST_CODE CODE_SENT", "LINK_REQUEST unanswered" ….
	Attack map[string]int64 `json:"attack,omitempty"`
}

// addCounts adds the counts of src to *dst, allocating it if need be.
func addCounts(dst *map[string]int64, src map[string]int64) {
	for k, v := range src {
		if *dst == nil {
			*dst = make(map[string]int64, len(src))
		}
		(*dst)[k] += v
	}
}

func (c *Counters) add(o Counters) {
	c.Connected += o.Connected
	c.Logins += o.Logins
	c.Reconnects += o.Reconnects
	c.Drops += o.Drops
	c.DialErrors += o.DialErrors
	c.GoAways += o.GoAways
	c.ErrorFrames += o.ErrorFrames
	c.Sent += o.Sent
	c.Resent += o.Resent
	c.Acked += o.Acked
	c.Delivered += o.Delivered
	c.Receipts += o.Receipts
	c.Foreign += o.Foreign
	c.Lost += o.Lost
	c.Unanswered += o.Unanswered
	c.Duplicated += o.Duplicated
	c.Reordered += o.Reordered
	c.Gaps += o.Gaps
	c.OrderMismatch += o.OrderMismatch
	c.KeySends += o.KeySends
	c.KeyDeliveries += o.KeyDeliveries
	c.BytesUp += o.BytesUp
	c.BytesDown += o.BytesDown
	c.FrameBytesUp += o.FrameBytesUp
	c.FrameBytesDown += o.FrameBytesDown
	c.CPUMicros += o.CPUMicros
	c.MediaUploads += o.MediaUploads
	c.MediaDownloads += o.MediaDownloads
	c.MediaBytesUp += o.MediaBytesUp
	c.MediaBytesDown += o.MediaBytesDown
	c.MediaCorrupt += o.MediaCorrupt
	c.MediaRetries += o.MediaRetries
	addCounts(&c.Errors, o.Errors)
	addCounts(&c.Attack, o.Attack)
	c.Handshakes += o.Handshakes
	c.Resumed += o.Resumed
	c.HandshakeBytesUp += o.HandshakeBytesUp
	c.HandshakeBytesDown += o.HandshakeBytesDown
}

// workerStats are a worker's live counters.
type workerStats struct {
	connected, logins, reconnects, drops, dialErrors, goAways, errorFrames atomic.Int64
	sent, resent, acked, delivered, receipts, foreign                      atomic.Int64
	lost, duplicated, reordered, gaps, orderMismatch                       atomic.Int64
	keySends, keyDeliveries                                                atomic.Int64
	bytesUp, bytesDown, frameBytesUp, frameBytesDown                       atomic.Int64
	mediaUploads, mediaDownloads, mediaBytesUp, mediaBytesDown             atomic.Int64
	mediaCorrupt, mediaRetries                                             atomic.Int64
	handshakes, resumed, handshakeBytesUp, handshakeBytesDown              atomic.Int64
	// errorCodes counts Error frames by code, below maxCountedCode.
	errorCodes [maxCountedCode]atomic.Int64

	attackMu sync.Mutex
	attack   map[string]int64 // guarded by attackMu
}

// codeName returns code's name in spec.md's table (RATE_LIMITED), or its
// number for a code the table lacks.
func codeName(code protocol.Code) string {
	if info, ok := protocol.LookupCode(code); ok {
		return info.Name
	}
	return fmt.Sprintf("code %d", int32(code))
}

// maxCountedCode bounds the error codes workerStats counts one by one;
// higher ones count under code 0.
const maxCountedCode = 128

// countAttack counts one outcome of an attack request.
func (s *workerStats) countAttack(kind, outcome string) {
	s.attackMu.Lock()
	if s.attack == nil {
		s.attack = map[string]int64{}
	}
	s.attack[kind+" "+outcome]++
	s.attackMu.Unlock()
}

func (s *workerStats) snapshot() Counters {
	c := Counters{
		Connected: s.connected.Load(), Logins: s.logins.Load(), Reconnects: s.reconnects.Load(),
		Drops: s.drops.Load(), DialErrors: s.dialErrors.Load(), GoAways: s.goAways.Load(), ErrorFrames: s.errorFrames.Load(),
		Sent: s.sent.Load(), Resent: s.resent.Load(), Acked: s.acked.Load(), Delivered: s.delivered.Load(),
		Receipts: s.receipts.Load(), Foreign: s.foreign.Load(),
		Lost: s.lost.Load(), Duplicated: s.duplicated.Load(), Reordered: s.reordered.Load(), Gaps: s.gaps.Load(), OrderMismatch: s.orderMismatch.Load(),
		KeySends: s.keySends.Load(), KeyDeliveries: s.keyDeliveries.Load(),
		BytesUp: s.bytesUp.Load(), BytesDown: s.bytesDown.Load(), FrameBytesUp: s.frameBytesUp.Load(), FrameBytesDown: s.frameBytesDown.Load(),
		CPUMicros:    selfCPU().Microseconds(),
		MediaUploads: s.mediaUploads.Load(), MediaDownloads: s.mediaDownloads.Load(),
		MediaBytesUp: s.mediaBytesUp.Load(), MediaBytesDown: s.mediaBytesDown.Load(),
		MediaCorrupt: s.mediaCorrupt.Load(), MediaRetries: s.mediaRetries.Load(),
		Handshakes: s.handshakes.Load(), Resumed: s.resumed.Load(),
		HandshakeBytesUp: s.handshakeBytesUp.Load(), HandshakeBytesDown: s.handshakeBytesDown.Load(),
	}
	for code := range s.errorCodes {
		if n := s.errorCodes[code].Load(); n > 0 {
			addCounts(&c.Errors, map[string]int64{codeName(protocol.Code(code)): n})
		}
	}
	s.attackMu.Lock()
	addCounts(&c.Attack, s.attack)
	s.attackMu.Unlock()
	return c
}

// selfCPU returns this process's CPU time so far, user and system.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Worker is one worker process's share of a run: its devices and their
// connections. Scenario steps act on it.
type Worker struct {
	spec      workerSpec
	ctx       context.Context
	log       *slog.Logger
	dialer    *net.Dialer
	tlsConfig *tls.Config
	dec       *codec.Decompressor
	devices   []*device
	stats     workerStats

	latency      *latencyRecorder
	connectTimes durationRecorder
	anomalies    atomic.Int64 // anomalies logged so far (the log is capped)
	heartbeat    atomic.Int64 // LoginOk.heartbeat_s, once a login has told it
	pingerOnce   sync.Once
	// shared is the vector of the last step that shared values
	// (Step.Share), indexed by account; set between steps.
	shared []uint64
	groups groupWorker // a groups run's state (scenario_groups.go)
	media  mediaStats  // a media run's latencies (scenario_media.go)
	chaos  *chaosRun   // a chaos run's state (scenario_chaos.go); nil otherwise

	outMu sync.Mutex
	out   *json.Encoder // guarded by outMu
}

// runWorker is a worker process: it reads its spec from in, runs the
// scenario's steps in lock step with the coordinator, and reports on out.
func runWorker(ctx context.Context, in io.Reader, out io.Writer, logw io.Writer) error {
	r := bufio.NewReader(in)
	line, err := r.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("loadtest worker: read spec: %w", err)
	}
	var spec workerSpec
	if err := json.Unmarshal(line, &spec); err != nil {
		return fmt.Errorf("loadtest worker: spec: %w", err)
	}
	cfg := &spec.Config
	cfg.setDefaults()
	sc, ok := scenarioByName(cfg.Scenario)
	if !ok {
		return fmt.Errorf("loadtest worker: unknown scenario %q", cfg.Scenario)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The coordinator's "go" lines; EOF (the coordinator is gone) stops
	// the worker.
	goes := make(chan []uint64)
	go func() {
		defer cancel()
		for {
			line, err := r.ReadBytes('\n')
			if err != nil {
				return
			}
			var gl goLine
			if len(line) > 0 && line[0] == '{' {
				if err := json.Unmarshal(line, &gl); err != nil {
					return
				}
			}
			select {
			case goes <- gl.Share:
			case <-ctx.Done():
				return
			}
		}
	}()

	w, err := newWorker(ctx, spec, out, logw)
	if err != nil {
		return err
	}
	if dir := cfg.ProfileDir; dir != "" {
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("worker-%d.pprof", spec.Index)))
		if err != nil {
			return fmt.Errorf("loadtest worker: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("loadtest worker: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	defer w.dec.Close()
	stop := w.startStats()
	defer stop()
	defer w.closeAll()

	steps := sc.Steps(cfg)
	for i, st := range steps {
		if st.Worker != nil {
			if err := st.Worker(ctx, w); err != nil {
				w.emit(event{Type: "error", Error: fmt.Sprintf("step %s: %v", st.Name, err)})
				return err
			}
		}
		ev := event{Type: "step", Step: i, Counters: w.stats.snapshot()}
		if st.Share != nil {
			ev.Share = st.Share(w)
		}
		w.emit(ev)
		select {
		case sh := <-goes:
			if sh != nil {
				w.shared = sh
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	w.finish()
	return nil
}

func newWorker(ctx context.Context, spec workerSpec, out, logw io.Writer) (*Worker, error) {
	// A device pins the certificate of the node it dials; in a cluster
	// that is one of the nodes' (the addresses are the run's own, on
	// loopback).
	want := map[string]bool{}
	for _, fp := range append([]string{spec.Fingerprint}, fingerprints(spec.Nodes)...) {
		b, err := hex.DecodeString(strings.ReplaceAll(fp, ":", ""))
		if err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("loadtest worker: bad fingerprint %q", fp)
		}
		want[string(b)] = true
	}
	dec, err := codec.NewDecompressor(protocol.MaxFrameBody)
	if err != nil {
		return nil, err
	}
	w := &Worker{
		spec: spec,
		ctx:  ctx,
		log:  slog.New(slog.NewTextHandler(logw, &slog.HandlerOptions{Level: slog.LevelWarn})).With("worker", spec.Index),
		dialer: &net.Dialer{
			LocalAddr: &net.TCPAddr{IP: net.ParseIP(spec.Source)},
			Timeout:   15 * time.Second,
		},
		tlsConfig: &tls.Config{
			MinVersion:             tls.VersionTLS13,
			SessionTicketsDisabled: true,
			InsecureSkipVerify:     true, // replaced by the pin below ([S-5-4])
			VerifyConnection: func(cs tls.ConnectionState) error {
				sum := sha256.Sum256(cs.PeerCertificates[0].Raw)
				if !want[string(sum[:])] {
					return errors.New("loadtest: server certificate does not match the fingerprint")
				}
				return nil
			},
		},
		dec:     dec,
		latency: newLatencyRecorder(),
		out:     json.NewEncoder(out),
	}
	if spec.Config.Scenario == chaosScenario.Name {
		w.chaos = newChaosRun(w)
		return w, nil
	}
	for i := spec.Lo; i < spec.Hi; i++ {
		w.devices = append(w.devices, newDevice(w, i))
	}
	return w, nil
}

// fingerprints returns the endpoints' fingerprints.
func fingerprints(eps []Endpoint) []string {
	out := make([]string, len(eps))
	for i, e := range eps {
		out[i] = e.Fingerprint
	}
	return out
}

// emit writes one event line.
func (w *Worker) emit(e event) {
	w.outMu.Lock()
	defer w.outMu.Unlock()
	_ = w.out.Encode(e)
}

// startStats emits a stats event every second until stop is called.
func (w *Worker) startStats() (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				w.emit(event{Type: "stats", Counters: w.stats.snapshot(), Interval: encodeHist(w.latency.takeInterval()), Fanout: w.groups.takeParts()})
			case <-done:
				return
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// finish counts what was lost and emits the result.
func (w *Worker) finish() {
	var lost, unanswered int64
	for _, d := range w.devices {
		if d.out != nil {
			lost += int64(d.out.Lost())
		}
		d.mu.Lock()
		unanswered += int64(len(d.unacked))
		d.mu.Unlock()
		for _, f := range d.fanout {
			lost += int64(f.Lost())
		}
	}
	w.stats.lost.Store(lost)
	w.groups.finish(w)
	corrected, raw, late := w.latency.totals()
	ev := event{
		Type: "result", Counters: w.stats.snapshot(),
		Latency: encodeHist(corrected), Uncorrected: encodeHist(raw), SendLate: encodeHist(late),
		Connect: encodeHist(w.connectTimes.snapshot()),
		InRate:  w.latency.inRate.Load(),
	}
	ev.Counters.Unanswered = unanswered
	w.groups.result(&ev)
	if w.chaos != nil {
		ev.Chaos = w.chaos.result()
		ev.Counters.Lost, ev.Counters.Duplicated = int64(ev.Chaos.Lost), int64(ev.Chaos.Duplicated)
		ev.Counters.Reordered, ev.Counters.Gaps = int64(ev.Chaos.Reordered), int64(ev.Chaos.Skipped)
		ev.Counters.OrderMismatch = int64(ev.Chaos.OrderMismatch)
	}
	if w.spec.Config.Scenario == mediaScenario.Name {
		ev.MediaUp, ev.MediaDown = encodeHist(w.media.up.snapshot()), encodeHist(w.media.down.snapshot())
	}
	w.emit(ev)
}

// receive records the delivery of cmid from d's peer to d.
func (w *Worker) receive(d *device, flow *direction, cmid uint64) {
	switch flow.Receive(cmid) {
	case deliveredOK:
		w.stats.delivered.Add(1)
	case deliveredTwice:
		w.stats.duplicated.Add(1)
		w.logAnomaly("message delivered twice", d, cmid, 0)
	case deliveredOutOfOrder:
		w.stats.delivered.Add(1)
		w.stats.reordered.Add(1)
		w.logAnomaly("message out of order", d, cmid, 0)
	}
}

// countError counts an Error frame.
func (w *Worker) countError(code protocol.Code) {
	w.stats.errorFrames.Add(1)
	if code >= maxCountedCode {
		code = 0
	}
	w.stats.errorCodes[code].Add(1)
	if w.anomalies.Add(1) <= 20 {
		w.log.Warn("error frame", "code", code)
	}
}

// logAnomaly logs the first anomalies a worker sees.
func (w *Worker) logAnomaly(what string, d *device, a, b uint64) {
	if w.anomalies.Add(1) <= 20 {
		w.log.Warn(what, "device", d.index, "user", d.user, "a", a, "b", b)
	}
}

// forEach runs fn for every device that match selects (nil: all), at
// most parallel at once, and returns the first error.
func (w *Worker) forEach(ctx context.Context, parallel int, match func(*device) bool, fn func(context.Context, *device) error) error {
	devs := w.devices
	if match != nil {
		devs = slices.DeleteFunc(slices.Clone(devs), func(d *device) bool { return !match(d) })
	}
	return forEachParallel(ctx, devs, parallel, fn)
}

// forEachParallel runs fn for every item, at most parallel at once, and
// returns the first error; the first error cancels the others' ctx.
func forEachParallel[T any](ctx context.Context, items []T, parallel int, fn func(context.Context, T) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for _, it := range items {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := fn(ctx, it); err != nil {
				cancel(err)
			}
		})
	}
	wg.Wait()
	return context.Cause(ctx)
}

// connectAll connects the devices match selects (nil: all), retrying
// refused logins, and marks them to reconnect after a drop.
func (w *Worker) connectAll(ctx context.Context, match func(*device) bool) error {
	return w.forEach(ctx, 64, match, func(ctx context.Context, d *device) error { return d.connectRetry(ctx) })
}

// closeAll closes every connection on purpose.
func (w *Worker) closeAll() {
	if w.chaos != nil {
		w.chaos.closeAll()
	}
	for _, d := range w.devices {
		d.keep.Store(false)
	}
	_ = w.forEach(context.Background(), 256, nil, func(_ context.Context, d *device) error {
		d.disconnect(false)
		return nil
	})
}

// startPinger starts the pinger once the first login has told the
// heartbeat interval.
func (w *Worker) startPinger() {
	w.pingerOnce.Do(func() {
		go func() {
			for w.heartbeat.Load() == 0 {
				if sleepCtx(w.ctx, 100*time.Millisecond) != nil {
					return
				}
			}
			w.pinger(w.ctx, time.Duration(w.heartbeat.Load())*time.Second)
		}()
	})
}

// pinger sends Ping on connections that have been quiet for half the
// heartbeat, until ctx ends ([S-6-8]).
func (w *Worker) pinger(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every / 4)
	defer t.Stop()
	ping := codec.AppendFrame(nil, protocol.KindPing, nil)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		quiet := time.Now().Add(-every / 2).UnixNano()
		for _, d := range w.devices {
			if s := d.session(); s != nil && s.lastWrite.Load() < quiet {
				_ = s.write(ping)
			}
		}
	}
}

// portHint suggests widening the ephemeral port range when dialing ran
// out of local ports.
func portHint(err error) string {
	if err != nil && strings.Contains(err.Error(), "cannot assign requested address") {
		return ` (out of local ports: spread over more workers, or sysctl -w net.ipv4.ip_local_port_range="1024 65535")`
	}
	return ""
}

// jitter returns a random duration in [d/2, d).
func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d/2+1)
}

// sortedKeys returns m's keys in increasing order.
func sortedKeys[V any](m map[uint64]V) []uint64 {
	keys := make([]uint64, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// RunChild runs this process as a child of a run when the environment
// says so: a worker or a spawned node. It reports whether it did; a main
// calls it first and exits with the returned code when it did.
func RunChild() (ran bool, code int) {
	var err error
	switch os.Getenv(childEnv) {
	case "":
		return false, 0
	case childWorker:
		err = runWorker(context.Background(), os.Stdin, os.Stdout, os.Stderr)
	case childNode:
		err = runNode(os.Stdin, os.Stdout, os.Stderr)
	default:
		err = fmt.Errorf("loadtest: unknown child role %q", os.Getenv(childEnv))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "parley-load child:", err)
		return true, 1
	}
	return true, 0
}

// The environment variable that makes a process a child of a run.
const (
	childEnv    = "PARLEY_LOAD_CHILD"
	childWorker = "worker"
	childNode   = "node"
)
