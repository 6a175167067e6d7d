package loadtest

import (
	"context"
	"time"
)

// stormScenario cuts every connection at once while pairs are messaging
// and reconnects them all at once; the figure is the time until every
// device is logged in and synced again, and nothing may be lost.
var stormScenario = Scenario{
	Name:    "storm",
	Summary: "every client drops and reconnects at once during traffic; time until all resumed",
	Steps: func(cfg *Config) []Step {
		var traffic trafficRun
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

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
