package loadtest

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/parley-im/parley/internal/clock"
)

// stormScenario cuts every connection at once while pairs are messaging
// and reconnects them all at once; the figure is the time until every
// device is logged in and synced again, and nothing may be lost. The
// storm step's own figures (reconnects per second, its handshakes and
// how many resumed, the server's CPU per reconnect) are in Result.Storm.
var stormScenario = Scenario{
	Name:    "storm",
	Summary: "every client drops and reconnects at once during traffic; time until all resumed",
	Steps: func(cfg *Config) []Step {
		var traffic trafficRun
		var marks stormMarks
		return []Step{
			stepRegister(true),
			stepConnect("connect", nil, 0),
			{
				Name: "traffic",
				Worker: func(ctx context.Context, w *Worker) error {
					cfg := &w.spec.Config
					traffic.start(ctx, w, planTraffic(cfg, cfg.Connections, cfg.Duration), cfg.Warmup)
					return sleepCtx(ctx, cfg.Duration/3)
				},
				MeasureFrom: true,
				After: func(ctx context.Context, c *coordinator) error {
					marks.traffic = stormMark{at: c.fromAt, srv: c.fromSrv} // read as the step began
					marks.read(ctx, c, stormTrafficStep, &marks.from)
					return nil
				},
			},
			{
				Name: "storm",
				Worker: func(ctx context.Context, w *Worker) error {
					for _, d := range w.devices {
						d.keep.Store(false)
					}
					for _, d := range w.devices {
						if s := d.session(); s != nil {
							s.close(true)
						}
					}
					return w.forEach(ctx, len(w.devices), nil, func(ctx context.Context, d *device) error {
						d.disconnect(true) // wait for the reader to see it
						return d.connectRetry(ctx)
					})
				},
				Timed: true,
				After: func(ctx context.Context, c *coordinator) error {
					marks.read(ctx, c, stormStep, &marks.to)
					c.res.Storm = marks.result(c.res.Steps[stormStep].Seconds, c.cfg)
					return nil
				},
			},
			{
				Name:   "traffic after",
				Worker: func(ctx context.Context, w *Worker) error { traffic.wait(); return nil },
			},
			stepDrain(),
			stepClose(),
		}
	},
}

// The indexes of the storm scenario's traffic and storm steps.
const stormTrafficStep, stormStep = 2, 3

// StormResult is what the storm step of a storm run measured, from the
// coordinator's go to the last device logged in and synced again. The
// server's figures come from its admin endpoint (zero without one) and
// include the background traffic, whose rate before the storm is
// ServerCPUBeforePerSec.
type StormResult struct {
	// Reconnects is the devices that dropped and reconnected; Seconds the
	// step's wall time; PerSec their quotient.
	Reconnects int     `json:"reconnects"`
	Seconds    float64 `json:"seconds"`
	PerSec     float64 `json:"reconnects_per_sec"`
	// Resume is Config.Resume: whether the devices offered their tickets.
	Resume bool `json:"resume"`
	// Handshakes and Resumed count the clients' completed TLS handshakes
	// during the step (more than Reconnects when a login failed after its
	// handshake and was retried); DialErrors the dials and handshakes that
	// failed and were retried.
	Handshakes int64 `json:"handshakes"`
	Resumed    int64 `json:"resumed"`
	DialErrors int64 `json:"dial_errors"`
	// HandshakeBytesUp and HandshakeBytesDown are per handshake, on the
	// client's socket until its handshake returned.
	HandshakeBytesUp   float64 `json:"handshake_bytes_up"`
	HandshakeBytesDown float64 `json:"handshake_bytes_down"`
	// ServerCPUSeconds is the server process's CPU over the step;
	// ServerCPUPerReconnectUS that over Reconnects. ServerCPUBeforePerSec
	// is the server's CPU per second of wall time over the traffic step
	// before the storm (the background traffic alone), ServerCPUPerSec the
	// same over the storm: the storm's own share is their difference.
	ServerCPUSeconds        float64 `json:"server_cpu_s"`
	ServerCPUPerReconnectUS float64 `json:"server_cpu_us_per_reconnect"`
	ServerCPUBeforePerSec   float64 `json:"server_cpu_s_per_s_before"`
	ServerCPUPerSec         float64 `json:"server_cpu_s_per_s"`
	// ServerHandshakes and ServerHandshakeFailures are the server's count
	// of TLS handshakes completed and failed or timed out over the step.
	ServerHandshakes        int64 `json:"server_handshakes"`
	ServerHandshakeFailures int64 `json:"server_handshake_failures"`
	// LoadCPUSeconds is the worker processes' CPU over the step.
	LoadCPUSeconds float64 `json:"load_cpu_s"`
	// Load1 is the machine's one-minute load average at the end of the
	// step (/proc/loadavg; 0 where there is none).
	Load1 float64 `json:"load1"`
}

