package loadtest

import (
	"context"
)

// pairsScenario is 1:1 traffic between connected pairs, both ways, at a
// fixed total rate (latency corrected for coordinated omission) or flat
// out (each device keeps InFlight sends unanswered).
var pairsScenario = Scenario{
	Name:    "pairs",
	Summary: "1:1 messages between connected pairs, at --rate or flat out; latency and throughput",
	Steps: func(cfg *Config) []Step {
		return []Step{
			stepRegister(true),
			stepConnect("connect", nil, 0),
			{
				Name: "traffic",
				Worker: func(ctx context.Context, w *Worker) error {
					cfg := &w.spec.Config
					w.traffic(ctx, planTraffic(cfg, cfg.Connections, cfg.Duration), cfg.Warmup)
					return nil
				},
				Timed:       true,
				MeasureFrom: true,
			},
			stepDrain(),
			stepClose(),
		}
	},
}
