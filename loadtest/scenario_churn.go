package loadtest

import (
	"context"
	"sync"
)

// churnScenario messages between pairs while connections drop and come
// back all the time, like phones on bad networks.
var churnScenario = Scenario{
	Name:    "churn",
	Summary: "pairs message while connections drop and reconnect continuously (--churn-life)",
	Steps: func(cfg *Config) []Step {
		return []Step{
			stepRegister(true),
			stepConnect("connect", nil, 0),
			{
				Name: "traffic with churn",
				Worker: func(ctx context.Context, w *Worker) error {
					cfg := &w.spec.Config
					p := planTraffic(cfg, cfg.Connections, cfg.Duration)
					var traffic trafficRun
					traffic.start(ctx, w, p, cfg.Warmup)
					var wg sync.WaitGroup
					errs := make(chan error, len(w.devices))
					for _, d := range w.devices {
						wg.Go(func() { errs <- d.churn(ctx, p.end) })
					}
					wg.Wait()
					traffic.wait()
					close(errs)
					for err := range errs {
						if err != nil {
							return err
						}
					}
					return nil
				},
				Timed:       true,
				MeasureFrom: true,
			},
			{
				Name:   "reconnect all",
				Worker: func(ctx context.Context, w *Worker) error { return w.ensureConnected(ctx) },
			},
			stepDrain(),
			stepClose(),
		}
	},
}