// stormMarks are the readings a storm's figures subtract: at the start
// and the end of the traffic step before the storm, and at the end of
// the storm.
type stormMarks struct{ traffic, from, to stormMark }

type stormMark struct {
	at    time.Time
	count Counters
	srv   map[string]float64 // nil without an admin endpoint
}

// read reads the workers' counters at the end of step and the server's
// metrics into m. It runs in the coordinator's walk (a step's After).
func (s *stormMarks) read(ctx context.Context, c *coordinator, step int, m *stormMark) {
	m.at, m.count = time.Now(), c.sum(step)
	if c.admin != nil {
		m.srv, _ = c.admin.metrics(ctx)
	}
}

// result figures the storm step, which took seconds.
func (s *stormMarks) result(seconds float64, cfg *Config) *StormResult {
	from, to := s.from.count, s.to.count
	r := &StormResult{
		Reconnects: cfg.Connections + cfg.Connections%2, Seconds: seconds, Resume: cfg.Resume,
		Handshakes: to.Handshakes - from.Handshakes, Resumed: to.Resumed - from.Resumed,
		DialErrors:     to.DialErrors - from.DialErrors,
		LoadCPUSeconds: float64(to.CPUMicros-from.CPUMicros) / 1e6,
		Load1:          loadAverage(),
	}
	if seconds > 0 {
		r.PerSec = float64(r.Reconnects) / seconds
	}
	if r.Handshakes > 0 {
		r.HandshakeBytesUp = float64(to.HandshakeBytesUp-from.HandshakeBytesUp) / float64(r.Handshakes)
		r.HandshakeBytesDown = float64(to.HandshakeBytesDown-from.HandshakeBytesDown) / float64(r.Handshakes)
	}
	if s.from.srv == nil || s.to.srv == nil {
		return r
	}
	d := func(name string) float64 { return s.to.srv[name] - s.from.srv[name] }
	r.ServerCPUSeconds = d("process_cpu_seconds_total")
	r.ServerCPUPerReconnectUS = r.ServerCPUSeconds / float64(r.Reconnects) * 1e6
	if el := s.to.at.Sub(s.from.at).Seconds(); el > 0 {
		r.ServerCPUPerSec = r.ServerCPUSeconds / el
	}
	if s.traffic.srv != nil {
		if el := s.from.at.Sub(s.traffic.at).Seconds(); el > 0 {
			r.ServerCPUBeforePerSec = (s.from.srv["process_cpu_seconds_total"] - s.traffic.srv["process_cpu_seconds_total"]) / el
		}
	}
	r.ServerHandshakes = int64(d("parley_tls_handshakes_total"))
	r.ServerHandshakeFailures = int64(d("parley_tls_handshake_failures_total"))
	return r
}

// writeText writes a storm run's part of the report.
func (r *StormResult) writeText(w io.Writer) {
	mode := "full handshakes"
	if r.Resume {
		mode = "resumption on"
	}
	fmt.Fprintf(w, "storm (%s): %d reconnects in %.2f s, %.0f/s; %d handshakes, %d resumed, %d dial errors; %.0f B up, %.0f B down per handshake\n",
		mode, r.Reconnects, r.Seconds, r.PerSec, r.Handshakes, r.Resumed, r.DialErrors, r.HandshakeBytesUp, r.HandshakeBytesDown)
	if r.ServerCPUSeconds > 0 {
		fmt.Fprintf(w, "  server: %.2f s CPU, %.0f µs per reconnect (%.2f cores during the storm, %.2f before it); %d handshakes, %d failed; load generator %.2f s; load average %.2f\n",
			r.ServerCPUSeconds, r.ServerCPUPerReconnectUS, r.ServerCPUPerSec, r.ServerCPUBeforePerSec,
			r.ServerHandshakes, r.ServerHandshakeFailures, r.LoadCPUSeconds, r.Load1)
	}
}

// loadAverage returns the machine's one-minute load average, or 0 where
// /proc/loadavg cannot be read.
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f, _, _ := strings.Cut(string(b), " ")
	v, _ := strconv.ParseFloat(f, 64)
	return v
}

// trafficRun is traffic running in the background across steps.
type trafficRun struct{ done chan struct{} }

func (t *trafficRun) start(ctx context.Context, w *Worker, p trafficPlan, warmup time.Duration) {
	t.done = make(chan struct{})
	go func() {
		defer close(t.done)
		w.traffic(ctx, p, warmup)
	}()
}

func (t *trafficRun) wait() {
	if t.done != nil {
		<-t.done
	}
}

// sleepCtx waits d or until ctx ends (then its error), on the system clock.
func sleepCtx(ctx context.Context, d time.Duration) error {
	return clock.Sleep(ctx, clock.System{}, d)
}
