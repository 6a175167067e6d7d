package loadtest

import (
	"context"
	"time"
)

// idleScenario holds authenticated connections that send nothing and
// reports the server's memory per connection (DESIGN.md's first budget).
var idleScenario = Scenario{
	Name:    "idle",
	Summary: "hold N authenticated idle TLS connections; server memory per connection",
	Steps: func(cfg *Config) []Step {
		return []Step{
			stepRegister(false),
			stepConnect("connect", nil, cfg.IdleSettle),
			{
				Name: "hold",
				Worker: func(ctx context.Context, w *Worker) error {
					select {
					case <-time.After(w.spec.Config.Hold):
					case <-ctx.Done():
					}
					return nil
				},
			},
			stepClose(),
		}
	},
}
